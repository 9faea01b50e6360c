"""Ingest: the connector-facing WebSocket and REST routes.

Every event gets exactly one reply, in the order received: an ack once the pipeline
has durably applied it, or an error with a stable code. A bad event never closes the
socket; it only earns its own error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from contact_center import protocol as p
from contact_center import service_metrics as metrics
from contact_center.api.auth import accept, authorize_websocket, deny, require
from contact_center.api.openapi import COMMON, Error, Responses
from contact_center.api.outbound import Outbound
from contact_center.api.sockets import MAX_FRAME_BYTES as SOCKET_FRAME_BYTES
from contact_center.applier import conversation_of
from contact_center.buses import Bus, Source
from monitoring.permissions import Permission

router = APIRouter(tags=["ingest"], responses=COMMON)

Pending = asyncio.Queue["asyncio.Future[p.Reply] | p.Reply"]


def _count(reply: p.Reply, started: float) -> None:
    metrics.count_reply(reply.code if isinstance(reply, p.ErrorReply) else "",
                        time.perf_counter() - started)


def _counted(answer: asyncio.Future[p.Reply] | p.Reply,
             started: float) -> asyncio.Future[p.Reply] | p.Reply:
    """Count the reply, by status and code, and its latency, once it is known."""
    if isinstance(answer, asyncio.Future):
        answer.add_done_callback(functools.partial(_count_settled, started=started))
    else:
        _count(answer, started)
    return answer


def _count_settled(future: asyncio.Future[p.Reply], started: float) -> None:
    if not future.cancelled() and future.exception() is None:
        _count(future.result(), started)


def _encode(reply: p.Reply) -> str:
    return reply.model_dump_json(exclude_none=True)


# After one of these the connection is closed: the connector resends from the first event
# it has no ack for (nothing after it was applied either).
RESEND_FROM_HERE = {p.ErrorCode.UNAVAILABLE, p.ErrorCode.INTERNAL_ERROR,
                    p.ErrorCode.RATE_LIMITED}
SEND_TIMEOUT = 10.0  # seconds the replies before a rate_limited one get to go out
OUTBOUND_VALUES = {"true": True, "1": True, "false": False, "0": False}
# `?replies=batched`: the replies settled together go out as one frame (fewer frames for
# a connector with many events in flight; the same replies, in the same order).
REPLIES_VALUES = {"single", "batched"}
# The most a batched frame holds (a larger single reply, which none is, would go alone):
# 64 KiB, as a connector's own frames (`max_message_bytes`), so a client sized for what it
# sends takes what it reads; pushes batched likewise.
MAX_FRAME_BYTES = SOCKET_FRAME_BYTES
REPLIES_FRAME = '{{"type":"replies","replies":[{}]}}'


async def _send_replies(ws: WebSocket, pending: Pending, outbound: Outbound | None,
                        batched: bool) -> None:
    """Send each reply as it settles, in order; ``batched``: with those settled behind it,
    in one frame."""
    carried: asyncio.Future[p.Reply] | p.Reply | None = None
    while True:
        item = carried if carried is not None else await pending.get()
        first = await item if isinstance(item, asyncio.Future) else item
        if batched:
            replies, texts, carried = _settled_after(first, pending)
            text = REPLIES_FRAME.format(",".join(texts))
        else:
            replies, text = [first], _encode(first)
        if outbound is None:
            closed = await _send_frame(ws, text, replies[-1])
        else:
            async with outbound.lock:  # (pushes share the socket; none after a close)
                closed = await _send_frame(ws, text, replies[-1])
            for reply in replies:
                outbound.replied(reply)
        if closed:
            return


def _settled_after(first: p.Reply, pending: Pending) -> tuple[
        list[p.Reply], list[str], asyncio.Future[p.Reply] | p.Reply | None]:
    """``first`` and the replies already settled behind it, encoded, as many as fit in
    MAX_FRAME_BYTES, up to one that closes the socket; and the next item of ``pending``
    if it was taken but is not in the frame (not settled yet, or too large for it)."""
    replies, texts = [first], [_encode(first)]
    size = len(REPLIES_FRAME.format(texts[0]).encode())
    while not _closes_socket(replies[-1]) and not pending.empty():
        item = pending.get_nowait()
        if isinstance(item, asyncio.Future):
            if not item.done():
                return replies, texts, item
            item = item.result()
        text = _encode(item)
        size += 1 + len(text.encode())
        if size > MAX_FRAME_BYTES:
            return replies, texts, item
        replies.append(item)
        texts.append(text)
    return replies, texts, None


async def _send_frame(ws: WebSocket, text: str, last: p.Reply) -> bool:
    """Send a frame of replies ending with ``last``; close the socket if ``last`` says
    so (whether it did)."""
    await ws.send_text(text)
    if not _closes_socket(last):
        return False
    # 1013: try again later (after a pause); 1011: the server failed
    code = last.code  # type: ignore[union-attr]
    await ws.close(1013 if code == p.ErrorCode.RATE_LIMITED else 1011,
                   "resend from the first unacknowledged event")
    return True


def _closes_socket(reply: p.Reply) -> bool:
    """Whether the socket closes after this reply (the connector resends from it)."""
    return isinstance(reply, p.ErrorReply) and reply.code in RESEND_FROM_HERE


async def _submit(bus: Bus, source: Source, raw: str | bytes, limit: int,
                  outbound: Outbound | None = None) -> asyncio.Future[p.Reply] | p.Reply:
    started = time.perf_counter()
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    try:
        if size > limit:
            raise p.ProtocolError(p.ErrorCode.MESSAGE_TOO_LARGE,
                                  f"message is {size} bytes; the limit is {limit}")
        event = p.parse_event(raw)
    except p.ProtocolError as exc:
        metrics.count_event("invalid")
        return _counted(p.ErrorReply.of(exc), started)
    metrics.count_event(event.type)
    if outbound is not None:
        outbound.follow(conversation_of(event))
    try:
        # No deadline: a socket waits for room, so its events stay in order and TCP
        # pushes back on the connector.
        return _counted(await bus.submit(event, source, max_wait=None), started)
    except p.ProtocolError as exc:
        return _counted(p.ErrorReply.of(exc), started)


async def _read_events(ws: WebSocket, pending: Pending, bus: Bus, limit: int,
                       outbound: Outbound | None) -> bool:
    """Read and submit events until the client leaves (False) or sends faster than its
    allowance (True: the last reply queued is its ``rate_limited``; nothing after it is
    read, so the connector resends in order from there)."""
    source = Source(outbound=outbound is not None)
    allowance = ws.app.state.limits.message_bucket(time.monotonic())
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return False
        if not allowance.take(time.monotonic()):
            metrics.REFUSED.labels("rate_limited").inc()
            raw = message.get("text") or message.get("bytes") or ""
            await pending.put(_counted(p.ErrorReply(
                code=p.ErrorCode.RATE_LIMITED, ref=p.ref_of(raw),
                message=f"more than {allowance.rate:g} messages a second on one socket; "
                        "this event was not applied: reconnect after a pause and resend "
                        "from it"), time.perf_counter()))
            return True
        raw = message.get("text") if message.get("text") is not None else message.get("bytes")
        await pending.put(await _submit(bus, source, raw or "", limit, outbound))


@router.websocket("/v1/ingest")
async def ingest_socket(ws: WebSocket) -> None:
    """Connectors stream events here; with ``?outbound=true`` they are also sent what
    supervisors do in their conversations; see docs/protocol.md."""
    principal = await authorize_websocket(ws, Permission.INGEST)
    if principal is None:
        return
    wanted = ws.query_params.get("outbound", "false")
    replies_as = ws.query_params.get("replies", "single")
    if wanted not in OUTBOUND_VALUES or replies_as not in REPLIES_VALUES:
        await deny(ws, 422, {"type": "error", "code": "validation_error",
                             "message": "outbound must be true or false, and replies "
                                        "single or batched"})
        return
    settings, bus = ws.app.state.settings, ws.app.state.bus
    await accept(ws)
    outbound = Outbound(ws.app.state.hub) if OUTBOUND_VALUES[wanted] else None
    hello: dict[str, Any] = {"type": "hello", "protocol": p.PROTOCOL_VERSION,
                             "max_message_bytes": settings.max_message_bytes}
    if outbound is not None:
        hello["outbound"] = True
    batched = replies_as == "batched"
    if batched:
        hello["replies"] = "batched"
    await ws.send_json(hello)
    # Bounded: once `ingest_window` events await their reply, reading pauses and TCP
    # pushes back on the connector.
    pending: Pending = asyncio.Queue(settings.ingest_window)
    open_sockets = metrics.CONNECTIONS.labels("ingest")
    open_sockets.inc()
    tasks = [asyncio.create_task(_read_events(ws, pending, bus, settings.max_message_bytes,
                                              outbound)),
             asyncio.create_task(_send_replies(ws, pending, outbound, batched))]
    if outbound is not None:
        tasks.append(asyncio.create_task(outbound.push(ws)))
    # A revoked token or a disabled connector user closes the socket (`open_sockets`).
    held = ws.app.state.open_sockets.hold(ws, principal, Permission.INGEST)
    revoked = asyncio.create_task(held.closed())
    tasks.append(revoked)
    reader, sender = tasks[:2]
    try:
        # Whichever side stops first (the client left, a send failed) ends both; but
        # a rate-limited reader waits for its replies to go out, its refusal last.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and not reader.cancelled() and reader.exception() is None \
                and reader.result():
            with contextlib.suppress(Exception):  # (the client may be gone meanwhile)
                async with asyncio.timeout(SEND_TIMEOUT):
                    await sender
        elif revoked.done():
            with contextlib.suppress(Exception):  # (the client may be gone meanwhile)
                async with asyncio.timeout(SEND_TIMEOUT):
                    await ws.close(*revoked.result())
    finally:
        ws.app.state.open_sockets.release(held)
        open_sockets.dec()
        if outbound is not None:
            outbound.close()
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


# A batch whose every event failed for one reason answers that reason's status, with the
# results as ever. (A 500 or 503 may also come from the app itself: then an `Error`.)
_BATCH_FAILED: Responses = {
    404: {"model": BatchResult, "description": "every event: unknown_conversation"},
    409: {"model": BatchResult, "description": "every event: conversation_ended"},
    500: {"model": BatchResult | Error, "description": "every event: internal_error (a bug; "
                                                       "report it if it persists)"},
    503: {"model": BatchResult | Error,
          "description": "every event: overloaded or unavailable; nothing from the first "
                         "refused event on was applied: resend from there, with the same ids"},
}
# The same for the one event of `POST /v1/conversations`, answered as the error reply.
_START_FAILED: Responses = {
    500: {"model": p.ErrorReply | Error, "description": "internal_error: a bug"},
    503: {"model": p.ErrorReply | Error,
          "description": "overloaded or unavailable: not started; retry"},
}


async def _apply_all(bus: Bus, events: list[Any], max_wait: float) -> list[p.Reply]:
    """Submit a batch in order within one deadline. Once one event is refused as
    overloaded, the rest are too, so a retry from that point keeps the order."""
    deadline = asyncio.get_running_loop().time() + max_wait
    started = time.perf_counter()
    source = Source()
    futures: list[asyncio.Future[p.Reply] | p.Reply] = []
    for event in events:
        metrics.count_event(event.type)
        if futures and isinstance(futures[-1], p.ErrorReply):
            futures.append(_counted(futures[-1].model_copy(update={"ref": event.ref}),
                                    started))
            continue
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            futures.append(_counted(await bus.submit(event, source, max_wait=left), started))
        except p.ProtocolError as exc:
            futures.append(_counted(p.ErrorReply.of(exc), started))
    return [await f if isinstance(f, asyncio.Future) else f for f in futures]


async def _apply_rest(request: Request, events: list[Any]) -> list[p.Reply]:
    settings = request.app.state.settings
    return await _apply_all(request.app.state.bus, events, settings.submit_timeout_seconds)


def _status_for(results: list[p.Reply]) -> int:
    """A batch that failed as a whole for one reason gets that reason's status."""
    codes = {r.code for r in results if isinstance(r, p.ErrorReply)}
    if len(codes) == 1 and all(isinstance(r, p.ErrorReply) for r in results):
        # No other code reaches a REST event: its body was validated whole before.
        return {p.ErrorCode.UNKNOWN_CONVERSATION: 404, p.ErrorCode.CONVERSATION_ENDED: 409,
                p.ErrorCode.OVERLOADED: 503, p.ErrorCode.UNAVAILABLE: 503,
                p.ErrorCode.INTERNAL_ERROR: 500}.get(codes.pop(), 500)
    return 200


def _batch_response(results: list[p.Reply]) -> JSONResponse:
    body = BatchResult(results=results).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=_status_for(results))


@router.post("/v1/conversations", status_code=201, response_model=ConversationCreated,
             responses={200: {"model": ConversationCreated,
                              "description": "Already started (an idempotent retry)"},
                        **_START_FAILED})
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


@router.post("/v1/conversations/{conversation_id}/segments", response_model=BatchResult,
             responses=_BATCH_FAILED)
async def post_segments(request: Request, conversation_id: p.Id, batch: SegmentBatch,
                        _: Any = require(Permission.INGEST)) -> JSONResponse:
    """Post a batch of segments; each gets its own result, in order."""
    events = [p.Segment(conversation_id=conversation_id, **s.model_dump())
              for s in batch.segments]
    return _batch_response(await _apply_rest(request, events))


@router.post("/v1/events", response_model=BatchResult, responses=_BATCH_FAILED)
async def post_events(request: Request, batch: EventBatch,
                      _: Any = require(Permission.INGEST)) -> JSONResponse:
    """Post any protocol events (the same JSON as on the socket); results are in order."""
    return _batch_response(await _apply_rest(request, batch.events))
