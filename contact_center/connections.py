"""How the server treats connections before any route sees them: a request's headers must
arrive in time, and the number of connections is capped; and how it lets them go when it
stops (within a deadline, see contact_center.stopping).

Without these a client that opens connections and sends nothing (or a header a minute)
holds a file descriptor each for as long as it likes; enough of them and the server
stops answering everyone.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from contact_center import stopping

RESERVED_DESCRIPTORS = 100  # kept free of connections: the database, Redis, logs
# When stopping, open connections get this long to finish before their tasks are
# cancelled; then the app's own stop steps follow (app.py, runtime.py).
CONNECTIONS_CLOSE_SECONDS = 6.0


class TimelyHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol, closing a connection whose request headers (a WebSocket
    handshake's too) do not all arrive within ``header_timeout`` seconds of the
    connection, or of the request's first byte on a kept-alive connection."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_due: asyncio.TimerHandle | None = None
        self._expect_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_due is None:
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _expect_headers(self) -> None:
        self._headers_due = self.loop.call_later(self.header_timeout, self._too_slow)

    def _headers_arrived(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _too_slow(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.close()


def timely_http(header_timeout: float) -> type[TimelyHttp]:
    """The protocol class for uvicorn's ``http`` option."""
    return type("TimelyHttp", (TimelyHttp,), {"header_timeout": header_timeout})


def connection_limit(configured: int | None) -> int:
    """At most this many connections at once (uvicorn answers 503 beyond): as
    configured, else what the process's file-descriptor limit leaves room for."""
    if configured is not None:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, soft - RESERVED_DESCRIPTORS)


def server_options(header_timeout: float, max_connections: int | None) -> dict[str, Any]:
    return {"http": timely_http(header_timeout),
            "limit_concurrency": connection_limit(max_connections),
            "timeout_graceful_shutdown": CONNECTIONS_CLOSE_SECONDS}


class Server(uvicorn.Server):
    """uvicorn's server, which arms the last resort of a stop as the stop begins: the
    process ends within `stopping.WORST_CASE_SECONDS` of SIGTERM, whatever hangs."""

    async def shutdown(self, sockets: Any = None) -> None:
        stopping.exit_if_still_running()
        await super().shutdown(sockets)
