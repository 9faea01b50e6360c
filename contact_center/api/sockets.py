"""Sending live messages down a socket: an opening snapshot, then every message after it,
until the client leaves, a closing message comes, or the client is too slow."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contact_center import service_metrics as metrics
from contact_center.api.auth import accept
from monitoring.hub import Hub, Message, Subscription

SLOW_CONSUMER = 1013  # "try again later": this client could not keep up
RATE_LIMITED = 1008  # "policy violation": this client sent more than it may
RESYNC = 1012  # "service restart": what was sent may not have been kept; reconnect
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is cut off


async def pump(ws: WebSocket, kind: str, sub: Subscription, hub: Hub,
               first: list[dict[str, Any]], endings: dict[str, tuple[int, str]] | None = None,
               seen: dict[str, int] | None = None,
               skip: Callable[[Message], bool] | None = None) -> None:
    """Accept, send ``first``, then every message of ``sub`` not already in it (``seen``:
    the last message number ``first`` covers, per conversation) nor one to ``skip``, until
    the client leaves, a message whose type is in ``endings`` has been sent (then close
    with its code), or the client is too slow and is cut off. Always unsubscribes."""
    endings = {"resync": (RESYNC, "state changed; reconnect")} | (endings or {})
    seen = seen or {}

    async def send_all() -> tuple[int, str]:
        for opening in first:
            await asyncio.wait_for(ws.send_json(opening), SEND_TIMEOUT)
        while True:
            message = await sub.next()
            if message is None:
                return SLOW_CONSUMER, "client too slow; reconnect"
            if message.number and message.number <= seen.get(message.conversation_id or "", 0):
                continue  # the snapshot in ``first`` already holds it
            if skip is not None and skip(message):
                continue
            await asyncio.wait_for(ws.send_text(message.text), SEND_TIMEOUT)
            if message.type in endings:
                return endings[message.type]

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
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            error = sender.exception()
            if error is None:
                close = sender.result()
            elif isinstance(error, TimeoutError):
                close = (SLOW_CONSUMER, "client too slow; reconnect")
        elif tasks[1].done() and tasks[1].exception() is None:
            close = tasks[1].result()
    finally:
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
                await asyncio.wait_for(ws.close(*close), SEND_TIMEOUT)
