"""The scale-out API node's bus: events go to Redis Streams, replies come back on this
node's own reply stream.

Submitted events are written in order, many per round trip (one pipelined batch of XADDs
at a time), to their conversation's partition stream. The entry names this node, a
request id and the source, so the worker that applies it answers here. A reply still
means what it means embedded: the event is committed to PostgreSQL. What Redis refuses is
answered ``unavailable`` at once; an event not answered within ``reply_timeout`` is
answered ``unavailable`` too (it may still be applied later: resending is safe, every
retry of a keyed event is recognised).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pydantic import TypeAdapter

from contact_center import protocol as p
from contact_center import stopping
from contact_center.applier import conversation_of, error_reply
from contact_center.buses import Source
from contact_center.streams import BLOCK_MS, Layout, read_reply

log = logging.getLogger(__name__)

_REPLY: TypeAdapter[list[tuple[str, p.Reply]]] = TypeAdapter(list[tuple[str, p.Reply]])


@dataclass(slots=True)
class _Outgoing:
    request: str
    event: p.Submitted
    source: Source
    received_at: float


class RedisBus:
    def __init__(self, redis: aioredis.Redis, layout: Layout, max_in_flight: int,
                 reply_timeout: float) -> None:
        self.redis, self.layout = redis, layout
        self.node = secrets.token_hex(8)
        self.reply_timeout = reply_timeout
        self.healthy = True
        self._room = asyncio.Semaphore(max_in_flight)
        self._waiting: dict[str, tuple[asyncio.Future[p.Reply], p.Submitted, float]] = {}
        self._outbox: list[_Outgoing] = []
        self._wake = asyncio.Event()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._reply_from = "0-0"

    @property
    def depth(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        # Replies are read from the newest entry on: older ones were another node's.
        last = await self.redis.xrevrange(self.layout.replies(self.node), count=1)
        self._reply_from = str(last[0][0]) if last else "0-0"
        self._tasks = [asyncio.create_task(self._send(), name="bus-send"),
                       asyncio.create_task(self._receive(), name="bus-receive"),
                       asyncio.create_task(self._expire(), name="bus-expire")]

    async def stop(self) -> None:
        """Stop sending and reading (within STEP_SECONDS), then answer every event still
        waiting ``unavailable``."""
        try:
            await stopping.cancel(self._tasks, "the event bus's Redis tasks")
        finally:
            self._settle_all("the API node is stopping; the event may not have been applied, "
                             "resend it")

    async def submit(self, event: p.Submitted, source: Source,
                     max_wait: float | None) -> asyncio.Future[p.Reply]:
        try:
            async with asyncio.timeout(max_wait):
                await self._room.acquire()
        except TimeoutError:
            raise p.ProtocolError(p.ErrorCode.OVERLOADED, "the pipeline is saturated; retry "
                                  "later", event.ref) from None
        future: asyncio.Future[p.Reply] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._room.release())
        request = str(next(self._ids))
        self._waiting[request] = (future, event, time.monotonic() + self.reply_timeout)
        self._outbox.append(_Outgoing(request, event, source, time.time()))
        self._wake.set()
        return future

    async def drain(self) -> None:
        while self._waiting:
            await asyncio.wait([f for f, _, _ in self._waiting.values()])

    # -- sending -------------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._outbox = self._outbox, []
            sending = []
            pipe = self.redis.pipeline(transaction=False)
            for out in batch:
                cid = conversation_of(out.event)
                if cid in out.source.refused:  # an earlier one of its events failed here
                    self._settle(out.request, self._unavailable(out.event))
                    continue
                sending.append(out)
                fields: dict[Any, Any] = {
                    "e": out.event.model_dump_json(), "n": self.node, "r": out.request,
                    "s": out.source.id, "t": repr(out.received_at)}
                if out.source.outbound:
                    fields["o"] = "1"
                pipe.xadd(self.layout.inbox(self.layout.partition_of(cid)), fields)
            if not sending:
                continue
            try:
                await pipe.execute()
                self.healthy = True
            except Exception as exc:
                if self.healthy:
                    log.warning("Redis refused events (%s); answering unavailable", exc)
                self.healthy = False
                for out in sending:
                    out.source.refused.add(conversation_of(out.event))
                    self._settle(out.request, self._unavailable(out.event))

    @staticmethod
    def _unavailable(event: p.Submitted) -> p.ErrorReply:
        return error_reply(event, p.ErrorCode.UNAVAILABLE,
                           "the event bus is unavailable; the event was not applied, retry")

    # -- replies -------------------------------------------------------------------------

    async def _receive(self) -> None:
        stream, backoff = self.layout.replies(self.node), 0.5
        while True:
            try:
                reply = await self.redis.xread({stream: self._reply_from}, count=100,
                                               block=BLOCK_MS)
                backoff = 0.5
            except Exception as exc:
                log.warning("reading replies from Redis failed (%r); retrying", exc)
                await asyncio.sleep(backoff)  # unanswered events time out meanwhile
                backoff = min(backoff * 2, 5.0)
                continue
            for _, entries in read_reply(reply):
                for entry_id, fields in entries:
                    self._reply_from = entry_id
                    try:
                        answers = _REPLY.validate_json(fields["r"])
                    except Exception:  # not expected; its events time out
                        log.exception("unreadable reply entry %s", entry_id)
                        continue
                    for request, answer in answers:
                        self._settle(request, answer)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            late = [r for r, (_, _, deadline) in self._waiting.items() if deadline <= now]
            for request in late:
                event = self._waiting[request][1]
                self._settle(request, error_reply(
                    event, p.ErrorCode.UNAVAILABLE,
                    f"no worker applied the event within {self.reply_timeout:g}s; it may "
                    "still be applied: resend it (a resent segment or keyed event is "
                    "recognised)"))

    def _settle(self, request: str, reply: p.Reply) -> None:
        waiting = self._waiting.pop(request, None)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(reply)

    def _settle_all(self, message: str) -> None:
        for request, (_, event, _) in list(self._waiting.items()):
            self._settle(request, error_reply(event, p.ErrorCode.UNAVAILABLE, message))
