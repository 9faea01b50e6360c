"""A scale-out pipeline worker: applies the events of the partitions it holds.

For each partition it takes over (`leases`), in order:
1. claim the partition's fencing token in PostgreSQL; from then on a batch committed by
   any earlier owner fails, so nothing it does after losing the lease can land;
2. load the partition's live conversations (rule state, streaks, waits, counts) from
   PostgreSQL, and rewrite what Redis lost of their live view;
3. claim every pending entry of the stream (XAUTOCLAIM), apply them, then read new ones.

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
from contact_center import service_metrics as metrics
from contact_center.applier import Effects, already_applied, conversation_of, error_reply
from contact_center.buses import Delivery, Source
from contact_center.leases import HEARTBEAT_SECONDS, LEASE_MS, Leases, assign
from contact_center.pipeline import Pipeline, bulk_load
from contact_center.stores import Fenced, PartitionedStore, PartitionMark
from contact_center.streams import (
    BLOCK_MS,
    GROUP,
    Entry,
    Fields,
    Layout,
    after,
    dumps,
    fingerprint,
    read_reply,
    stream_id,
)
from monitoring import codec
from monitoring.feeds.redis import RedisOutlet

log = logging.getLogger(__name__)

DEAD_LETTER_AFTER = 10  # deliveries of one entry before it is set aside (each takeover
# of its partition counts one, so this stays above what lease moves alone can reach)
DEAD_LETTER_LENGTH = 10_000  # dead letters kept (approximate)
REPLY_STREAM_LENGTH = 100_000
REPLY_STREAM_SECONDS = 3600  # an API node's reply stream outlives it by this much
SOURCES_REMEMBERED = 10_000
RULES_CHECK_SECONDS = 5.0
STORE_BACKOFF_SECONDS = 0.5  # pause after a batch the store refused
STOP_SECONDS = 5.0  # at most this long to hand partitions back when stopping
RESTORE_SECONDS = 5.0  # at most this long to rewrite live views, holding the lock

_DELETE_IDLE_CONSUMER = """
local pending = redis.call('xpending', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending == 0 then return redis.call('xgroup', 'delconsumer', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


@dataclass(slots=True)
class Owned:
    token: int  # this worker's fencing token for the partition
    epoch: str  # the Redis streams' epoch the applied position belongs to
    through: str | None  # last entry applied (of this epoch)
    replies: dict[str, Any]  # entry id -> reply, for applied entries not acknowledged yet
    backlog: bool = True  # pending entries to claim before reading new ones


@dataclass(frozen=True, slots=True)
class Position:
    """A batch's place in its partition's stream, which its commit records."""

    partition: int
    entries: list[str]  # the entry ids of the batch's deliveries, in order
    last: str  # the last entry id of the batch (delivered or not)


class Worker:
    def __init__(self, store: PartitionedStore, redis: aioredis.Redis, layout: Layout,
                 rules: RuleSet, rolling: RollingConfig, batch_size: int = 500,
                 scorer: Scorer | None = None, freeze: bool = True) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store, self.redis, self.layout = store, redis, layout
        self.outlet = RedisOutlet(redis, layout)
        self.pipeline = Pipeline(store, self.outlet, rules, rolling, batch_size, scorer,
                                 marker=self._marks, freeze=freeze)
        self.pipeline.on_fenced = lambda exc: self._lose(exc.partitions)
        self.leases = Leases(redis, layout, self.id)
        self.owned: dict[int, Owned] = {}
        self.healthy = True
        self._sources: OrderedDict[str, Source] = OrderedDict()
        self._renewed_at = 0.0
        self._workers: list[str] = []  # alive, as of the last heartbeat
        self._taking: set[int] = set()  # partitions being taken over
        self._rules_loaded = False
        self._delete_idle = redis.register_script(_DELETE_IDLE_CONSUMER)

    async def run(self) -> None:
        """Work until cancelled; then hand the partitions back at once."""
        tasks = [asyncio.create_task(self._heartbeat(), name="worker-heartbeat"),
                 asyncio.create_task(self._rebalance(), name="worker-rebalance"),
                 asyncio.create_task(self._consume(), name="worker-consume"),
                 asyncio.create_task(self.pipeline.clock(), name="worker-clock"),
                 asyncio.create_task(self._follow_rules(), name="worker-rules")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._hand_back(), STOP_SECONDS)

    async def _hand_back(self) -> None:
        async with self.pipeline.lock:
            for partition in list(self.owned):
                self._drop(partition)
                await self.leases.release(partition)
            await self.leases.leave()
            await self.redis.hdel(self.layout.rules_seen, self.id)

    # -- partitions ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Say this worker is alive and keep its leases, every second, whatever else
        is slow; a lease not renewed in time is given up."""
        while True:
            try:
                self._workers = await self.leases.heartbeat()
                held = sorted(set(self.owned) | self._taking)
                kept = await self.leases.renew(held)
                self._lose(set(held) - kept)
                self._renewed_at = time.monotonic()
                if not self.healthy:
                    log.info("worker %s reaches Redis again", self.id)
                self.healthy = True
            except Exception as exc:
                if self.healthy:
                    log.warning("worker %s cannot reach Redis (%s); retrying", self.id, exc)
                self.healthy = False
                if self.owned and time.monotonic() - self._renewed_at > LEASE_MS / 1000:
                    self._lose(set(self.owned))  # the leases have lapsed by now
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _rebalance(self) -> None:
        """Take this worker's share of the partitions and give back the rest."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._balance()
                await self._repair_live_views()
            except (aioredis.RedisError, OSError):
                pass  # the heartbeat says so
            except Exception:
                log.exception("worker %s: taking partitions failed; retrying", self.id)

    async def _balance(self) -> None:
        if not self.healthy or self.id not in self._workers or not self._rules_loaded:
            return  # (nor before it applies the saved rules: it would apply stale ones)
        mine = {p for p, w in assign(self._workers, self.layout.partitions).items()
                if w == self.id}
        for partition in sorted(set(self.owned) - mine):  # another worker's share now
            async with self.pipeline.lock:
                self._drop(partition)
            await self.leases.release(partition)
        for partition in sorted(mine - set(self.owned)):
            if await self.leases.acquire(partition):
                self._taking.add(partition)  # its lease is renewed meanwhile
                try:
                    await self._take(partition)
                except BaseException:
                    await self.leases.release(partition)
                    raise
                finally:
                    self._taking.discard(partition)

    async def _take(self, partition: int) -> None:
        claim = await self.store.claim_partition(partition)
        epoch = await self._ensure_stream(partition)
        through, replies = None, {}
        if claim.applied_through and claim.applied_through.startswith(epoch + "/"):
            through, replies = claim.applied_through.split("/", 1)[1], claim.replies
        # Read after the claim: the previous owner can start no conversation after it.
        ids = [cid for cid in await self.store.live_conversation_ids()
               if self.layout.partition_of(cid) == partition]
        stored = await self.store.load_conversations(ids)
        async with self.pipeline.lock:
            if partition not in await self.leases.renew([partition]):
                return  # lost meanwhile (a take slower than the lease): try again later
            loaded = []
            with bulk_load(self.pipeline.freeze):
                for conversation in stored:
                    self.pipeline.applier.restore(conversation)
                    conv = self.pipeline.conversations.get(conversation.meta["id"])
                    if conv is not None:
                        loaded.append(conv)
            try:
                # Before any new message of theirs, so the rewrite cannot hide one.
                await asyncio.wait_for(self.outlet.restored(loaded), RESTORE_SECONDS)
            except BaseException:
                self.pipeline.applier.drop([c.id for c in loaded])
                raise
            self.owned[partition] = Owned(claim.token, epoch, through, replies)
            metrics.PARTITIONS_HELD.set(len(self.owned))
        await self._forget_idle_consumers(partition)
        log.info("worker %s took partition %d (token %d, %d live conversations)",
                 self.id, partition, claim.token, len(loaded))

    async def _repair_live_views(self) -> None:
        """Rewrite the live views of conversations whose messages could not be
        published, from the store (under the lock: nothing is published meanwhile)."""
        if not self.outlet.behind:
            return
        async with self.pipeline.lock:
            ids = [cid for cid in self.outlet.behind if cid in self.pipeline.conversations]
            self.outlet.behind.intersection_update(ids)  # the others are not ours now
            stored = await self.store.load_conversations(ids)
            await asyncio.wait_for(self.outlet.restored(
                [self.pipeline.conversations[cid] for cid in ids],
                {s.meta["id"]: s.recent for s in stored}, force=True), RESTORE_SECONDS)

    async def _forget_idle_consumers(self, partition: int) -> None:
        """Remove consumers of departed workers that hold no pending entry (checked and
        removed in one step: one that wakes up and reads meanwhile keeps its entries)."""
        inbox = self.layout.inbox(partition)
        for consumer in await self.redis.xinfo_consumers(inbox, GROUP):
            if consumer["name"] not in (self.id, *self._workers) and \
                    consumer["pending"] == 0 and consumer["idle"] > 2 * LEASE_MS:
                await self._delete_idle(keys=[inbox], args=[GROUP, consumer["name"]])

    def _drop(self, partition: int) -> None:
        """Let go of a partition: its conversations leave memory, including those
        waiting to be reloaded after a failure (the new owner has them)."""
        self.owned.pop(partition, None)
        metrics.PARTITIONS_HELD.set(len(self.owned))
        applier = self.pipeline.applier
        applier.drop([cid for cid in {*applier.conversations, *applier.stale}
                      if self.layout.partition_of(cid) == partition])
        metrics.LIVE_CONVERSATIONS.set(len(applier.conversations))

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
        position: Position | None = effects.position
        partitions = {self.layout.partition_of(cid) for cid in effects.touched}
        if position is not None:
            partitions.add(position.partition)
        marks = []
        for partition in sorted(partitions):
            owned = self.owned.get(partition)
            if owned is None:
                raise Fenced({partition})
            if position is not None and position.partition == partition:
                # With the answers to entries not yet acknowledged (a failed XACK).
                replies = owned.replies | dict(zip(
                    position.entries, map(_as_json, effects.replies), strict=True))
                marks.append(PartitionMark(partition, owned.token,
                                           f"{owned.epoch}/{position.last}", replies))
            else:
                marks.append(PartitionMark(partition, owned.token))
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
                for owned in self.owned.values():
                    owned.backlog = True  # what was read but not acknowledged is pending
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _in_order(self, partition: int, entries: list[tuple[str, Fields]]) -> bool:
        """Whether nothing older than these new entries is still pending: a read the
        partition's previous owner had in flight when it let go may have taken one.
        If so, the backlog pass claims it and applies everything in order."""
        if partition not in self.owned or not entries:
            return False
        summary = await self.redis.xpending(self.layout.inbox(partition), GROUP)
        oldest = summary.get("min")
        if oldest and stream_id(str(oldest)) < stream_id(entries[0][0]):
            self.owned[partition].backlog = True
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
            if summary.get("pending") and partition in self.owned:
                self.owned[partition].backlog = True

    async def _recover_streams(self) -> None:
        for partition, owned in list(self.owned.items()):
            epoch = await self._ensure_stream(partition)
            if epoch != owned.epoch:
                owned.epoch, owned.through, owned.replies = epoch, None, {}
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
        owned = self.owned.get(partition)
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
                event = p.parse_event(fields["e"])
                reply = error_reply(event, reply.code, reply.message)
                # Like any refused event: its source's later ones wait for a resend.
                self._source(fields["s"]).refused.add(conversation_of(event))
            replies.setdefault(fields["n"], []).append([fields["r"], _as_json(reply)])
        self._send_replies(pipe, replies)
        await pipe.execute()
        metrics.DEAD_LETTERS.inc(len(poison))
        ids = {i for i, _ in poison}
        return [(i, f) for i, f in entries if i not in ids]

    async def _apply(self, partition: int, entries: Sequence[Entry]) -> None:
        owned = self.owned.get(partition)
        if owned is None or not entries:
            return  # no longer ours: the entries stay pending for the next owner
        loop = asyncio.get_running_loop()
        answered: list[tuple[dict[str, str], dict[str, Any]]] = []
        deliveries: list[tuple[str, dict[str, str], Delivery]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted: nothing left to apply
                continue
            try:
                event = p.parse_event(fields["e"])
            except p.ProtocolError as exc:  # an API node validated it; not expected
                answered.append((fields, _as_json(p.ErrorReply.of(exc))))
                continue
            if owned.through is not None and stream_id(entry_id) <= stream_id(owned.through):
                # Applied before (its worker died before answering): the same answer.
                answered.append((fields, owned.replies.get(entry_id)
                                 or _as_json(already_applied(event))))
                continue
            deliveries.append((entry_id, fields, Delivery(
                event, self._source(fields["s"]), float(fields["t"]), loop.create_future())))
        last, committed = entries[-1][0], True
        if deliveries:
            position = Position(partition, [i for i, _, _ in deliveries], last)
            try:
                committed = await self.pipeline.handle([d for _, _, d in deliveries], position)
            except Fenced as exc:
                self._lose(exc.partitions)
                return
            if committed and partition in self.owned:
                # Kept (and recorded with each batch) until acknowledged, for redelivery.
                self.owned[partition].through = last
                self.owned[partition].replies.update(
                    (i, _as_json(d.reply.result())) for i, _, d in deliveries)
        replies: dict[str, list[Any]] = {}
        for fields, reply in [*answered, *((f, _as_json(d.reply.result()))
                                           for _, f, d in deliveries)]:
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
        if partition in self.owned:
            for entry_id, _ in entries:
                self.owned[partition].replies.pop(entry_id, None)
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
        """Apply the saved rule set if it changed, then say which one this worker
        applies (an API node changing the rules waits for every worker to say so)."""
        document = await self.store.load_rules()
        if document is not None:
            rules = RuleSet.model_validate(document)
            if rules != self.pipeline.rules:
                await self.pipeline.change_rules(rules)
                log.info("worker %s applies the changed rules", self.id)
        await self.redis.hset(self.layout.rules_seen, self.id,
                              fingerprint(self.pipeline.rules.model_dump(mode="json")))
        self._rules_loaded = True


def _as_json(reply: p.Reply) -> dict[str, Any]:
    return reply.model_dump(mode="json", exclude_none=True)


def dead_letter(letter_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A dead-letter entry as the admin API shows it."""
    try:
        event: Any = codec.loads(fields["e"])
    except ValueError:
        event = fields["e"]
    return {"id": letter_id, "partition": int(fields["partition"]), "entry": fields["entry"],
            "deliveries": int(fields["deliveries"]), "at": float(fields["at"]),
            "event": event, "node": fields["n"], "request": fields["r"]}
