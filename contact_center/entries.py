"""How a scale-out worker reads, applies and answers the entries of the partitions it
holds (`contact_center.partitions`): redelivery, dead letters and replies.

Each batch is one PostgreSQL transaction that also records how far the stream is
applied and the answers to entries not acknowledged yet, so an entry delivered again (a
worker died between commit and XACK) is not applied twice, whatever its kind, and gets
its first answer. Then the replies go to each API node's reply stream and the entries
are acknowledged and trimmed, in one Redis transaction. An entry delivered more than
DEAD_LETTER_AFTER times without being acknowledged (it keeps killing its worker) is set
aside on the dead-letter stream and answered ``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from contact_center import protocol as p
from contact_center import service_metrics as metrics
from contact_center.applier import already_applied, conversation_of, error_reply
from contact_center.buses import Delivery, Source
from contact_center.partitions import Partitions, Position, as_json, ensure_stream
from contact_center.pipeline import Pipeline
from contact_center.stores import Fenced
from contact_center.streams import (
    BLOCK_MS,
    GROUP,
    Entry,
    Fields,
    Layout,
    after,
    dumps,
    read_reply,
    stream_id,
)
from monitoring import codec

log = logging.getLogger("contact_center.worker")  # the worker's log, whichever part logs

DEAD_LETTER_AFTER = 10  # deliveries of one entry before it is set aside (each takeover
# of its partition counts one, so this stays above what lease moves alone can reach)
DEAD_LETTER_LENGTH = 10_000  # dead letters kept (approximate)
REPLY_STREAM_LENGTH = 100_000
REPLY_STREAM_SECONDS = 3600  # an API node's reply stream outlives it by this much
SOURCES_REMEMBERED = 10_000
STORE_BACKOFF_SECONDS = 0.5  # pause after a batch the store refused


class Entries:
    """The entries of the partitions held, applied in order and answered once."""

    def __init__(self, redis: aioredis.Redis, layout: Layout, worker_id: str,
                 pipeline: Pipeline, partitions: Partitions) -> None:
        self.redis, self.layout, self.id = redis, layout, worker_id
        self.pipeline, self.partitions = pipeline, partitions
        self._sources: OrderedDict[str, Source] = OrderedDict()

    async def consume(self) -> None:
        backoff = 0.5
        while True:
            try:
                for partition in [q for q, o in list(self.partitions.owned.items())
                                  if o.backlog]:
                    await self._claim_backlog(partition)
                ready = [q for q, o in self.partitions.owned.items() if not o.backlog]
                if not ready:
                    await asyncio.sleep(0.1)
                    continue
                reply = await self.redis.xreadgroup(
                    GROUP, self.id, {self.layout.inbox(q): ">" for q in ready},
                    count=self.pipeline.batch_size, block=BLOCK_MS)
                if not reply:
                    await self._look_for_strays(ready)
                for stream, entries in read_reply(reply):
                    partition = self.layout.partition_from(stream)
                    if await self._in_order(partition, entries):
                        await self._apply(partition, entries)
                backoff = 0.5
            except Exception as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    log.warning("Redis lost the consumer groups (emptied?); recreating them")
                    with contextlib.suppress(Exception):
                        await self._recover_streams()
                else:
                    log.warning("worker %s: %s; retrying in %.1fs", self.id,
                                exc if isinstance(exc, aioredis.RedisError | OSError)
                                else repr(exc), backoff, exc_info=not isinstance(
                                    exc, aioredis.RedisError | OSError))
                for owned in self.partitions.owned.values():
                    owned.backlog = True  # what was read but not acknowledged is pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _in_order(self, partition: int, entries: list[tuple[str, Fields]]) -> bool:
        """Whether nothing older than these new entries is still pending: a read the
        partition's previous owner had in flight when it let go may have taken one.
        If so, the backlog pass claims it and applies everything in order."""
        if partition not in self.partitions.owned or not entries:
            return False
        summary = await self.redis.xpending(self.layout.inbox(partition), GROUP)
        oldest = summary.get("min")
        if oldest and stream_id(str(oldest)) < stream_id(entries[0][0]):
            self.partitions.owned[partition].backlog = True
            return False
        return True

    async def _look_for_strays(self, partitions: list[int]) -> None:
        """On a quiet moment: entries still pending on these partitions were taken by
        a reader that let go (or not acknowledged here); claim and answer them now,
        not when the next new entry comes."""
        pipe = self.redis.pipeline(transaction=False)
        for partition in partitions:
            pipe.xpending(self.layout.inbox(partition), GROUP)
        for partition, summary in zip(partitions, await pipe.execute(), strict=True):
            if summary.get("pending") and partition in self.partitions.owned:
                self.partitions.owned[partition].backlog = True

    async def _recover_streams(self) -> None:
        for partition, owned in list(self.partitions.owned.items()):
            epoch = await ensure_stream(self.redis, self.layout, partition)
            if epoch != owned.epoch:
                owned.epoch, owned.through, owned.replies = epoch, None, {}
            owned.backlog = True

    async def _claim_backlog(self, partition: int) -> None:
        """Apply the partition's pending entries, oldest first, before any new one."""
        inbox, cursor = self.layout.inbox(partition), "0-0"
        while partition in self.partitions.owned:
            cursor, entries, _deleted = await self.redis.xautoclaim(
                inbox, GROUP, self.id, min_idle_time=0, start_id=cursor,
                count=self.pipeline.batch_size)
            if entries:
                await self._apply(partition, await self._set_aside_poison(partition, entries))
            if cursor == "0-0":
                if partition in self.partitions.owned:
                    self.partitions.owned[partition].backlog = False
                return

    async def _set_aside_poison(self, partition: int, entries: list[Entry]) -> list[Entry]:
        """Move entries delivered too often to the dead-letter stream; returns the rest."""
        inbox = self.layout.inbox(partition)
        pending = await self.redis.xpending_range(inbox, GROUP, min=entries[0][0],
                                                  max=entries[-1][0], count=len(entries))
        deliveries = {str(row["message_id"]): int(row["times_delivered"]) for row in pending}
        owned = self.partitions.owned.get(partition)
        through = stream_id(owned.through) if owned and owned.through else (0, -1)
        poison = [(i, f) for i, f in entries if f is not None  # (applied ones are answered)
                  and deliveries.get(i, 0) > DEAD_LETTER_AFTER and stream_id(i) > through]
        if not poison:
            return entries
        pipe = self.redis.pipeline(transaction=True)
        replies: dict[str, list[Any]] = {}
        for entry_id, fields in poison:
            count = deliveries[entry_id]
            log.error("entry %s of partition %d was delivered %d times; moved to %s",
                      entry_id, partition, count, self.layout.dead)
            dead: dict[Any, Any] = {**fields, "partition": partition, "entry": entry_id,
                                    "deliveries": count, "at": time.time()}
            pipe.xadd(self.layout.dead, dead, maxlen=DEAD_LETTER_LENGTH, approximate=True)
            pipe.xack(inbox, GROUP, entry_id)
            reply = p.ErrorReply(code=p.ErrorCode.INTERNAL_ERROR, message=(
                f"the event failed {count} times and was set aside as dead letter "
                f"{partition}/{entry_id}; it was not applied"))
            with contextlib.suppress(p.ProtocolError):
                event = p.parse_submitted(fields["e"])
                reply = error_reply(event, reply.code, reply.message)
                # Like any refused event: its source's later ones wait for a resend.
                self._source(fields["s"]).refused.add(conversation_of(event))
            replies.setdefault(fields["n"], []).append([fields["r"], as_json(reply)])
        self._send_replies(pipe, replies)
        await pipe.execute()
        metrics.DEAD_LETTERS.inc(len(poison))
        ids = {i for i, _ in poison}
        return [(i, f) for i, f in entries if i not in ids]

    async def _apply(self, partition: int, entries: Sequence[Entry]) -> None:
        owned = self.partitions.owned.get(partition)
        if owned is None or not entries:
            return  # no longer ours: the entries stay pending for the next owner
        loop = asyncio.get_running_loop()
        answered: list[tuple[dict[str, str], dict[str, Any]]] = []
        deliveries: list[tuple[str, dict[str, str], Delivery]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted: nothing left to apply
                continue
            try:
                event = p.parse_submitted(fields["e"])
            except p.ProtocolError as exc:  # an API node validated it; not expected
                answered.append((fields, as_json(p.ErrorReply.of(exc))))
                continue
            if owned.through is not None and stream_id(entry_id) <= stream_id(owned.through):
                # Applied before (its worker died before answering): the same answer.
                answered.append((fields, owned.replies.get(entry_id)
                                 or as_json(already_applied(event))))
                continue
            deliveries.append((entry_id, fields, Delivery(
                event, self._source(fields["s"], fields.get("o") == "1"), float(fields["t"]),
                loop.create_future())))
        last, committed = entries[-1][0], True
        if deliveries:
            position = Position(partition, [i for i, _, _ in deliveries], last)
            try:
                committed = await self.pipeline.handle([d for _, _, d in deliveries], position)
            except Fenced as exc:
                self.partitions.lose(exc.partitions)
                return
            results = [as_json(d.reply.result()) for _, _, d in deliveries]
            if committed and partition in self.partitions.owned:
                # Kept (and recorded with each batch) until acknowledged, for redelivery.
                self.partitions.owned[partition].through = last
                self.partitions.owned[partition].replies.update(
                    zip([i for i, _, _ in deliveries], results, strict=True))
            answered += zip([f for _, f, _ in deliveries], results, strict=True)
        replies: dict[str, list[Any]] = {}
        for fields, reply in answered:
            replies.setdefault(fields["n"], []).append([fields["r"], reply])
        # One transaction: no entry is acknowledged unless its reply was written too (a
        # Redis out of memory refuses the whole of it).
        pipe = self.redis.pipeline(transaction=True)
        self._send_replies(pipe, replies)
        inbox = self.layout.inbox(partition)
        pipe.xack(inbox, GROUP, *[entry_id for entry_id, _ in entries])
        # Everything up to ``last`` is applied and acknowledged: trimming it loses nothing.
        pipe.xtrim(inbox, minid=after(last), approximate=True)
        await pipe.execute()
        if partition in self.partitions.owned:
            for entry_id, _ in entries:
                self.partitions.owned[partition].replies.pop(entry_id, None)
        if deliveries and not committed:
            await asyncio.sleep(STORE_BACKOFF_SECONDS)  # no hot loop while the store is down

    def _send_replies(self, pipe: Any, replies: dict[str, list[Any]]) -> None:
        for node, answers in replies.items():
            stream = self.layout.replies(node)
            pipe.xadd(stream, {"r": dumps(answers)}, maxlen=REPLY_STREAM_LENGTH,
                      approximate=True)
            pipe.expire(stream, REPLY_STREAM_SECONDS)

    def _source(self, source_id: str, outbound: bool = False) -> Source:
        """The source of that id (refusals are remembered per source)."""
        source = self._sources.get(source_id)
        if source is None:
            source = self._sources[source_id] = Source(id=source_id, outbound=outbound)
            while len(self._sources) > SOURCES_REMEMBERED:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source_id)
        return source


def dead_letter(letter_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A dead-letter entry as the admin API shows it."""
    try:
        event: Any = codec.loads(fields["e"])
    except ValueError:
        event = fields["e"]
    return {"id": letter_id, "partition": int(fields["partition"]), "entry": fields["entry"],
            "deliveries": int(fields["deliveries"]), "at": float(fields["at"]),
            "event": event, "node": fields["n"], "request": fields["r"]}
