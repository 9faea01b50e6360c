"""The service's Prometheus metrics (prometheus-client), one place for all of them.

They count this process: an embedded server or an API node serves them at ``/metrics``
(permission ``operate``), a scale-out worker on its own port (``--metrics-port``). The
process collector's ``process_*`` figures (CPU, memory, file descriptors) come with them.
What each means, and what to alert on: docs/operations.md#metrics.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

# Seconds, from a millisecond to the reply timeout.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# -- ingest (API side) -------------------------------------------------------------------
EVENTS = Counter("cc_events_received", "Events received, by type ('invalid': unreadable)",
                 ["type"])
REPLIES = Counter("cc_replies", "Replies sent to connectors, by status and error code",
                  ["status", "code"])
ACK_SECONDS = Histogram("cc_ingest_reply_seconds",
                        "From an event's arrival to its reply (the ack means durable)",
                        buckets=_LATENCY)
BUS_DEPTH = Gauge("cc_bus_depth", "Events accepted and not yet answered on this node")

# -- pipeline (embedded server, or a scale-out worker) -----------------------------------
SEGMENTS_SCORED = Counter("cc_segments_scored", "Final segments sentiment-scored")
ALERTS = Counter("cc_alerts_raised", "Rule hits (each joins or opens its conversation's "
                 "alert), by rule and severity",
                 ["rule", "severity"])
BATCH_SIZE = Histogram("cc_batch_events", "Events per pipeline batch",
                       buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
COMMIT_SECONDS = Histogram("cc_commit_seconds", "Store transaction per batch (group commit)",
                           buckets=_LATENCY)
COMMIT_FAILURES = Counter("cc_commit_failures", "Batches whose store transaction failed")
LIVE_CONVERSATIONS = Gauge("cc_live_conversations", "Live conversations held by this process")
PARTITIONS_HELD = Gauge("cc_partitions_held", "Partitions this worker holds (scale-out)")
DEAD_LETTERS = Counter("cc_dead_letters", "Events set aside after failing too often")

# -- connections and abuse limits --------------------------------------------------------
CONNECTIONS = Gauge("cc_websockets_open", "WebSockets open, by kind", ["kind"])
SLOW_CLIENTS = Counter("cc_slow_client_disconnects",
                       "Subscribers cut off for falling behind, by kind", ["kind"])
HUB_SUBSCRIBERS = Gauge("cc_live_subscribers", "Live subscriptions (monitors, boards, alerts)")
REFUSED = Counter("cc_refused",
                  "Requests and sockets refused by a limit, by reason "
                  "(rate_limited, too_many_connections, too_many_failures, unauthenticated, csrf)",
                  ["reason"])

# -- HTTP ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("cc_http_requests", "HTTP requests, by method, route and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("cc_http_request_seconds", "HTTP request duration, by route",
                         ["route"], buckets=_LATENCY)


# Labelled children looked up once: `.labels()` costs more than the count itself, and
# these are counted per event. (Their label values are bounded: event types, codes.)
_event_counters: dict[str, Any] = {}
_reply_counters: dict[str, Any] = {}


def count_event(kind: str) -> None:
    counter = _event_counters.get(kind)
    if counter is None:
        counter = _event_counters[kind] = EVENTS.labels(kind)
    counter.inc()


def count_reply(code: str, seconds: float) -> None:
    """A reply: an ack (``code`` empty) or an error with its code, and its latency."""
    counter = _reply_counters.get(code)
    if counter is None:
        counter = _reply_counters[code] = REPLIES.labels("error" if code else "ack", code)
    counter.inc()
    ACK_SECONDS.observe(seconds)


def exposition() -> bytes:
    """Every metric of this process, in Prometheus's text format."""
    return generate_latest(REGISTRY)


def serve(host: str, port: int) -> None:
    """Serve the metrics over HTTP on their own port, from a thread (a worker's way: it
    has no API). Unauthenticated: bind it where only Prometheus reaches."""
    start_http_server(port, addr=host)
