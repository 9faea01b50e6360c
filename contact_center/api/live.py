"""Live views and streams for supervisors: live conversations (with filters), one
conversation, agent metrics (REST); the live board and the monitor stream on one
conversation (WebSocket)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket

from contact_center.api.audited import UNAVAILABLE, audit
from contact_center.api.auth import authorize_websocket, deny, require
from contact_center.api.openapi import COMMON, error
from contact_center.api.sockets import pump
from contact_center.api.views import LiveAgents, LiveConversations, LiveSummary
from monitoring.board import LiveFilter, board_filter, worst_first
from monitoring.feeds import LiveFeed
from monitoring.messages import LIVE_TOPIC, conversation_topic
from monitoring.metrics import agent_metrics, load_of
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["supervision"], responses=COMMON)


def live_filter(queue: str | None = None, agent_id: str | None = None,
                channel: str | None = Query(default=None, pattern="^(chat|voice)$"),
                escalated: bool | None = None,
                sentiment_below: float | None = Query(default=None, ge=-1, le=1)) -> LiveFilter:
    return LiveFilter(queue, agent_id, channel, escalated, sentiment_below)


def _feed(conn: Request | WebSocket) -> LiveFeed:
    feed: LiveFeed = conn.app.state.feed
    return feed


@router.get("/v1/live/conversations", response_model=LiveConversations)
async def live_conversations(request: Request, wanted: LiveFilter = Depends(live_filter),
                             _: Principal = require(Permission.REALTIME_METRICS),
                             ) -> dict[str, Any]:
    """Live conversations, filtered; sorted by rolling customer sentiment, worst first."""
    live = await _feed(request).conversations()
    return {"conversations": worst_first([c.summary for c in live if wanted.matches(c.summary)])}


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
        with contextlib.suppress(HTTPException):  # (refused either way)
            await audit(ws, principal, "monitor.start", "conversation", conversation_id, code)
        await deny(ws, status, {"type": "error", "code": code,
                                "message": f"no live conversation {conversation_id}"})
        return
    try:  # durable before anything of the conversation is sent
        await audit(ws, principal, "monitor.start", "conversation", conversation_id)
    except HTTPException:
        hub.unsubscribe(sub)
        await deny(ws, 503, UNAVAILABLE)
        return
    catch_up = {"type": "catch_up", "conversation": caught_up.summary,
                "transcript": caught_up.transcript}
    started = time.monotonic()
    try:
        await pump(ws, "monitor", sub, hub, [catch_up, {"type": "live"}],
                   {"conversation.ended": (1000, "conversation ended")},
                   {conversation_id: caught_up.number})
    finally:
        with contextlib.suppress(HTTPException):
            await audit(ws, principal, "monitor.end", "conversation", conversation_id,
                        details={"seconds": round(time.monotonic() - started, 3)})


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
    rows = worst_first([c.summary for c in live if wanted.matches(c.summary)])
    for row in rows:
        accept_update({"conversation": row})  # remember what the snapshot showed
    snapshot = {"type": "snapshot", "conversations": rows,
                "agents": agent_metrics(load_of(c.summary) for c in live)}
    await pump(ws, "live", sub, hub, [snapshot], seen={c.summary["id"]: c.number for c in live})


