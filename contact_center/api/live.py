"""Live views and streams for supervisors: live conversations (with filters), one
conversation, agent metrics (REST); the live board and the monitor stream on one
conversation (WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket

from contact_center.api.audited import UNAVAILABLE, audit
from contact_center.api.auth import authorize_websocket, deny, require
from contact_center.api.open_sockets import POLICY, Held
from contact_center.api.openapi import COMMON, error
from contact_center.api.sockets import Close, Rewrite, pump, pushes_batched
from contact_center.api.supervision import NotLive, find_live, not_live
from contact_center.api.views import LiveAgents, LiveConversations, LiveSummary
from contact_center.presence import MonitorPresence
from monitoring import codec
from monitoring.board import LiveFilter, board_filter, worst_first
from monitoring.feeds import LiveFeed
from monitoring.hub import Message
from monitoring.messages import LIVE_TOPIC, UNREDACTED, conversation_topic
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


def _sees(principal: Principal, summary: dict[str, Any]) -> bool:
    return principal.sees(summary["queue"], summary["agent_id"])


def _sees_agent(principal: Principal, agent_id: str | None) -> bool:
    """Agent metrics in a scope: those of its teams' agents (whole)."""
    return principal.within is None or agent_id in principal.within.agents


@router.get("/v1/live/conversations", response_model=LiveConversations)
async def live_conversations(request: Request, wanted: LiveFilter = Depends(live_filter),
                             principal: Principal = require(Permission.REALTIME_METRICS),
                             ) -> dict[str, Any]:
    """Live conversations in the user's scope, filtered; sorted by rolling customer
    sentiment, worst first."""
    live = await _feed(request).conversations()
    rows = await _presence(request).summaries([c.summary for c in live
                                               if wanted.matches(c.summary)
                                               and _sees(principal, c.summary)])
    return {"conversations": worst_first(rows)}


@router.get("/v1/live/conversations/{conversation_id}", response_model=LiveSummary,
            responses={404: error("unknown_conversation: no live conversation with this id "
                                  "in your scope")})
async def live_conversation(request: Request, conversation_id: str,
                            principal: Principal = require(Permission.REALTIME_METRICS),
                            ) -> dict[str, Any]:
    live = await _feed(request).conversation(conversation_id)
    if live is None or not _sees(principal, live.summary):
        raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                  "message": f"no live conversation {conversation_id}"})
    return await _presence(request).summary(live.summary)


@router.get("/v1/live/agents", response_model=LiveAgents)
async def live_agents(request: Request,
                      principal: Principal = require(Permission.REALTIME_METRICS),
                      ) -> dict[str, Any]:
    """Per agent (of the user's teams, when they have a scope): live conversations,
    their mean customer sentiment, alerts."""
    agent_users = [u.agent_id for u in await request.app.state.store.list_users()
                   if u.agent_id and "Agent" in u.profiles
                   and _sees_agent(principal, u.agent_id)]
    loads = [load for load in await _feed(request).agent_loads()
             if _sees_agent(principal, load.agent_id)]
    return {"agents": agent_metrics(loads, agent_users)}


@router.websocket("/v1/conversations/{conversation_id}/monitor")
async def monitor(ws: WebSocket, conversation_id: str) -> None:
    """Silently monitor one conversation: its transcript so far, then everything live."""
    principal = await authorize_websocket(ws, Permission.MANAGER_MONITOR)
    if principal is None:
        return
    batched = await pushes_batched(ws)
    if batched is None:
        return
    hub = ws.app.state.hub
    await _feed(ws).ready()  # (not subscribed meanwhile: nothing piles up)
    try:
        await find_live(ws, conversation_id, principal)
    except NotLive as exc:
        await _refuse(ws, principal, conversation_id, exc)
        return
    # Subscribed before the snapshot: what happens meanwhile is both in the subscription
    # and the snapshot, and the message numbers tell which to skip.
    sub = hub.subscribe(conversation_topic(conversation_id))
    try:
        caught_up = await _feed(ws).catch_up(conversation_id)
    except Exception:
        hub.unsubscribe(sub)
        raise
    if caught_up is None or not _sees(principal, caught_up.summary):  # (changed meanwhile)
        hub.unsubscribe(sub)
        await _refuse(ws, principal, conversation_id,
                      await not_live(ws, conversation_id, principal))
        return
    try:  # durable before anything of the conversation is sent
        await audit(ws, principal, "monitor.start", "conversation", conversation_id,
                    details={"unredacted": True} if unredacted(principal) else None)
    except HTTPException:
        hub.unsubscribe(sub)
        await deny(ws, 503, UNAVAILABLE)
        return
    started = time.monotonic()
    listener = Listener(secrets.token_hex(8), principal.username, time.time())
    following = Following(caught_up.summary["queue"], caught_up.summary["agent_id"], listener,
                          unredacted(principal))
    held = ws.app.state.open_sockets.hold(ws, principal, Permission.MANAGER_MONITOR,
                                          still_allowed=following.still_allowed)
    following.held = held
    try:
        await _listed(_presence(ws).opened(conversation_id, listener))
        catch_up = {"type": "catch_up",
                    "conversation": await _presence(ws).summary(caught_up.summary),
                    "transcript": caught_up.transcript}
        await pump(ws, "monitor", sub, hub, [catch_up, {"type": "live"}],
                   {"conversation.ended": (1000, "conversation ended")},
                   {conversation_id: caught_up.number}, held=held, rewrite=following.rewrite,
                   batched=batched)
    finally:
        ws.app.state.open_sockets.release(held)  # (if the pump never ran: it does too)
        hub.unsubscribe(sub)
        # A task of its own: a handler cancelled as its client leaves (or the server
        # stops) still takes its socket off the list, and records the end.
        ending = asyncio.create_task(_ended(ws, principal, conversation_id, listener,
                                            time.monotonic() - started))
        _CLOSING.add(ending)
        ending.add_done_callback(_CLOSING.discard)
        await asyncio.shield(ending)


_CLOSING: set[asyncio.Task[None]] = set()  # (held until done)


async def _ended(ws: WebSocket, principal: Principal, conversation_id: str,
                 listener: Listener, seconds: float) -> None:
    await _listed(_presence(ws).closed(conversation_id, listener))
    with contextlib.suppress(HTTPException):
        await audit(ws, principal, "monitor.end", "conversation", conversation_id,
                    details={"seconds": round(seconds, 3)})


async def _listed(change: Awaitable[None]) -> None:
    """Who monitors what is told, not needed to monitor: a failure (Redis down) is
    logged; a listing that failed lapses, one that is missing comes with the next."""
    try:
        async with asyncio.timeout(PRESENCE_SECONDS):
            await change
    except Exception:
        log.warning("listing a monitor socket failed", exc_info=True)


async def _refuse(ws: WebSocket, principal: Principal, conversation_id: str,
                  refusal: NotLive) -> None:
    """Refuse a monitor socket, recorded (a refused monitor is in the audit too)."""
    with contextlib.suppress(HTTPException):  # (refused either way)
        await audit(ws, principal, "monitor.start", "conversation", conversation_id,
                    refusal.body["code"])
    await deny(ws, refusal.status, refusal.body)


class Following:
    """What one monitor socket gets: not the news of its own opening or closing; and
    where the conversation is now (its queue and agent), so the socket closes the moment
    a transfer takes it out of the supervisor's scope (the transfer itself, which says
    where it went, is not sent)."""

    LEFT = "out_of_scope: the conversation left your scope"

    def __init__(self, queue: str | None, agent_id: str | None, listener: Listener,
                 unredacted: bool = False) -> None:
        self.queue, self.agent_id, self.listener = queue, agent_id, listener
        self.unredacted = unredacted  # (granted later: from the next monitor socket)
        self.held: Held | None = None

    def still_allowed(self, principal: Principal) -> str | None:
        return None if principal.sees(self.queue, self.agent_id) else self.LEFT

    def rewrite(self, message: Message) -> Message | None:
        if message.type == "segment":
            return self._words(message)
        if message.type in ("monitor.started", "monitor.ended"):
            own = codec.loads(message.text).get("monitor_id") == self.listener.monitor_id
            return None if own else message
        if message.type == "conversation.transferred":
            body = codec.loads(message.text)
            self.queue = body["to_queue"] or self.queue
            self.agent_id = body["to_agent_id"] or self.agent_id
        elif message.type == "bot.handover":
            self.agent_id = codec.loads(message.text)["agent_id"]
        else:
            return message
        if self.held is not None and self.still_allowed(self.held.principal) is not None:
            raise Close(POLICY, self.LEFT)
        return message


    def _words(self, message: Message) -> Message:
        """A turn as this monitor may see it: its words as said (`text_unredacted`, sent
        where redaction changed them) only with the permission, held when the socket
        opened (as its audit entry says) and still now."""
        if f'"{UNREDACTED}"' not in message.text or (
                self.unredacted and self.held is not None
                and unredacted(self.held.principal)):
            return message
        body = codec.loads(message.text)
        body.pop(UNREDACTED, None)
        return message._replace(text=codec.dumps(body))


def unredacted(principal: Principal) -> bool:
    return principal.can(Permission.MONITOR_UNREDACTED)


@router.websocket("/v1/live")
async def live_board(ws: WebSocket, wanted: LiveFilter = Depends(live_filter)) -> None:
    """The supervisor's live board: live conversations (filtered like the REST list),
    then each update."""
    principal = await authorize_websocket(ws, Permission.REALTIME_METRICS)
    if principal is None:
        return
    batched = await pushes_batched(ws)
    if batched is None:
        return
    hub = ws.app.state.hub
    await _feed(ws).ready()  # (not subscribed meanwhile: nothing piles up)
    # The board follows its user's scope as it widens (what comes into it shows with its
    # next update); one narrowed closes it, for a fresh snapshot.
    held: Held

    def still_allowed(changed: Principal) -> str | None:
        if _wider(changed, held.principal):
            return None
        return "scope_changed: reconnect for a fresh view"

    held = ws.app.state.open_sockets.hold(ws, principal, Permission.REALTIME_METRICS,
                                          still_allowed=still_allowed)
    accept_update = board_filter(wanted, lambda summary: _sees(held.principal, summary))
    sub = hub.subscribe(LIVE_TOPIC, accept=accept_update)  # before the snapshot: see monitor
    try:
        live = await _feed(ws).conversations()
        rows = worst_first(await _presence(ws).summaries([
            c.summary for c in live
            if wanted.matches(c.summary) and _sees(principal, c.summary)]))
        for row in rows:
            accept_update({"conversation": row})  # remember what the snapshot showed
        snapshot = {"type": "snapshot", "conversations": rows,
                    "agents": agent_metrics(load_of(c.summary) for c in live
                                            if _sees_agent(principal, c.summary["agent_id"]))}
        await pump(ws, "live", sub, hub, [snapshot],
                   seen={c.summary["id"]: c.number for c in live}, held=held,
                   rewrite=None if principal.within is None else _scoped_board(held),
                   batched=batched)
    finally:
        ws.app.state.open_sockets.release(held)  # (if the pump never ran: it does too)
        hub.unsubscribe(sub)


def _wider(changed: Principal, was: Principal) -> bool:
    """Whether ``changed`` sees all ``was`` saw."""
    return changed.within is None or changed.within.includes(was.within)


def _scoped_board(held: Held) -> Rewrite:
    """A scoped supervisor's board: agent rows of their teams only, and a conversation
    leaving their scope as a bare ``conversation.removed`` (not where it went)."""

    def rewrite(message: Message) -> Message:
        principal = held.principal  # (as of now)
        if message.type == "agents.updated":
            body = codec.loads(message.text)
            body["agents"] = [a for a in body["agents"]
                              if _sees_agent(principal, a["agent_id"])]
            return message._replace(text=codec.dumps(body))
        if message.type == "conversation.updated":
            summary = codec.loads(message.text)["conversation"]
            if not _sees(principal, summary):
                return message._replace(type="conversation.removed", text=codec.dumps(
                    {"type": "conversation.removed", "conversation_id": summary["id"]}))
        return message

    return rewrite


