"""Logging: one line per request or socket (the access log), a request id on every line
logged while serving it, and text or JSON output.

What is never logged: tokens (not the header; of a query string only the values of the
parameters in `SHOWN_PARAMETERS`, never a token's, a search's terms or an unknown one's)
and transcript text (no log call formats an event's text, and the WebSocket library's
frame-by-frame debug lines are kept off at every level).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import urllib.parse
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contact_center import service_metrics as metrics

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

access_log = logging.getLogger("contact_center.access")

# A client's own X-Request-ID is kept (to follow a request through a proxy) when it is
# plainly an id; anything else is replaced, so a log line cannot be forged through it.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Query parameters whose values say nothing about a customer or a secret.
SHOWN_PARAMETERS = frozenset({"limit", "offset", "since", "until", "role", "queue", "channel",
                              "escalated", "sentiment_below", "status"})
# Methods counted by name; any other (uvicorn passes whatever a client sends) is "other",
# so no client can create metric series at will.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def masked_query(query: str) -> str:
    """A query string for the log: values shown only for `SHOWN_PARAMETERS`."""
    if not query:
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode(
        [(k, v if k in SHOWN_PARAMETERS else "***") for k, v in pairs], safe="*")


def _printable(path: str) -> str:
    """A path for a log line: control characters (a forged second line) escaped."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class RequestIds:
    """Outermost middleware: gives every request and socket an id (echoed in the
    ``X-Request-ID`` response header), logs one access line when it ends, and counts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        offered = _header(scope, b"x-request-id")
        rid = offered if offered and _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", rid)
            elif message["type"] == "websocket.accept":
                status = 101
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            seconds = time.perf_counter() - started
            route = _route_of(scope)
            method = scope["method"] if scope["type"] == "http" else "WS"
            if method not in _METHODS:
                method = "other" if scope["type"] == "http" else method
            if scope["type"] == "http":
                metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
                metrics.HTTP_SECONDS.labels(route).observe(seconds)
            query = masked_query(scope.get("query_string", b"").decode("latin-1"))
            client = scope.get("client") or ("-", 0)
            access_log.info("%s %s%s %s %.1fms %s", method, _printable(scope["path"]),
                            f"?{query}" if query else "", status or "-", seconds * 1000,
                            client[0], extra={"status": status, "route": route,
                                              "duration_ms": round(seconds * 1000, 2)})
            request_id.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), not the raw path."""
    route = scope.get("route")
    return str(getattr(route, "path", "")) or "(unmatched)"


class WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the
    access line's fields; an exception's traceback under ``exception``."""

    FIELDS = ("status", "route", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-")}
        line |= {f: getattr(record, f) for f in self.FIELDS if hasattr(record, f)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


JsonLines.converter = time.gmtime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Root logging for a served process: text or JSON lines on stderr."""
    handler = logging.StreamHandler()
    handler.addFilter(WithRequestId())
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):  # through the root handler, as the rest
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn hands "uvicorn.error" to the WebSocket library, which at DEBUG logs every
    # handshake header (the token) and frame (transcript text): never below INFO.
    for name in ("uvicorn.error", "websockets"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
