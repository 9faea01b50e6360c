"""Sending live messages down a socket: an opening snapshot, then every message after it,
until the client leaves, a closing message comes, or the client is too slow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contact_center import service_metrics as metrics
from contact_center.api.auth import accept, deny
from contact_center.api.open_sockets import Held
from monitoring.hub import Hub, Message, Subscription

log = logging.getLogger(__name__)

SLOW_CONSUMER = 1013  # "try again later": this client could not keep up
INTERNAL_ERROR = 1011  # the server failed this stream; reconnecting starts afresh
RATE_LIMITED = 1008  # "policy violation": this client sent more than it may
RESYNC = 1012  # "service restart": what was sent may not have been kept; reconnect
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is cut off
# `?pushes=batched`: the messages waiting for a socket when it is written to go out as one
# frame (a board of a thousand conversations gets a frame a batch, not one an update).
PUSHES_VALUES = ("single", "batched")
# The most a frame of several holds (a larger message goes alone): 64 KiB, as batched
# replies (docs/protocol.md).
MAX_FRAME_BYTES = 65_536
PUSHES_FRAME = '{{"type":"pushes","pushes":[{}]}}'
# An empty frame's bytes, less the comma the first message does not take.
_FRAME_BYTES = len(PUSHES_FRAME.format("")) - 1


class Close(Exception):
    """Raised by a `Rewrite`: close the socket with this code and reason instead."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


Rewrite = Callable[[Message], Message | None]
"""What this client gets of a message (None: nothing); may raise `Close`."""


class SendDeadline:
    """``asyncio.timeout(seconds)`` around each `send`, as one timer a period rather
    than one a send: a push costs a clock read, not a timer (6 µs) set and cancelled.
    `watching` raises TimeoutError once one send has taken ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._since: float | None = None  # when the send in progress began

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as cutoff:
            timer: asyncio.TimerHandle | None = None

            def check() -> None:
                nonlocal timer
                now, since = loop.time(), self._since
                if since is not None and now - since >= self.seconds:
                    cutoff.reschedule(now)  # expired: the task is cancelled, as by a timeout
                else:
                    timer = loop.call_at((now if since is None else since) + self.seconds,
                                         check)

            timer = loop.call_later(self.seconds, check)
            try:
                yield
            finally:
                timer.cancel()  # (the one armed last)

    async def send(self, sending: Awaitable[None]) -> None:
        """Await ``sending`` (one send) within the deadline; only inside `watching`."""
        self._since = asyncio.get_running_loop().time()
        try:
            await sending
        finally:
            self._since = None


async def pump(ws: WebSocket, kind: str, sub: Subscription, hub: Hub,
               first: list[dict[str, Any]], endings: dict[str, tuple[int, str]] | None = None,
               seen: dict[str, int] | None = None, held: Held | None = None,
               rewrite: Rewrite | None = None, batched: bool = False) -> None:
    """Accept, send ``first``, then every message of ``sub`` not already in it (``seen``:
    the last message number ``first`` covers, per conversation), as ``rewrite`` has it
    (``batched``: those waiting together in one frame), until the client leaves, a
    message whose type is in ``endings`` has been sent (then close with its code), the
    client is too slow and is cut off, or ``held`` says it may no longer see this
    (1008). Always unsubscribes and releases ``held``."""
    endings = {"resync": (RESYNC, "state changed; reconnect")} | (endings or {})
    seen = seen or {}
    deadline = SendDeadline(SEND_TIMEOUT)

    def shown(message: Message) -> Message | None:
        """What this client gets of ``message`` (None: nothing); may raise `Close`."""
        if message.number and message.number <= seen.get(message.conversation_id or "", 0):
            return None  # the snapshot in ``first`` already holds it
        return message if rewrite is None else rewrite(message)

    async def send(texts: list[str]) -> None:
        if texts:
            await deadline.send(ws.send_text(PUSHES_FRAME.format(",".join(texts)) if batched
                                             else texts[0]))

    async def send_all() -> tuple[int, str]:
        async with deadline.watching():
            return await send_each()

    async def send_each() -> tuple[int, str]:
        for n, opening in enumerate(first):
            if batched and n == 0:
                opening = opening | {"pushes": "batched"}
            await deadline.send(ws.send_json(opening))
        while True:
            message: Message | None = await sub.next()
            texts: list[str] = []
            size = _FRAME_BYTES
            # One message, or (batched) every one waiting, as many as fit in a frame.
            while message is not None:
                try:
                    out = shown(message)
                except Close as close:
                    await send(texts)
                    return close.code, close.reason
                if out is not None:
                    length = len(out.text.encode()) + 1 if batched else 0
                    if texts and size + length > MAX_FRAME_BYTES:
                        await send(texts)
                        texts, size = [], _FRAME_BYTES
                    texts.append(out.text)
                    size += length
                    if out.type in endings:
                        await send(texts)
                        return endings[out.type]
                if not batched or not sub.waiting:
                    break
                message = sub.take()
            await send(texts)
            if message is None:
                return SLOW_CONSUMER, "client too slow; reconnect"

    async def watch_disconnect() -> tuple[int, str]:
        # A send-only stream learns of a departed client only by reading; what a client
        # sends is ignored, within its allowance.
        allowance = ws.app.state.limits.message_bucket(time.monotonic())
        while (await ws.receive())["type"] != "websocket.disconnect":
            if not allowance.take(time.monotonic()):
                metrics.REFUSED.labels("rate_limited").inc()
                return RATE_LIMITED, "rate_limited: too many messages"
        return 1000, ""

    tasks: list[asyncio.Task[tuple[int, str]]] = []
    close = (1000, "")
    open_sockets = metrics.CONNECTIONS.labels(kind)
    open_sockets.inc()
    try:
        await accept(ws)
        sender = asyncio.create_task(send_all())
        tasks = [sender, asyncio.create_task(watch_disconnect())]
        if held is not None:
            tasks.append(asyncio.create_task(held.closed()))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            error = sender.exception()
            if error is None:
                close = sender.result()
            elif isinstance(error, TimeoutError):
                close = (SLOW_CONSUMER, "client too slow; reconnect")
            elif not isinstance(error, (WebSocketDisconnect, OSError)):  # (not the client)
                log.error("%s stream failed: %r", kind, error)
                close = (INTERNAL_ERROR, "internal_error: reconnect")
        else:
            ended = next((t for t in tasks[1:] if t.done() and t.exception() is None), None)
            if ended is not None:
                close = ended.result()
    finally:
        if held is not None:
            ws.app.state.open_sockets.release(held)
        open_sockets.dec()
        if close[0] == SLOW_CONSUMER:
            metrics.SLOW_CLIENTS.labels(kind).inc()
        hub.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError,
                                     TimeoutError):
                await task
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, TimeoutError):
                async with asyncio.timeout(SEND_TIMEOUT):
                    await ws.close(*close)


async def pushes_batched(ws: WebSocket) -> bool | None:
    """Whether ``?pushes=batched`` was asked for; None when ``pushes`` is neither single nor
    batched, and the socket is refused (422 `validation_error`)."""
    pushes = ws.query_params.get("pushes", "single")
    if pushes not in PUSHES_VALUES:
        await deny(ws, 422, {"type": "error", "code": "validation_error",
                             "message": "pushes must be single or batched"})
        return None
    return pushes == "batched"
