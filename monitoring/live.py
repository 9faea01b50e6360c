"""Live views and streams for supervisors and agents.

REST: live conversations (with filters), one conversation, agent metrics, alerts.
WebSocket: the live board, the monitor stream on one conversation, the alert stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contact_center import service_metrics as metrics
from contact_center.applier import ALERTS_TOPIC, conversation_topic
from contact_center.openapi import COMMON, error
from contact_center.views import Alerts, LiveAgents, LiveConversations, LiveSummary
from monitoring.auth import accept, authorize_websocket, deny, require
from monitoring.feeds import LIVE_TOPIC, LiveFeed
from monitoring.hub import Hub, Subscription
from monitoring.metrics import agent_metrics, load_of
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["supervision"], responses=COMMON)

SLOW_CONSUMER = 1013  # "try again later": this client could not keep up
RATE_LIMITED = 1008  # "policy violation": this client sent more than it may
RESYNC = 1012  # "service restart": what was sent may not have been kept; reconnect
SEND_TIMEOUT = 10.0  # a client that takes longer to accept one message is cut off


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """What a supervisor asked to see of the live conversations (all when empty)."""

    queue: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    escalated: bool | None = None
    sentiment_below: float | None = None

    def matches(self, summary: dict[str, Any]) -> bool:
        for key in ("queue", "agent_id", "channel", "escalated"):
            wanted = getattr(self, key)
            if wanted is not None and summary[key] != wanted:
                return False
        if self.sentiment_below is not None:
            mean = summary["sentiment"]["window"]
            return mean is not None and mean < self.sentiment_below
        return True


def live_filter(queue: str | None = None, agent_id: str | None = None,
                channel: str | None = Query(default=None, pattern="^(chat|voice)$"),
                escalated: bool | None = None,
                sentiment_below: float | None = Query(default=None, ge=-1, le=1)) -> LiveFilter:
    return LiveFilter(queue, agent_id, channel, escalated, sentiment_below)


def board_filter(wanted: LiveFilter) -> Callable[[dict[str, Any]], bool]:
    """For the live board: updates of matching conversations, plus one last update of a
    conversation that stops matching, so the client can drop it."""
    shown: set[str] = set()

    def keep(message: dict[str, Any]) -> bool:
        summary = message.get("conversation")
        if summary is None:
            return True
        was_shown = summary["id"] in shown
        shown.discard(summary["id"])
        if wanted.matches(summary):
            if summary["status"] != "ended":  # an ended one never comes back
                shown.add(summary["id"])
            return True
        return was_shown

    return keep


def _feed(conn: Request | WebSocket) -> LiveFeed:
    feed: LiveFeed = conn.app.state.feed
    return feed


def _worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live conversations, worst rolling customer sentiment first."""
    rows.sort(key=lambda s: (s["sentiment"]["window"] is None, s["sentiment"]["window"] or 0.0))
    return rows


@router.get("/v1/live/conversations", response_model=LiveConversations)
async def live_conversations(request: Request, wanted: LiveFilter = Depends(live_filter),
                             _: Principal = require(Permission.REALTIME_METRICS),
                             ) -> dict[str, Any]:
    """Live conversations, filtered; sorted by rolling customer sentiment, worst first."""
    live = await _feed(request).conversations()
    return {"conversations": _worst_first([c.summary for c in live if wanted.matches(c.summary)])}


@router.get("/v1/live/conversations/{conversation_id}", response_model=LiveSummary,
            responses={404: error("unknown_conversation: no live conversation with this id")})
async def live_conversation(request: Request, conversation_id: str,
                            _: Principal = require(Permission.REALTIME_METRICS)) -> dict[str, Any]:
    live = await _feed(request).conversation(conversation_id)
    if live is None:
        raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                  "message": f"no live conversation {conversation_id}"})
    return live.summary


@router.get("/v1/live/agents", response_model=LiveAgents)
async def live_agents(request: Request,
                      _: Principal = require(Permission.REALTIME_METRICS)) -> dict[str, Any]:
    agent_users = [u.agent_id for u in await request.app.state.store.list_users()
                   if u.agent_id and "Agent" in u.profiles]
    return {"agents": agent_metrics(await _feed(request).agent_loads(), agent_users)}


@router.get("/v1/alerts", response_model=Alerts)
async def list_alerts(request: Request, conversation_id: str | None = None,
                      limit: int = Query(default=100, ge=1, le=1000),
                      principal: Principal = require(Permission.ALERTS_OWN,
                                                     Permission.ALERTS_ALL)) -> dict[str, Any]:
    """Recent alerts this user may see: on their own conversations, or all."""
    if principal.can(Permission.ALERTS_ALL):
        agent_id = None
    elif principal.agent_id is None:
        return {"alerts": []}
    else:
        agent_id = principal.agent_id
    return {"alerts": await request.app.state.store.list_alerts(conversation_id, agent_id,
                                                                limit)}


# -- streams ----------------------------------------------------------------------------------


async def _pump(ws: WebSocket, kind: str, sub: Subscription, hub: Hub,
                first: list[dict[str, Any]], endings: dict[str, tuple[int, str]] | None = None,
                seen: dict[str, int] | None = None) -> None:
    """Accept, send ``first``, then every message of ``sub`` not already in it (``seen``:
    the last message number ``first`` covers, per conversation), until the client leaves,
    a message whose type is in ``endings`` has been sent (then close with its code), or
    the client is too slow and is cut off. Always unsubscribes."""
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


@router.websocket("/v1/conversations/{conversation_id}/monitor")
async def monitor(ws: WebSocket, conversation_id: str) -> None:
    """Silently monitor one conversation: its transcript so far, then everything live."""
    principal = await authorize_websocket(ws, Permission.MANAGER_MONITOR)
    if principal is None:
        return
    hub = ws.app.state.hub
    await _feed(ws).ready()  # (not subscribed meanwhile: nothing piles up)
    # Subscribed before the snapshot: what happens meanwhile is both in the subscription
    # and the snapshot, and the message numbers tell which to skip.
    sub = hub.subscribe(conversation_topic(conversation_id))
    try:
        caught_up = await _feed(ws).catch_up(conversation_id)
    except Exception:
        hub.unsubscribe(sub)
        raise
    if caught_up is None:
        hub.unsubscribe(sub)
        stored = await ws.app.state.store.get_conversation(conversation_id)
        if stored is None:
            code, status = "unknown_conversation", 404
        elif stored["status"] == "live":  # dropped from memory after a failure; back soon
            code, status = "unavailable", 503
        else:
            code, status = "conversation_ended", 410
        await deny(ws, status, {"type": "error", "code": code,
                                "message": f"no live conversation {conversation_id}"})
        return
    catch_up = {"type": "catch_up", "conversation": caught_up.summary,
                "transcript": caught_up.transcript}
    await _pump(ws, "monitor", sub, hub, [catch_up, {"type": "live"}],
                {"conversation.ended": (1000, "conversation ended")},
                {conversation_id: caught_up.number})


@router.websocket("/v1/live")
async def live_board(ws: WebSocket, wanted: LiveFilter = Depends(live_filter)) -> None:
    """The supervisor's live board: live conversations (filtered like the REST list),
    then each update."""
    if await authorize_websocket(ws, Permission.REALTIME_METRICS) is None:
        return
    hub = ws.app.state.hub
    await _feed(ws).ready()  # (not subscribed meanwhile: nothing piles up)
    accept_update = board_filter(wanted)
    sub = hub.subscribe(LIVE_TOPIC, accept=accept_update)  # before the snapshot: see monitor
    try:
        live = await _feed(ws).conversations()
    except Exception:
        hub.unsubscribe(sub)
        raise
    rows = _worst_first([c.summary for c in live if wanted.matches(c.summary)])
    for row in rows:
        accept_update({"conversation": row})  # remember what the snapshot showed
    snapshot = {"type": "snapshot", "conversations": rows,
                "agents": agent_metrics(load_of(c.summary) for c in live)}
    await _pump(ws, "live", sub, hub, [snapshot], seen={c.summary["id"]: c.number for c in live})


@router.websocket("/v1/alerts/stream")
async def alert_stream(ws: WebSocket) -> None:
    """Alerts as they are raised: an agent's own conversations, or all for supervisors."""
    principal = await authorize_websocket(ws, Permission.ALERTS_OWN, Permission.ALERTS_ALL)
    if principal is None:
        return
    hub = ws.app.state.hub
    sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: principal.can_see_alert(meta["agent_id"]))
    await _pump(ws, "alerts", sub, hub, [{"type": "subscribed", "user": principal.username,
                                "agent_id": principal.agent_id}])
