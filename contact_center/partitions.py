"""The partitions a scale-out worker holds: taking them over, keeping and giving them
back, and the marks each of its batches carries.

For each partition it takes over (`leases`), in order:
1. claim the partition's fencing token in PostgreSQL; from then on a batch committed by
   any earlier owner fails, so nothing it does after losing the lease can land;
2. load the partition's live conversations (rule state, streaks, waits, counts) from
   PostgreSQL, and rewrite what Redis lost of their live view;
3. claim every pending entry of the stream (XAUTOCLAIM), apply them, then read new ones
   (`contact_center.entries`).

A batch carries a mark for each partition it touches (`Partitions.marks`): this worker's
token there and, for the partition its entries came from, how far the stream is applied
and the answers to entries not acknowledged yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from contact_center import protocol as p
from contact_center import service_metrics as metrics
from contact_center.applier import Effects
from contact_center.leases import HEARTBEAT_SECONDS, LEASE_MS, Leases, assign
from contact_center.pipeline import Pipeline, bulk_load
from contact_center.saved_rules import SavedRules
from contact_center.stores import Fenced, PartitionedStore, PartitionMark
from contact_center.streams import GROUP, Layout, twin
from monitoring.feeds.redis import RedisOutlet

log = logging.getLogger("contact_center.worker")  # the worker's log, whichever part logs

RESTORE_SECONDS = 5.0  # at most this long to rewrite live views, holding the lock
STALL_SECONDS = 30.0  # a worker whose event loop is stuck this long stops heartbeating

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


class Partitions:
    """The partitions this worker holds (``owned``), and its leases on them."""

    def __init__(self, store: PartitionedStore, redis: aioredis.Redis, layout: Layout,
                 worker_id: str, pipeline: Pipeline, outlet: RedisOutlet,
                 saved_rules: SavedRules) -> None:
        self.store, self.redis, self.layout, self.id = store, redis, layout, worker_id
        self.pipeline, self.outlet, self.saved_rules = pipeline, outlet, saved_rules
        self.leases = Leases(redis, layout, worker_id)
        self.owned: dict[int, Owned] = {}
        self.healthy = True
        self._renewed_at = 0.0
        self._alive_at = 0.0  # when the event loop last said it was alive
        self._stalled = False
        self._keeper: threading.Thread | None = None
        self._stop_keeping = threading.Event()
        self._workers: list[str] = []  # alive, as of the last heartbeat
        self._taking: set[int] = set()  # partitions being taken over
        self._delete_idle = redis.register_script(_DELETE_IDLE_CONSUMER)

    async def heartbeat(self) -> None:
        """Say this worker is alive and keep its leases, every second, on a thread of
        its own (its own event loop and Redis connection): a turn that keeps this loop
        busy cannot make them late. Meanwhile this loop says it is alive; one stuck for
        STALL_SECONDS stops both, so the others see it gone and take its partitions."""
        self._keeper = threading.Thread(
            target=self._keep, args=(asyncio.get_running_loop(),), name=f"leases-{self.id}",
            daemon=True)
        self._alive_at = time.monotonic()
        self._keeper.start()
        try:
            while self._keeper.is_alive():
                self._alive_at = time.monotonic()
                await asyncio.sleep(HEARTBEAT_SECONDS / 4)
            raise RuntimeError("the lease keeper stopped")
        finally:
            self._stop_keeping.set()  # (`hand_back` waits for it to end)

    def _keep(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            with asyncio.Runner() as runner:
                leases = Leases(twin(self.redis), self.layout, self.id)
                try:
                    while not self._stop_keeping.is_set():
                        runner.run(self._beat(leases, loop))
                        self._stop_keeping.wait(HEARTBEAT_SECONDS)
                finally:
                    runner.run(leases.redis.aclose())
        except Exception:
            log.exception("worker %s: the lease keeper failed", self.id)

    async def _beat(self, leases: Leases, loop: asyncio.AbstractEventLoop) -> None:
        """One heartbeat and lease renewal (on the keeper's thread)."""
        if time.monotonic() - self._alive_at > STALL_SECONDS:
            if not self._stalled:
                log.error("worker %s: its event loop is stuck; it stops renewing", self.id)
            self._stalled, self.healthy = True, False
            return  # neither alive nor holding: the others take its partitions
        if self._stalled:
            log.info("worker %s: its event loop runs again", self.id)
            self._stalled = False
        try:
            self._workers = await leases.heartbeat()
            held = sorted(set(self.owned) | self._taking)
            lost = set(held) - await leases.renew(held)
            if lost:
                loop.call_soon_threadsafe(self.lose, lost)
            self._renewed_at = time.monotonic()
            if not self.healthy:
                log.info("worker %s reaches Redis again", self.id)
            self.healthy = True
        except Exception as exc:
            if self.healthy:
                log.warning("worker %s cannot reach Redis (%s); retrying", self.id, exc)
            self.healthy = False
            if self.owned and time.monotonic() - self._renewed_at > LEASE_MS / 1000:
                loop.call_soon_threadsafe(self.lose, set(self.owned))  # lapsed by now

    async def rebalance(self) -> None:
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

    async def hand_back(self) -> None:
        """Give every partition back and leave, so no one waits for the leases to lapse
        (the caller holds the pipeline's lock)."""
        self._stop_keeping.set()
        if self._keeper is not None:  # so that no heartbeat follows the leaving
            await asyncio.to_thread(self._keeper.join, HEARTBEAT_SECONDS + 1)
        for partition in list(self.owned):
            self._drop(partition)
            await self.leases.release(partition)
        await self.leases.leave()

    def lose(self, partitions: set[int]) -> None:
        for partition in partitions:
            if partition in self.owned:
                log.warning("worker %s lost partition %d", self.id, partition)
            self._drop(partition)

    def marks(self, effects: Effects) -> list[PartitionMark]:
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
                    position.entries, map(as_json, effects.replies), strict=True))
                marks.append(PartitionMark(partition, owned.token,
                                           f"{owned.epoch}/{position.last}", replies))
            else:
                marks.append(PartitionMark(partition, owned.token))
        return marks

    async def _balance(self) -> None:
        if not self.healthy or self.id not in self._workers or not self.saved_rules.loaded:
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
        epoch = await ensure_stream(self.redis, self.layout, partition)
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
                async with asyncio.timeout(RESTORE_SECONDS):
                    await self.outlet.restored(loaded)
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
            async with asyncio.timeout(RESTORE_SECONDS):
                await self.outlet.restored([self.pipeline.conversations[cid] for cid in ids],
                                           {s.meta["id"]: s.recent for s in stored},
                                           force=True)

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
        applier.drop([cid for cid in {*applier.conversations, *applier.ending, *applier.stale}
                      if self.layout.partition_of(cid) == partition])
        metrics.LIVE_CONVERSATIONS.set(len(applier.conversations))


async def ensure_stream(redis: aioredis.Redis, layout: Layout, partition: int) -> str:
    """The partition's stream and consumer group (from its first entry, so an emptied
    Redis loses nothing added since); returns the streams' epoch."""
    with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
        await redis.xgroup_create(layout.inbox(partition), GROUP, id="0", mkstream=True)
    await redis.set(f"{layout.namespace}:epoch", secrets.token_hex(8), nx=True)
    return str(await redis.get(f"{layout.namespace}:epoch"))


def as_json(reply: p.Reply) -> dict[str, Any]:
    """A reply as batches record it and reply streams carry it."""
    return reply.model_dump(mode="json", exclude_none=True)
