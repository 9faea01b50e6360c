"""Webhooks, the pure part: which alert events an endpoint gets, what is sent (signed as
the Standard Webhooks specification says), when a failed delivery is tried again, and
which addresses may be called. The delivery itself: `contact_center.webhook_delivery`.
docs/alerts.md#webhooks.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from monitoring import codec
from monitoring.alerts import SEVERITY_RANK

# Seconds before each retry of a failed delivery (then jittered down by up to a half):
# about 16 hours in all, then the delivery is given up (`failed`).
RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: ``whsec_`` and 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def wants(hook: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether an endpoint subscribed to this alert event."""
    alert = event["alert"]
    return (hook["enabled"] and event["event_id"] > hook["after_event_id"]
            and event["type"] in hook["events"]
            and SEVERITY_RANK[alert["severity"]] >= SEVERITY_RANK[hook["min_severity"]]
            and (hook["queues"] is None or alert["queue"] in hook["queues"]))


def message_id(event_id: int, webhook_id: str) -> str:
    """The ``webhook-id``: one per event and endpoint, the same on every retry."""
    return f"msg_{event_id}_{webhook_id}"


def payload(event: dict[str, Any], at: float) -> str:
    """The body, as the Standard Webhooks specification shapes it."""
    return codec.dumps({
        "type": event["type"],
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "data": {"event_id": event["event_id"], "alert": event["alert"]}})


def signed_headers(secret: str, msg_id: str, body: str, now: float) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (signed at ``now``)."""
    when = datetime.fromtimestamp(int(now), UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now)),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body),
            "content-type": "application/json"}


def retry_delay(attempts: int, rng: random.Random | None = None) -> float | None:
    """Seconds before the next try after ``attempts`` failed ones (None: give up)."""
    if attempts >= MAX_ATTEMPTS:
        return None
    base = RETRY_DELAYS[attempts - 1]
    return base * (0.5 + 0.5 * (rng or random).random())


Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def allowed_networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The operator's allow-list; ValueError names a bad entry."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses, reached through NAT64
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, still routed privately


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches (mapped, NAT64, 6to4, Teredo)."""
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]


def refused_address(address: str, allowed: Networks) -> str | None:
    """Why a webhook may not call this address (None: it may): a private, loopback,
    link-local or otherwise non-public address (or an IPv6 address that reaches one),
    unless the operator allowed its network."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    reached = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    if (ip.is_global and not ip.is_multicast and ip not in _SITE_LOCAL
            and all(v4.is_global for v4 in reached)):
        return None
    return (f"{ip} is not a public address (private, loopback, link-local or reserved, "
            "or reaching one); allow its network with CC_WEBHOOK_ALLOWED_NETWORKS")
