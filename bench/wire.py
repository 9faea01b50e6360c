"""A lean WebSocket client for the benchmarks (RFC 6455 over asyncio protocols).

The websockets library's asyncio client costs the load generator more CPU per message
than the server under test spends on some of it, on a machine where both share the
cores. This one does only what a benchmark needs: the opening handshake (with an
``Authorization`` header), client frames prepared *before* the timed part (masked with
a random key, as the RFC asks), and a parser of the server's unmasked frames that hands
each batch of complete messages to a callback. Pings are answered; fragmented messages
are reassembled. No extensions (the servers run without per-message deflate).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension ships with websockets' wheels
    def apply_mask(data: bytes, mask: bytes) -> bytes:
        return bytes(b ^ mask[i % 4] for i, b in enumerate(data))

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """One complete, masked client frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


class HandshakeFailed(Exception):
    pass


class WireSocket(asyncio.Protocol):
    """One client WebSocket. ``on_messages(list_of_payloads)`` is called with every batch
    of complete data messages as they arrive (text and binary alike, as bytes)."""

    def __init__(self, on_messages: Callable[[list[bytes]], None]) -> None:
        self.on_messages = on_messages
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self._fragments: list[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is no subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.handshake.done():
            self.handshake.set_exception(HandshakeFailed(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            if not head.startswith("HTTP/1.1 101"):
                if not self.handshake.done():
                    self.handshake.set_exception(HandshakeFailed(
                        head.split("\r\n", 1)[0] + " " + bytes(self.buf[end + 4:])[:200]
                        .decode("utf-8", "replace")))
                assert self.transport is not None
                self.transport.close()
                return
            del self.buf[:end + 4]
            self.open = True
            self.handshake.set_result(None)
        self._parse()

    # -- frames -----------------------------------------------------------------------

    def _parse(self) -> None:
        buf, pos, size = self.buf, 0, len(self.buf)
        messages: list[bytes] = []
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head:pos + head + n])
            if masked:  # servers do not mask; tolerate it all the same
                payload = apply_mask(payload, bytes(buf[pos + head - 4:pos + head]))
            pos += head + n
            opcode = b0 & 0x0F
            if opcode in (TEXT, BINARY, 0x0):
                if b0 & 0x80 and not self._fragments:
                    messages.append(payload)
                else:
                    self._fragments.append(payload)
                    if b0 & 0x80:
                        messages.append(b"".join(self._fragments))
                        self._fragments.clear()
            elif opcode == PING:
                self.send(client_frame(payload, PONG))
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self.send(client_frame(payload[:2], CLOSE))
                self.open = False
                assert self.transport is not None
                self.transport.close()
                break
        if pos:
            del buf[:pos]
        if messages:
            self.on_messages(messages)

    def send(self, data: bytes) -> None:
        """Write prepared frames (one or several, joined)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(struct.pack("!H", 1000), CLOSE))
            self.transport.close()


async def open_socket(host: str, port: int, path: str, token: str | None,
                      on_messages: Callable[[list[bytes]], None],
                      seconds: float = 10.0) -> WireSocket:
    """Connect and complete the opening handshake; raises HandshakeFailed (with the
    status line and body) when the server refuses."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        _, proto = await loop.create_connection(lambda: WireSocket(on_messages), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    proto.send((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{auth}\r\n").encode())
    async with asyncio.timeout(seconds):
        await proto.handshake
    return proto
