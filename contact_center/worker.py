"""A scale-out pipeline worker: applies the events of the partitions it holds.

For each partition it takes over (`leases`), in order:
1. claim the partition's fencing token in PostgreSQL; from then on a batch committed by
   any earlier owner fails, so nothing it does after losing the lease can land;
2. load the partition's live conversations (rule state, streaks, waits, counts) from
   PostgreSQL, and rewrite what Redis lost of their live view;
3. claim every pending entry of the stream (XAUTOCLAIM), apply them, then read new ones.

Each batch is one PostgreSQL transaction that also records how far the stream is
applied, so an entry delivered again (a worker died between commit and XACK) is
answered ``duplicate`` and not applied twice, whatever its kind. Then the replies go to
each API node's reply stream and the entries are acknowledged and trimmed, in one round
trip. An entry delivered DEAD_LETTER_AFTER times without being acknowledged (it keeps
killing its worker) is set aside on the dead-letter stream and answered
``internal_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer
from contact_center import protocol as p
from contact_center.applier import Effects, already_applied, error_reply
from contact_center.buses import Delivery, Source
from contact_center.leases import HEARTBEAT_SECONDS, LEASE_MS, Leases, assign
from contact_center.pipeline import Pipeline
from contact_center.store import Fenced, PartitionedStore, PartitionMark
from contact_center.streams import (
    BLOCK_MS,
    GROUP,
    Entry,
    Layout,
    after,
    dumps,
    read_reply,
    stream_id,
)
from monitoring.feeds.redis import RedisOutlet

log = logging.getLogger(__name__)

DEAD_LETTER_AFTER = 5  # deliveries of one entry before it is set aside
DEAD_LETTER_LENGTH = 10_000  # dead letters kept (approximate)
REPLY_STREAM_LENGTH = 100_000
REPLY_STREAM_SECONDS = 3600  # an API node's reply stream outlives it by this much
SOURCES_REMEMBERED = 10_000
RULES_CHECK_SECONDS = 5.0
STORE_BACKOFF_SECONDS = 0.5  # pause after a batch the store refused


@dataclass(slots=True)
class Owned:
    token: int  # this worker's fencing token for the partition
    epoch: str  # the Redis streams' epoch the applied position belongs to
    through: str | None  # last entry applied (of this epoch)
    backlog: bool = True  # pending entries to claim before reading new ones


class Worker:
    def __init__(self, store: PartitionedStore, redis: aioredis.Redis, layout: Layout,
                 rules: RuleSet, rolling: RollingConfig, batch_size: int = 500,
                 scorer: Scorer | None = None) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store, self.redis, self.layout = store, redis, layout
        self.outlet = RedisOutlet(redis, layout)
        self.pipeline = Pipeline(store, self.outlet, rules, rolling, batch_size, scorer,
                                 marker=self._marks)
        self.pipeline.on_fenced = lambda exc: self._lose(exc.partitions)
        self.leases = Leases(redis, layout, self.id)
        self.owned: dict[int, Owned] = {}
        self.healthy = True
        self._batch: tuple[int, str] | None = None  # partition and last entry being applied
        self._sources: OrderedDict[str, Source] = OrderedDict()
        self._renewed_at = 0.0

    async def run(self) -> None:
        """Work until cancelled; then hand the partitions back at once."""
        tasks = [asyncio.create_task(self._hold_leases(), name="worker-leases"),
                 asyncio.create_task(self._consume(), name="worker-consume"),
                 asyncio.create_task(self.pipeline.clock(), name="worker-clock"),
                 asyncio.create_task(self._follow_rules(), name="worker-rules")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                async with self.pipeline.lock:
                    for partition in list(self.owned):
                        await self.leases.release(partition)
                    await self.leases.leave()

    # -- partitions ------------------------------------------------------------------------

    async def _hold_leases(self) -> None:
        while True:
            try:
                await self._balance()
                self._renewed_at = time.monotonic()
                self.healthy = True
            except (aioredis.RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("worker %s cannot reach Redis (%s); retrying", self.id, exc)
                self.healthy = False
                if self.owned and time.monotonic() - self._renewed_at > LEASE_MS / 1000:
                    self._lose(set(self.owned))  # the leases have lapsed by now
            except Exception:
                log.exception("worker %s: taking partitions failed; retrying", self.id)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _balance(self) -> None:
        workers = await self.leases.heartbeat()
        mine = {p for p, w in assign(workers, self.layout.partitions).items() if w == self.id}
        held = list(self.owned)
        kept = await self.leases.renew(held)
        self._lose(set(held) - kept)
        for partition in sorted(kept - mine):  # another worker's share now
            async with self.pipeline.lock:
                self._drop(partition)
            await self.leases.release(partition)
        for partition in sorted(mine - set(self.owned)):
            if await self.leases.acquire(partition):
                try:
                    await self._take(partition)
                except BaseException:
                    await self.leases.release(partition)
                    raise

    async def _take(self, partition: int) -> None:
        claim = await self.store.claim_partition(partition)
        epoch = await self._ensure_stream(partition)
        through = None
        if claim.applied_through and claim.applied_through.startswith(epoch + "/"):
            through = claim.applied_through.split("/", 1)[1]
        ids = [cid for cid in await self.store.live_conversation_ids()
               if self.layout.partition_of(cid) == partition]
        async with self.pipeline.lock:
            stored = await self.store.load_conversations(ids)
            for conversation in stored:
                self.pipeline.applier.restore(conversation)
            self.owned[partition] = Owned(claim.token, epoch, through)
        restored = [self.pipeline.conversations[c.meta["id"]] for c in stored
                    if c.meta["id"] in self.pipeline.conversations]
        await self.outlet.restored(restored)
        log.info("worker %s took partition %d (token %d, %d live conversations)",
                 self.id, partition, claim.token, len(restored))

    def _drop(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.pipeline.applier.drop([cid for cid in self.pipeline.conversations
                                    if self.layout.partition_of(cid) == partition])

    def _lose(self, partitions: set[int]) -> None:
        for partition in partitions:
            if partition in self.owned:
                log.warning("worker %s lost partition %d", self.id, partition)
                self._drop(partition)

    async def _ensure_stream(self, partition: int) -> str:
        """The partition's stream and consumer group (from its first entry, so an emptied
        Redis loses nothing added since); returns the streams' epoch."""
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.layout.inbox(partition), GROUP, id="0",
                                           mkstream=True)
        await self.redis.set(f"{self.layout.namespace}:epoch", secrets.token_hex(8), nx=True)
        return str(await self.redis.get(f"{self.layout.namespace}:epoch"))

    def _marks(self, effects: Effects) -> list[PartitionMark]:
        partitions = {self.layout.partition_of(cid) for cid in effects.touched}
        if self._batch is not None:
            partitions.add(self._batch[0])
        marks = []
        for partition in partitions:
            owned = self.owned.get(partition)
            if owned is None:
                raise Fenced({partition})
            through = None
            if self._batch is not None and self._batch[0] == partition:
                through = f"{owned.epoch}/{self._batch[1]}"
            marks.append(PartitionMark(partition, owned.token, through))
        return marks

    # -- entries ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        backoff = 0.5
        while True:
            try:
                for partition in [q for q, o in list(self.owned.items()) if o.backlog]:
                    await self._claim_backlog(partition)
                ready = [q for q, o in self.owned.items() if not o.backlog]
                if not ready:
                    await asyncio.sleep(0.1)
                    continue
                reply = await self.redis.xreadgroup(
                    GROUP, self.id, {self.layout.inbox(q): ">" for q in ready},
                    count=self.pipeline.batch_size, block=BLOCK_MS)
                for stream, entries in read_reply(reply):
                    await self._apply(self.layout.partition_from(stream), entries)
                backoff = 0.5
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("Redis lost the consumer groups (emptied?); recreating them")
                await self._recover_streams()
            except (aioredis.RedisError, OSError) as exc:
                log.warning("worker %s: Redis error (%s); retrying in %.1fs", self.id, exc,
                            backoff)
                for owned in self.owned.values():
                    owned.backlog = True  # what was read but not acknowledged is pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _recover_streams(self) -> None:
        for partition, owned in list(self.owned.items()):
            epoch = await self._ensure_stream(partition)
            if epoch != owned.epoch:
                owned.epoch, owned.through = epoch, None
            owned.backlog = True

    async def _claim_backlog(self, partition: int) -> None:
        """Apply the partition's pending entries, oldest first, before any new one."""
        inbox, cursor = self.layout.inbox(partition), "0-0"
        while partition in self.owned:
            cursor, entries, _deleted = await self.redis.xautoclaim(
                inbox, GROUP, self.id, min_idle_time=0, start_id=cursor,
                count=self.pipeline.batch_size)
            if entries:
                await self._apply(partition, await self._set_aside_poison(partition, entries))
            if cursor == "0-0":
                if partition in self.owned:
                    self.owned[partition].backlog = False
                return

    async def _set_aside_poison(self, partition: int, entries: list[Entry]) -> list[Entry]:
        """Move entries delivered too often to the dead-letter stream; returns the rest."""
        inbox = self.layout.inbox(partition)
        pending = await self.redis.xpending_range(inbox, GROUP, min=entries[0][0],
                                                  max=entries[-1][0], count=len(entries))
        deliveries = {str(row["message_id"]): int(row["times_delivered"]) for row in pending}
        poison = [(i, f) for i, f in entries if f is not None
                  and deliveries.get(i, 0) > DEAD_LETTER_AFTER]
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
                event = p.parse_event(fields["e"])
                reply = error_reply(event, reply.code, reply.message)
            replies.setdefault(fields["n"], []).append([fields["r"], _as_json(reply)])
        self._send_replies(pipe, replies)
        await pipe.execute()
        ids = {i for i, _ in poison}
        return [(i, f) for i, f in entries if i not in ids]

    async def _apply(self, partition: int, entries: Sequence[Entry]) -> None:
        owned = self.owned.get(partition)
        if owned is None or not entries:
            return  # no longer ours: the entries stay pending for the next owner
        loop = asyncio.get_running_loop()
        answered: list[tuple[dict[str, str], p.Reply]] = []
        deliveries: list[tuple[dict[str, str], Delivery]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted: nothing left to apply
                continue
            try:
                event = p.parse_event(fields["e"])
            except p.ProtocolError as exc:  # an API node validated it; not expected
                answered.append((fields, p.ErrorReply.of(exc)))
                continue
            if owned.through is not None and stream_id(entry_id) <= stream_id(owned.through):
                answered.append((fields, already_applied(event)))
                continue
            deliveries.append((fields, Delivery(event, self._source(fields["s"]),
                                                float(fields["t"]), loop.create_future())))
        last, committed = entries[-1][0], True
        if deliveries:
            self._batch = (partition, last)
            try:
                committed = await self.pipeline.handle([d for _, d in deliveries])
            except Fenced as exc:
                self._lose(exc.partitions)
                return
            finally:
                self._batch = None
            if committed and partition in self.owned:
                self.owned[partition].through = last
        replies: dict[str, list[Any]] = {}
        for fields, reply in [*answered, *((f, d.reply.result()) for f, d in deliveries)]:
            replies.setdefault(fields["n"], []).append([fields["r"], _as_json(reply)])
        pipe = self.redis.pipeline(transaction=False)
        self._send_replies(pipe, replies)
        inbox = self.layout.inbox(partition)
        pipe.xack(inbox, GROUP, *[entry_id for entry_id, _ in entries])
        # Everything up to ``last`` is applied and acknowledged: trimming it loses nothing.
        pipe.xtrim(inbox, minid=after(last), approximate=True)
        await pipe.execute()
        if deliveries and not committed:
            await asyncio.sleep(STORE_BACKOFF_SECONDS)  # no hot loop while the store is down

    def _send_replies(self, pipe: Any, replies: dict[str, list[Any]]) -> None:
        for node, answers in replies.items():
            stream = self.layout.replies(node)
            pipe.xadd(stream, {"r": dumps(answers)}, maxlen=REPLY_STREAM_LENGTH,
                      approximate=True)
            pipe.expire(stream, REPLY_STREAM_SECONDS)

    def _source(self, source_id: str) -> Source:
        """The source of that id (refusals are remembered per source)."""
        source = self._sources.get(source_id)
        if source is None:
            source = self._sources[source_id] = Source(id=source_id)
            while len(self._sources) > SOURCES_REMEMBERED:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source_id)
        return source

    # -- rules -------------------------------------------------------------------------------

    async def _follow_rules(self) -> None:
        """Apply the rule set API nodes saved: told over pub/sub, checked every few seconds
        in case a message was missed."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.layout.rules_changed)
                while True:
                    await self._reload_rules()
                    await pubsub.get_message(ignore_subscribe_messages=True,
                                             timeout=RULES_CHECK_SECONDS)
            except (aioredis.RedisError, OSError):
                await asyncio.sleep(RULES_CHECK_SECONDS)
            except Exception:
                log.exception("reloading the rules failed")
                await asyncio.sleep(RULES_CHECK_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _reload_rules(self) -> None:
        document = await self.store.load_rules()
        if document is None:
            return
        rules = RuleSet.model_validate(document)
        if rules != self.pipeline.rules:
            await self.pipeline.change_rules(rules)
            log.info("worker %s applies the changed rules", self.id)


def _as_json(reply: p.Reply) -> dict[str, Any]:
    return reply.model_dump(mode="json", exclude_none=True)


def dead_letter(letter_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A dead-letter entry as the admin API shows it."""
    try:
        event: Any = json.loads(fields["e"])
    except ValueError:
        event = fields["e"]
    return {"id": letter_id, "partition": int(fields["partition"]), "entry": fields["entry"],
            "deliveries": int(fields["deliveries"]), "at": float(fields["at"]),
            "event": event, "node": fields["n"], "request": fields["r"]}
