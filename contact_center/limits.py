"""Abuse limits: messages per second on one socket, sockets per API token, and failed
authentications per client address. The counting is pure (callers pass the time); what
to answer is decided where each is checked (contact_center.api.auth, the socket handlers).

All of them count in this process: in the scale-out deployment, per API node.
"""

from __future__ import annotations

import collections
import ipaddress
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class TokenBucket:
    """``rate`` per second on average, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def take(self, now: float) -> bool:
        """Whether one more is allowed now (and count it)."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SocketCounts:
    """Open sockets per key (an API token), at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: collections.Counter[str] = collections.Counter()

    def enter(self, key: str) -> bool:
        if self.open[key] >= self.limit:
            return False
        self.open[key] += 1
        return True

    def leave(self, key: str) -> None:
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]


class FailedAuthentications:
    """Failed authentications per client address (IPv6: per /64, what one client gets)
    in the current minute. An address past ``per_minute`` is slowed down for the rest of
    its minute (see contact_center.api.auth): its failures are answered late, a few at a time.
    Remembers at most ``addresses`` addresses (the least recently failing are forgotten
    first)."""

    WINDOW = 60.0
    PAUSE = 1.0  # seconds a slowed-down address waits for each failure's answer
    PAUSED_AT_ONCE = 8  # answers an address may be waiting for; past them, 429 at once

    def __init__(self, per_minute: int, addresses: int = 100_000) -> None:
        self.per_minute, self.addresses = per_minute, addresses
        self.paused: collections.Counter[str] = collections.Counter()
        self._by_address: collections.OrderedDict[str, tuple[float, int]] = \
            collections.OrderedDict()

    def slowed(self, address: str, now: float) -> float:
        """Seconds ``address`` stays slowed down (0: it is not)."""
        address = client_key(address)
        if not self.per_minute or address not in self._by_address:
            return 0.0
        started, failures = self._by_address[address]
        if now - started >= self.WINDOW:
            del self._by_address[address]
            return 0.0
        return started + self.WINDOW - now if failures >= self.per_minute else 0.0

    def failed(self, address: str, now: float) -> None:
        if not self.per_minute:
            return
        address = client_key(address)
        started, failures = self._by_address.pop(address, (now, 0))
        if now - started >= self.WINDOW:
            started, failures = now, 0
        self._by_address[address] = (started, failures + 1)
        while len(self._by_address) > self.addresses:
            self._by_address.popitem(last=False)


def client_key(address: str) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 /64 (one subscriber's
    network: rotating addresses within it does not reset the count)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    except ValueError:
        return address


HELD = "held_socket"  # the scope key naming what `SocketCaps` releases


class SocketCaps:
    """Releases, when a socket ends, the place it took in a `SocketCounts` (taken by
    `contact_center.api.auth.authorize_websocket` once the socket's token is known)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        holder: dict[str, Any] = {}
        scope[HELD] = holder
        try:
            await self.app(scope, receive, send)
        finally:
            if "key" in holder:
                holder["counts"].leave(holder["key"])


class Limits:
    """One app's limits (kept on ``app.state.limits``)."""

    def __init__(self, messages_per_second: float, sockets_per_token: int,
                 auth_failures_per_minute: int) -> None:
        self.messages_per_second = messages_per_second
        self.sockets = SocketCounts(sockets_per_token)
        self.failures = FailedAuthentications(auth_failures_per_minute)

    def message_bucket(self, now: float) -> TokenBucket:
        """A socket's allowance: ``messages_per_second``, bursts of a second's worth."""
        return TokenBucket(self.messages_per_second, max(1.0, self.messages_per_second), now)
