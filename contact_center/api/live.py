"""Live views and streams for supervisors: live conversations (with filters), one
conversation, agent metrics (REST); the live board and the monitor stream on one
conversation (WebSocket)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket

from contact_center.api.auth import authorize_websocket, deny, require
from contact_center.api.openapi import COMMON, error
from contact_center.api.sockets import pump
from contact_center.api.supervision import NotLive, find_live, not_live
from contact_center.api.views import LiveAgents, LiveConversations, LiveSummary
from contact_center.presence import MonitorPresence
from monitoring import codec
from monitoring.board import LiveFilter, board_filter, worst_first
from monitoring.feeds import LiveFeed
from monitoring.hub import Message
from monitoring.messages import LIVE_TOPIC, conversation_topic
from monitoring.metrics import agent_metrics, load_of
from monitoring.permissions import Permission, Principal
from monitoring.presence import Listener

log = logging.getLogger(__name__)
router = APIRouter(tags=["supervision"], responses=COMMON)

PRESENCE_SECONDS = 5.0  # listing or unlisting a monitor socket, at most


def live_filter(queue: str | None = None, agent_id: str | None = None,
                channel: str | None = Query(default=None, pattern="^(chat|voice)$"),
                escalated: bool | None = None,
                sentiment_below: float | None = Query(default=None, ge=-1, le=1)) -> LiveFilter:
    return LiveFilter(queue, agent_id, channel, escalated, sentiment_below)


def _feed(conn: Request | WebSocket) -> LiveFeed:
    feed: LiveFeed = conn.app.state.feed
    return feed


def _presence(conn: Request | WebSocket) -> MonitorPresence:
    presence: MonitorPresence = conn.app.state.runtime.presence
    return presence


@router.get("/v1/live/conversations", response_model=LiveConversations)
async def live_conversations(request: Request, wanted: LiveFilter = Depends(live_filter),
                             _: Principal = require(Permission.REALTIME_METRICS),
                             ) -> dict[str, Any]:
    """Live conversations, filtered; sorted by rolling customer sentiment, worst first."""
    live = await _feed(request).conversations()
    rows = await _presence(request).summaries([c.summary for c in live
                                               if wanted.matches(c.summary)])
    return {"conversations": worst_first(rows)}


@router.get("/v1/live/conversations/{conversation_id}", response_model=LiveSummary,
            responses={404: error("unknown_conversation: no live conversation with this id")})
async def live_conversation(request: Request, conversation_id: str,
                            _: Principal = require(Permission.REALTIME_METRICS)) -> dict[str, Any]:
    live = await _feed(request).conversation(conversation_id)
    if live is None:
        raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                  "message": f"no live conversation {conversation_id}"})
    return await _presence(request).summary(live.summary)


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
    try:
        await find_live(ws, conversation_id, principal)
    except NotLive as exc:
        await deny(ws, exc.status, exc.body)
        return
    # Subscribed before the snapshot: what happens meanwhile is both in the subscription
    # and the snapshot, and the message numbers tell which to skip.
    sub = hub.subscribe(conversation_topic(conversation_id))
    try:
        caught_up = await _feed(ws).catch_up(conversation_id)
    except Exception:
        hub.unsubscribe(sub)
        raise
    if caught_up is None:  # (ended meanwhile)
        hub.unsubscribe(sub)
        refusal = await not_live(ws, conversation_id)
        await deny(ws, refusal.status, refusal.body)
        return
    listener = Listener(secrets.token_hex(8), principal.username, time.time())
    try:
        await _listed(_presence(ws).opened(conversation_id, listener))
        catch_up = {"type": "catch_up",
                    "conversation": await _presence(ws).summary(caught_up.summary),
                    "transcript": caught_up.transcript}
        await pump(ws, "monitor", sub, hub, [catch_up, {"type": "live"}],
                   {"conversation.ended": (1000, "conversation ended")},
                   {conversation_id: caught_up.number}, skip=_own(listener))
    finally:
        # A task of its own: a handler cancelled as its client leaves (or the server
        # stops) still takes its socket off the list.
        closing = asyncio.create_task(_listed(_presence(ws).closed(conversation_id,
                                                                   listener)))
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)
        await asyncio.shield(closing)


_CLOSING: set[asyncio.Task[None]] = set()  # (held until done)


async def _listed(change: Awaitable[None]) -> None:
    """Who monitors what is told, not needed to monitor: a failure (Redis down) is
    logged; a listing that failed lapses, one that is missing comes with the next."""
    try:
        await asyncio.wait_for(change, PRESENCE_SECONDS)
    except Exception:
        log.warning("listing a monitor socket failed", exc_info=True)


def _own(listener: Listener) -> Callable[[Message], bool]:
    """A monitor is not told of its own socket opening or closing."""

    def own(message: Message) -> bool:
        return message.type in ("monitor.started", "monitor.ended") and codec.loads(
            message.text).get("monitor_id") == listener.monitor_id

    return own


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
    rows = worst_first(await _presence(ws).summaries([c.summary for c in live
                                                      if wanted.matches(c.summary)]))
    for row in rows:
        accept_update({"conversation": row})  # remember what the snapshot showed
    snapshot = {"type": "snapshot", "conversations": rows,
                "agents": agent_metrics(load_of(c.summary) for c in live)}
    await pump(ws, "live", sub, hub, [snapshot], seen={c.summary["id"]: c.number for c in live})


