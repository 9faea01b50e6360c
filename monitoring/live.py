"""Live views and streams for supervisors and agents.

REST: live conversations (with filters), one conversation, agent metrics, alerts.
WebSocket: the live board, the monitor stream on one conversation, the alert stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from contact_center.conversation import Conversation
from contact_center.pipeline import ALERTS_TOPIC, LIVE_TOPIC, Pipeline, conversation_topic
from monitoring.auth import accept, authorize_websocket, deny, require
from monitoring.hub import Hub, Subscription
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["supervision"])

SLOW_CONSUMER = 1013  # "try again later": this client could not keep up


def matches(conv: Conversation, *, queue: str | None = None, agent_id: str | None = None,
            channel: str | None = None, escalated: bool | None = None,
            sentiment_below: float | None = None) -> bool:
    if queue is not None and conv.queue != queue:
        return False
    if agent_id is not None and conv.agent_id != agent_id:
        return False
    if channel is not None and conv.channel != channel:
        return False
    if escalated is not None and (conv.alerts > 0) != escalated:
        return False
    if sentiment_below is not None:
        mean = conv.rolling.mean
        return mean is not None and mean < sentiment_below
    return True


def agent_metrics(conversations: list[Conversation],
                  known_agents: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per agent: live conversations, their mean customer sentiment, alerts raised.
    ``known_agents`` (agent users) are listed even while they handle nothing."""

    def row(agent_id: str | None) -> dict[str, Any]:
        return {"agent_id": agent_id, "conversations": 0, "open_alerts": 0,
                "escalated_conversations": 0, "_sentiments": []}

    agents: dict[str, dict[str, Any]] = {a: row(a) for a in known_agents}
    for conv in conversations:
        a = agents.setdefault(conv.agent_id or "(unassigned)", row(conv.agent_id))
        a["conversations"] += 1
        a["open_alerts"] += conv.alerts
        a["escalated_conversations"] += conv.alerts > 0
        if conv.rolling.mean is not None:
            a["_sentiments"].append(conv.rolling.mean)
    rows = []
    for a in agents.values():
        values = a.pop("_sentiments")
        a["average_customer_sentiment"] = sum(values) / len(values) if values else None
        rows.append(a)
    return sorted(rows, key=lambda r: (r["agent_id"] is None, r["agent_id"] or ""))


def _pipeline(conn: Request | WebSocket) -> Pipeline:
    return conn.app.state.pipeline


@router.get("/v1/live/conversations")
async def live_conversations(
    request: Request,
    queue: str | None = None, agent_id: str | None = None,
    channel: str | None = Query(default=None, pattern="^(chat|voice)$"),
    escalated: bool | None = None,
    sentiment_below: float | None = Query(default=None, ge=-1, le=1),
    _: Principal = require(Permission.REALTIME_METRICS),
) -> dict[str, Any]:
    """Live conversations, filtered; sorted by rolling customer sentiment, worst first."""
    now = time.time()
    convs = [c for c in _pipeline(request).conversations.values()
             if matches(c, queue=queue, agent_id=agent_id, channel=channel,
                        escalated=escalated, sentiment_below=sentiment_below)]
    convs.sort(key=lambda c: (c.rolling.mean is None, c.rolling.mean or 0.0))
    return {"conversations": [c.summary(now) for c in convs]}


@router.get("/v1/live/conversations/{conversation_id}")
async def live_conversation(request: Request, conversation_id: str,
                            _: Principal = require(Permission.REALTIME_METRICS)) -> dict[str, Any]:
    conv = _pipeline(request).conversations.get(conversation_id)
    if conv is None:
        raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                  "message": f"no live conversation {conversation_id}"})
    return conv.summary(time.time())


@router.get("/v1/live/agents")
async def live_agents(request: Request,
                      _: Principal = require(Permission.REALTIME_METRICS)) -> dict[str, Any]:
    agent_users = [u.agent_id for u in await request.app.state.store.list_users()
                   if u.agent_id and "Agent" in u.profiles]
    return {"agents": agent_metrics(list(_pipeline(request).conversations.values()),
                                    agent_users)}


@router.get("/v1/alerts")
async def list_alerts(request: Request, conversation_id: str | None = None,
                      limit: int = Query(default=100, ge=1, le=1000),
                      principal: Principal = require(Permission.ALERTS_OWN,
                                                     Permission.ALERTS_ALL)) -> dict[str, Any]:
    """Recent alerts this user may see (their own conversations', or all)."""
    alerts = await request.app.state.store.list_alerts(conversation_id, limit)
    return {"alerts": [a for a in alerts if principal.can_see_alert(a["agent_id"])]}


# -- streams ----------------------------------------------------------------------------------


async def _pump(ws: WebSocket, sub: Subscription, hub: Hub, first: list[dict[str, Any]],
                until_type: str | None = None) -> None:
    """Send ``first`` then every message of ``sub`` until the client leaves, the stream
    ends (a message of ``until_type``), or the client is too slow and is cut off."""

    async def send_all() -> None:
        for opening in first:
            await ws.send_json(opening)
            if opening.get("type") == until_type:
                await ws.close(1000, "conversation ended")
                return
        while True:
            message = await sub.next()
            if message is None:
                await ws.close(SLOW_CONSUMER, "client too slow; reconnect")
                return
            await ws.send_text(message.text)
            if message.type == until_type:
                await ws.close(1000, "conversation ended")
                return

    async def watch_disconnect() -> None:
        # A send-only stream learns of a departed client only by reading.
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(send_all()), asyncio.create_task(watch_disconnect())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe(sub)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await ws.close(1000)


@router.websocket("/v1/conversations/{conversation_id}/monitor")
async def monitor(ws: WebSocket, conversation_id: str) -> None:
    """Silently monitor one conversation: its transcript so far, then everything live."""
    principal = await authorize_websocket(ws, Permission.MANAGER_MONITOR)
    if principal is None:
        return
    pipeline, hub = _pipeline(ws), ws.app.state.hub
    conv = pipeline.conversations.get(conversation_id)
    if conv is None:
        stored = await ws.app.state.store.get_conversation(conversation_id)
        code, status = (("conversation_ended", 410) if stored else ("unknown_conversation", 404))
        await deny(ws, status, {"type": "error", "code": code,
                                "message": f"no live conversation {conversation_id}"})
        return
    # Subscribe and snapshot in one step (no await between): nothing is missed or repeated.
    sub = hub.subscribe(conversation_topic(conversation_id))
    catch_up = {"type": "catch_up", "conversation": conv.summary(time.time()),
                "transcript": list(conv.recent)}
    await accept(ws)
    await _pump(ws, sub, hub, [catch_up, {"type": "live"}], until_type="conversation.ended")


@router.websocket("/v1/live")
async def live_board(ws: WebSocket) -> None:
    """The supervisor's live board: every live conversation, then each update."""
    if await authorize_websocket(ws, Permission.REALTIME_METRICS) is None:
        return
    pipeline, hub = _pipeline(ws), ws.app.state.hub
    sub = hub.subscribe(LIVE_TOPIC)
    now = time.time()
    snapshot = {"type": "snapshot",
                "conversations": [c.summary(now) for c in pipeline.conversations.values()]}
    await accept(ws)
    await _pump(ws, sub, hub, [snapshot])


@router.websocket("/v1/alerts/stream")
async def alert_stream(ws: WebSocket) -> None:
    """Alerts as they are raised: an agent's own conversations, or all for supervisors."""
    principal = await authorize_websocket(ws, Permission.ALERTS_OWN, Permission.ALERTS_ALL)
    if principal is None:
        return
    hub = ws.app.state.hub
    sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: principal.can_see_alert(meta["agent_id"]))
    await accept(ws)
    await _pump(ws, sub, hub, [{"type": "subscribed", "user": principal.username,
                                "agent_id": principal.agent_id}])
