"""Governed supervision of one live conversation: who monitors it; whisper to its agent;
barge in, write to the customer, leave (docs/protocol.md#supervision). Each act is a
`SupervisorCommand` applied by the pipeline in turn with the conversation's events, so it
is stored, published and answered the same way in both deployments."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket
from pydantic import Field

from contact_center import protocol as p
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Responses, error
from contact_center.api.views import Barged, Monitors, Supervised, SupervisorTurn, Whispered
from contact_center.buses import Source
from contact_center.protocol import Model
from monitoring.feeds import Live
from monitoring.permissions import Permission, Principal
from monitoring.presence import supervisor_participant

router = APIRouter(tags=["supervision"], responses=COMMON)

COMMAND_WAIT_SECONDS = 5.0  # an act waits this long for room on the bus
WHISPER_CHARS = 2000

NOT_LIVE: Responses = {404: error("unknown_conversation: no such conversation"),
            410: error("conversation_ended: the conversation has ended")}
ACTS: Responses = {**NOT_LIVE, 409: error(
    "no_agent: nobody to whisper to (the conversation has no agent); not_barged: the "
    "caller has not barged into the conversation; no_connector: no connector socket "
    "that takes pushes feeds it, so nobody would pass the words to the customer")}
STATUS = {p.ErrorCode.UNKNOWN_CONVERSATION: 404, p.ErrorCode.CONVERSATION_ENDED: 410,
          p.ErrorCode.NO_AGENT: 409, p.ErrorCode.NOT_BARGED: 409,
          p.ErrorCode.NO_CONNECTOR: 409, p.ErrorCode.OVERLOADED: 503,
          p.ErrorCode.UNAVAILABLE: 503}


class NotLive(Exception):
    """Why a supervisor cannot act on a conversation: its status and error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.body = status, {"type": "error", "code": code, "message": message}


async def find_live(conn: Request | WebSocket, conversation_id: str,
                    principal: Principal) -> Live:
    """The live conversation in the user's scope a supervisor acts on (monitor, whisper,
    barge); else `NotLive`: 404 unknown or outside the scope, 410 ended, 503 being
    reloaded after a storage failure."""
    found: Live | None = await conn.app.state.feed.conversation(conversation_id)
    if found is None or not principal.sees(found.summary["queue"], found.summary["agent_id"]):
        raise await not_live(conn, conversation_id, principal)
    return found


async def not_live(conn: Request | WebSocket, conversation_id: str,
                   principal: Principal) -> NotLive:
    """Why not: outside the user's scope is the same as unknown (never 403)."""
    stored = await conn.app.state.store.get_conversation(conversation_id)
    if stored is None or not principal.sees(stored["queue"], stored["agent_id"]):
        return NotLive(404, "unknown_conversation", f"no conversation {conversation_id}")
    if stored["status"] == "live":  # dropped from memory after a failure; back soon
        return NotLive(503, "unavailable", f"conversation {conversation_id} is being "
                                           "reloaded; retry")
    return NotLive(410, "conversation_ended", f"conversation {conversation_id} has ended")


async def _found(request: Request, conversation_id: str, principal: Principal) -> Live:
    try:
        return await find_live(request, conversation_id, principal)
    except NotLive as exc:
        raise HTTPException(exc.status, exc.body) from None


async def _barged_in(request: Request, conversation_id: str, principal: Principal) -> bool:
    """Whether this user is a participant of the live conversation (barged in)."""
    found: Live | None = await request.app.state.feed.conversation(conversation_id)
    me = supervisor_participant(principal.username)
    return found is not None and any(joined["id"] == me
                                     for joined in found.summary["participants"])


def _key(kind: str, principal: Principal, client_id: str | None) -> str:
    """An act's idempotency key: the client's id for it (per user), else a new one."""
    if client_id is None:
        return f"{kind}.{secrets.token_hex(12)}"
    digest = hashlib.sha256(f"{principal.username}\n{client_id}".encode()).hexdigest()
    return f"{kind}.{digest[:24]}"


async def _submit(request: Request, command: p.SupervisorCommand) -> p.Ack:
    """Have the pipeline apply the act; its answer once committed."""
    try:
        reply = await (await request.app.state.bus.submit(
            command, Source(), max_wait=COMMAND_WAIT_SECONDS))
    except p.ProtocolError as exc:  # the bus stayed full
        reply = p.ErrorReply.of(exc)
    if isinstance(reply, p.ErrorReply):
        raise HTTPException(STATUS.get(reply.code, 500), {
            "type": "error", "code": reply.code.value, "message": reply.message})
    assert isinstance(reply, p.Ack)
    return reply


class WhisperBody(Model):
    text: str = Field(min_length=1, max_length=WHISPER_CHARS)
    request_id: p.Id | None = Field(default=None, description=(
        "Makes retrying safe: a whisper sent again with the same request_id (by the same "
        "user) is applied once, and answered `duplicate`."))


class MessageBody(Model):
    text: str = Field(min_length=1, max_length=p.MAX_TEXT_CHARS)
    message_id: p.Id | None = Field(default=None, description=(
        "Makes retrying safe: a message sent again with the same message_id (by the same "
        "user) is one turn, answered `duplicate`."))


@router.get("/v1/conversations/{conversation_id}/monitors", response_model=Monitors,
            responses={**NOT_LIVE, 503: error("unavailable: the database (or Redis) is "
                                              "down, or the conversation is being "
                                              "reloaded; retry")})
async def list_monitors(request: Request, conversation_id: str,
                        principal: Principal = require(Permission.MANAGER_MONITOR),
                        ) -> dict[str, Any]:
    """Who monitors a live conversation: listening on a monitor socket, or barged in."""
    found = await _found(request, conversation_id, principal)
    summary = await request.app.state.runtime.presence.summary(found.summary)
    return {"conversation_id": conversation_id, "monitors": summary["monitors"]}


@router.post("/v1/conversations/{conversation_id}/whisper", response_model=Whispered,
             responses=ACTS)
async def whisper(request: Request, conversation_id: str, body: WhisperBody,
                  principal: Principal = require(Permission.MANAGER_WHISPER),
                  ) -> dict[str, Any]:
    """A note to the conversation's agent, which the customer never sees: pushed to the
    agent desktop (the connector socket), the agent's alert stream and the monitors;
    stored as an event, its words only where the recording policy keeps the agent's."""
    whisper_id = _key("whisper", principal, body.request_id)
    # (its length, not its words: the log keeps no conversation text)
    async with audited(request, principal, "whisper", "conversation", conversation_id,
                       {"whisper_id": whisper_id, "chars": len(body.text)}):
        await _found(request, conversation_id, principal)
        reply = await _submit(request, p.SupervisorCommand(
            conversation_id=conversation_id, command_id=whisper_id, action="whisper",
            by=principal.username, text=body.text))
    return {"conversation_id": conversation_id, "status": reply.status,
            "whisper_id": whisper_id}


@router.post("/v1/conversations/{conversation_id}/barge", response_model=Barged,
             responses=ACTS)
async def barge(request: Request, conversation_id: str,
                principal: Principal = require(Permission.MANAGER_BARGE)) -> dict[str, Any]:
    """Join the conversation as a participant (role supervisor): the connector is told
    (`participant.joined`) and passes what you write to the customer."""
    async with audited(request, principal, "barge.join", "conversation", conversation_id):
        await _found(request, conversation_id, principal)
        reply = await _submit(request, p.SupervisorCommand(
            conversation_id=conversation_id, command_id=_key("barge", principal, None),
            action="barge", by=principal.username))
    await request.app.state.runtime.presence.barged(conversation_id)
    participant: dict[str, Any] = {"id": supervisor_participant(principal.username),
                                   "role": "supervisor", "name": principal.username}
    found = await request.app.state.feed.conversation(conversation_id)
    for joined in found.summary["participants"] if found is not None else ():
        if joined["id"] == participant["id"]:
            participant = joined
    return {"conversation_id": conversation_id, "status": reply.status,
            "participant": participant}


@router.delete("/v1/conversations/{conversation_id}/barge", response_model=Supervised,
               responses=ACTS)
async def leave(request: Request, conversation_id: str,
                principal: Principal = require(Permission.MANAGER_BARGE)) -> dict[str, Any]:
    """Leave a conversation you barged into (the connector is told: `participant.left`),
    even one a transfer took out of your scope since."""
    async with audited(request, principal, "barge.leave", "conversation", conversation_id):
        if not await _barged_in(request, conversation_id, principal):
            await _found(request, conversation_id, principal)
        reply = await _submit(request, p.SupervisorCommand(
            conversation_id=conversation_id, command_id=_key("leave", principal, None),
            action="leave", by=principal.username))
    await request.app.state.runtime.presence.barged(conversation_id)
    return {"conversation_id": conversation_id, "status": reply.status}


@router.post("/v1/conversations/{conversation_id}/messages", response_model=SupervisorTurn,
             responses=ACTS)
async def write(request: Request, conversation_id: str, body: MessageBody,
                principal: Principal = require(Permission.MANAGER_BARGE)) -> dict[str, Any]:
    """Write to the customer, once barged in: a turn with role supervisor (scored,
    recorded under the policy, on monitors), pushed to the connector to pass on."""
    segment_id = _key("supervisor", principal, body.message_id)
    async with audited(request, principal, "barge.message", "conversation", conversation_id,
                       {"segment_id": segment_id, "chars": len(body.text)}):
        await _found(request, conversation_id, principal)
        reply = await _submit(request, p.SupervisorCommand(
            conversation_id=conversation_id, command_id=segment_id, action="say",
            by=principal.username, text=body.text, segment_id=segment_id))
    return {"conversation_id": conversation_id, "status": reply.status,
            "segment_id": segment_id, "scores": reply.scores}
