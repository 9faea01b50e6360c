"""Ingest: the connector-facing WebSocket and REST routes.

Every event gets exactly one reply, in the order received: an ack once the pipeline
has durably applied it, or an error with a stable code. A bad event never closes the
socket; it only earns its own error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contact_center import protocol as p
from contact_center.buses import Bus, Source
from monitoring.auth import accept, authorize_websocket, require
from monitoring.permissions import Permission

router = APIRouter(tags=["ingest"])

Pending = asyncio.Queue["asyncio.Future[p.Reply] | p.Reply"]


def _encode(reply: p.Reply) -> str:
    return reply.model_dump_json(exclude_none=True)


# After one of these the connection is closed: the connector resends from the first event
# it has no ack for (nothing after it was applied either).
RESEND_FROM_HERE = {p.ErrorCode.UNAVAILABLE, p.ErrorCode.INTERNAL_ERROR}


async def _send_replies(ws: WebSocket, pending: Pending) -> None:
    while True:
        item = await pending.get()
        reply = await item if isinstance(item, asyncio.Future) else item
        await ws.send_text(_encode(reply))
        if isinstance(reply, p.ErrorReply) and reply.code in RESEND_FROM_HERE:
            await ws.close(1011, "resend from the first unacknowledged event")
            return


async def _submit(bus: Bus, source: Source, raw: str | bytes,
                  limit: int) -> asyncio.Future[p.Reply] | p.Reply:
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > limit:
        return p.ErrorReply(code=p.ErrorCode.MESSAGE_TOO_LARGE,
                            message=f"message is {size} bytes; the limit is {limit}")
    try:
        # No deadline: a socket waits for room, so its events stay in order and TCP
        # pushes back on the connector.
        return await bus.submit(p.parse_event(raw), source, max_wait=None)
    except p.ProtocolError as exc:
        return p.ErrorReply.of(exc)


async def _read_events(ws: WebSocket, pending: Pending, bus: Bus, limit: int) -> None:
    source = Source()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text") if message.get("text") is not None else message.get("bytes")
        await pending.put(await _submit(bus, source, raw or "", limit))


@router.websocket("/v1/ingest")
async def ingest_socket(ws: WebSocket) -> None:
    """Connectors stream events here; see docs/protocol.md."""
    if await authorize_websocket(ws, Permission.INGEST) is None:
        return
    settings, bus = ws.app.state.settings, ws.app.state.bus
    await accept(ws)
    await ws.send_json({"type": "hello", "protocol": p.PROTOCOL_VERSION,
                        "max_message_bytes": settings.max_message_bytes})
    # Bounded: once `ingest_window` events await their reply, reading pauses and TCP
    # pushes back on the connector.
    pending: Pending = asyncio.Queue(settings.ingest_window)
    tasks = [asyncio.create_task(_read_events(ws, pending, bus, settings.max_message_bytes)),
             asyncio.create_task(_send_replies(ws, pending))]
    try:
        # Whichever side stops first (the client left, a send failed) ends both.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- REST ---------------------------------------------------------------------------------


class ConversationCreated(BaseModel):
    id: str
    status: p.AckStatus
    monitor_url: str


class SegmentBatch(BaseModel):
    segments: list[p.SegmentFields] = Field(min_length=1, max_length=500)


class EventBatch(BaseModel):
    events: list[p.Event] = Field(min_length=1, max_length=500)


class BatchResult(BaseModel):
    results: list[p.Ack | p.ErrorReply]


async def _apply_all(bus: Bus, events: list[Any], max_wait: float) -> list[p.Reply]:
    """Submit a batch in order within one deadline. Once one event is refused as
    overloaded, the rest are too, so a retry from that point keeps the order."""
    deadline = asyncio.get_running_loop().time() + max_wait
    source = Source()
    futures: list[asyncio.Future[p.Reply] | p.Reply] = []
    for event in events:
        if futures and isinstance(futures[-1], p.ErrorReply):
            futures.append(futures[-1].model_copy(update={"ref": event.ref}))
            continue
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            futures.append(await bus.submit(event, source, max_wait=left))
        except p.ProtocolError as exc:
            futures.append(p.ErrorReply.of(exc))
    return [await f if isinstance(f, asyncio.Future) else f for f in futures]


async def _apply_rest(request: Request, events: list[Any]) -> list[p.Reply]:
    settings = request.app.state.settings
    return await _apply_all(request.app.state.bus, events, settings.submit_timeout_seconds)


def _status_for(results: list[p.Reply]) -> int:
    """A batch that failed as a whole for one reason gets that reason's status."""
    codes = {r.code for r in results if isinstance(r, p.ErrorReply)}
    if len(codes) == 1 and all(isinstance(r, p.ErrorReply) for r in results):
        return {p.ErrorCode.UNKNOWN_CONVERSATION: 404, p.ErrorCode.CONVERSATION_ENDED: 409,
                p.ErrorCode.OVERLOADED: 503, p.ErrorCode.UNAVAILABLE: 503}.get(codes.pop(), 400)
    return 200


def _batch_response(results: list[p.Reply]) -> JSONResponse:
    body = BatchResult(results=results).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=_status_for(results))


@router.post("/v1/conversations", status_code=201, response_model=ConversationCreated,
             responses={200: {"description": "Already started (idempotent retry)"},
                        503: {"description": "Overloaded or storage unavailable"}})
async def create_conversation(request: Request, conversation: p.ConversationInfo,
                              _: Any = require(Permission.INGEST)) -> JSONResponse:
    """Start a conversation (the id is generated when omitted) and get its monitor URL."""
    event = p.ConversationStarted(conversation=conversation)
    reply = (await _apply_rest(request, [event]))[0]
    if isinstance(reply, p.ErrorReply):
        return JSONResponse(reply.model_dump(mode="json", exclude_none=True),
                            status_code=_status_for([reply]))
    body = ConversationCreated(id=conversation.id, status=reply.status,
                               monitor_url=f"/v1/conversations/{conversation.id}/monitor")
    return JSONResponse(body.model_dump(), status_code=201 if reply.status == "accepted" else 200)


@router.post("/v1/conversations/{conversation_id}/segments", response_model=BatchResult)
async def post_segments(request: Request, conversation_id: str, batch: SegmentBatch,
                        _: Any = require(Permission.INGEST)) -> JSONResponse:
    """Post a batch of segments; each gets its own result, in order."""
    try:
        events = [p.Segment(conversation_id=conversation_id, **s.model_dump())
                  for s in batch.segments]
    except ValueError as exc:
        return JSONResponse({"type": "error", "code": p.ErrorCode.VALIDATION_ERROR,
                             "message": str(exc)}, status_code=422)
    return _batch_response(await _apply_rest(request, events))


@router.post("/v1/events", response_model=BatchResult)
async def post_events(request: Request, batch: EventBatch,
                      _: Any = require(Permission.INGEST)) -> JSONResponse:
    """Post any protocol events (the same JSON as on the socket); results are in order."""
    return _batch_response(await _apply_rest(request, batch.events))
