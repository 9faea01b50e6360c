"""The pipeline runner: scores event batches, has the `Applier` apply them, commits the
batch, then answers and publishes. All I/O is here; the decisions are the applier's.

Order of effects per batch: apply in memory -> one store transaction (group commit) ->
settle replies (the ack means "durable") -> publish to live subscribers. Replies and
live messages never get ahead of what the store holds. The embedded runner (`run`)
applies the next batch while one is being written, so the event loop works while the
disk syncs; a batch that fails to be written takes the one applied after it down too.
(A conversation's summary published with a batch may already show the batch applied
after it: a commit's time early; if that batch is refused, a resync follows.)

The embedded deployment runs it over the in-process bus (`run`) and publishes to the
hub (`monitoring.feeds.memory.HubOutlet`); a scale-out worker (`contact_center.worker`)
feeds it batches read from Redis, marks each batch with its partitions' fencing tokens,
and publishes through Redis (`monitoring.feeds.redis.RedisOutlet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer, Scores
from contact_center import protocol as p
from contact_center import service_metrics as metrics
from contact_center.applier import Applier, Effects, conversation_of, error_reply
from contact_center.buses import Delivery
from contact_center.buses.memory import InMemoryBus
from contact_center.collector import freeze_survivors
from contact_center.conversation import Conversation
from contact_center.stores import Fenced, PartitionMark, Store, StoredConversation
from monitoring.feeds import Outlet

log = logging.getLogger(__name__)
T = TypeVar("T")


def _retrieve(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()  # (retrieved: stopping, nobody waits for it any more)


@dataclass(slots=True)
class Committing:
    """A batch applied in memory whose write is in flight (see `Pipeline.run`)."""

    deliveries: list[Delivery]
    effects: Effects
    finals: int  # segments scored
    done: Callable[[], None]  # called once the batch is answered
    write: asyncio.Future[None]


Marker = Callable[[Effects], list[PartitionMark]]
LOAD_SLICE = 5_000  # live conversations read at a time at start
RESTORE_STEP = 1_000  # ... and restored at a time, between batches (about 40 ms here)


async def _retried(read: Callable[[], Awaitable[T]]) -> T:
    """A read at start, retried every second until the store answers."""
    while True:
        try:
            return await read()
        except Exception:
            log.warning("reading live conversations failed; retrying in a second",
                        exc_info=True)
            await asyncio.sleep(1.0)


@contextlib.contextmanager
def bulk_load(freeze: bool = True) -> Iterator[None]:
    """Around restoring many live conversations at once (no awaits inside: other work's
    garbage must not pile up meanwhile): no garbage collection meanwhile (each full one
    would walk every object restored so far: quadratic); then one young collection, and,
    with ``freeze``, what survived is frozen out of the collections that follow (see
    contact_center.collector)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        if freeze:
            freeze_survivors()
        else:
            gc.collect(1)


class Pipeline:
    def __init__(self, store: Store, outlet: Outlet, rules: RuleSet, rolling: RollingConfig,
                 batch_size: int = 500, scorer: Scorer | None = None,
                 marker: Marker | None = None, freeze: bool = True) -> None:
        """``marker``: the partition marks each batch carries (scale-out workers);
        ``freeze``: freeze what a bulk load restored (see `bulk_load`)."""
        self.store, self.outlet = store, outlet
        self.freeze = freeze
        self.batch_size = batch_size
        self.scorer = scorer or Scorer()
        self.marker = marker
        self.on_fenced: Callable[[Fenced], None] = lambda exc: None
        self._wake = asyncio.Event()  # the earliest timer moved earlier
        self.applier = Applier(rules, rolling, self._wake.set)
        self.lock = asyncio.Lock()  # one batch, tick, rules change or restore step at a time
        self.restored = asyncio.Event()  # set once `restore` has brought back every one
        self._committing: Committing | None = None  # the batch being written (see `run`)
        self.processed = 0
        self.batches = 0

    @property
    def conversations(self) -> dict[str, Conversation]:
        return self.applier.conversations

    @property
    def rules(self) -> RuleSet:
        return self.applier.rules

    async def restore(self) -> None:
        """Bring back every live conversation the store holds, then set `restored`.

        Runs beside the batches (embedded: from start, so the service takes events at
        once): an event of a conversation not restored yet loads it, as any missing one;
        this skips the conversations the batches have loaded (or ended) meanwhile. The
        store reads a slice while the one before it is restored, RESTORE_STEP at a time
        under the lock: memory never holds more than two slices' rows. Reads that fail
        are retried; `restored` is set however it ends (a live view never waits for good)."""
        reading: list[asyncio.Future[list[StoredConversation]]] = []
        try:
            ids = await _retried(self.store.live_conversation_ids)
            slices = [ids[i : i + LOAD_SLICE] for i in range(0, len(ids), LOAD_SLICE)]
            reading += [asyncio.ensure_future(self._read(s)) for s in slices[:1]]
            for n in range(len(slices)):
                stored = await reading.pop()
                if n + 1 < len(slices):
                    reading.append(asyncio.ensure_future(self._read(slices[n + 1])))
                for step in range(0, len(stored), RESTORE_STEP):
                    async with self.lock:
                        with bulk_load(self.freeze):
                            for conversation in stored[step : step + RESTORE_STEP]:
                                if not self.applier.knows(conversation.meta["id"]):
                                    self._restore_one(conversation)
                del stored
        finally:
            for read in reading:
                read.cancel()
            self.restored.set()

    async def _read(self, ids: list[str]) -> list[StoredConversation]:
        return await _retried(lambda: self.store.load_conversations(ids))

    def _restore_one(self, stored: StoredConversation) -> None:
        try:
            self.applier.restore(stored)
        except Exception:  # its events load it again (and fail alone); the rest come back
            log.exception("restoring conversation %s failed", stored.meta["id"])

    async def run(self, bus: InMemoryBus) -> None:
        """Take batches off the bus and process them, one ahead: a batch is applied while
        the one before it is being written, and answered once that write is done (in
        order; never before its own write). Clock rules run beside, never in the middle
        of a batch."""
        clock = asyncio.create_task(self.clock(), name="pipeline-clock")
        taking: asyncio.Future[list[Delivery]] | None = None
        try:
            while True:
                taking = taking or asyncio.ensure_future(bus.take(self.batch_size))
                waiting: list[asyncio.Future[Any]] = [taking]
                if self._committing is not None:
                    waiting.append(self._committing.write)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not taking.done():  # the write came first: answer its batch at once
                    async with self.lock:
                        await self._finish_committing()
                    continue
                deliveries, taking = taking.result(), None
                await self._apply_ahead(deliveries, functools.partial(bus.done,
                                                                      len(deliveries)))
        finally:
            # Stopping: what is not answered yet may or may not be kept; it is refused
            # (a resend of what was kept is a duplicate).
            clock.cancel()
            if (taking is not None and not taking.cancel() and not taking.cancelled()
                    and taking.exception() is None):
                self._refuse(taking.result())  # (taken just before the stop)
                bus.done(len(taking.result()))
            committing, self._committing = self._committing, None
            if committing is not None:
                committing.write.add_done_callback(_retrieve)
                self._refuse(committing.deliveries)
                committing.done()

    async def _apply_ahead(self, deliveries: list[Delivery], done: Callable[[], None]) -> None:
        """Apply a batch, answer the batch being written, then start this one's write
        (or refuse it, if that write failed: it was applied on what the failure undid).
        ``done`` is called once the batch is answered."""
        handed_over = False
        try:
            async with self.lock:
                await self._apply_ahead_locked(deliveries, done)
                handed_over = self._committing is not None and self._committing.done is done
        except asyncio.CancelledError:  # (stopping)
            if not handed_over:
                self._refuse(deliveries)
            raise
        finally:
            if not handed_over:
                done()

    async def _apply_ahead_locked(self, deliveries: list[Delivery],
                                  done: Callable[[], None]) -> None:
        """`_apply_ahead` under the lock; leaves ``self._committing`` set to this batch
        when its write has started."""
        try:
            applied = await self._apply(deliveries)
            if not await self._finish_committing():
                if applied is not None:
                    self.applier.forget(applied[0].touched)
                    await self._reload_stale()
                    self._refuse(deliveries)
                    await self.outlet.resync(applied[0].touched)
                return
            if applied is not None:
                effects, finals = applied
                effects.save_state(time.time())  # now: what the next batch changes is not in it
                self._committing = Committing(deliveries, effects, finals, done,
                                              asyncio.ensure_future(self._store_batch(effects)))
        except Exception:
            await self._finish_committing()
            self._failed_by_bug(deliveries)
            # The batch answered before it may have published this one's state (summaries).
            await self.outlet.resync({conversation_of(d.event) for d in deliveries})

    async def _finish_committing(self) -> bool:
        """Wait for the batch being written, then answer and publish it, or refuse it if
        the write failed; whether it was written (True when there was none)."""
        committing = self._committing
        if committing is None:
            return True
        # (`wait`, not `await`: a waiter cancelled, a tick or a rules change, must not
        # cancel the write; the batch then stays for whoever holds the lock next.)
        await asyncio.wait([committing.write])
        self._committing = None
        try:
            write = committing.write
            error = CancelledError() if write.cancelled() else write.exception()
            if error is not None:
                await self._failed_commit(committing.effects, error)
                self._refuse(committing.deliveries)
                await self.outlet.resync(committing.effects.touched)
                return False
            await self._answer(committing.deliveries, committing.effects, committing.finals)
            return True
        finally:
            committing.done()

    async def clock(self) -> None:
        """Fire clock rules when due, forever."""
        timers = self.applier.timers
        while True:
            self._wake.clear()
            delay = max(0.0, timers[0][0] - time.time()) if timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if timers and timers[0][0] <= time.time():
                try:
                    async with self.lock:
                        await self.tick()
                except Exception:
                    log.exception("clock rules failed; retrying in a second")
                    await asyncio.sleep(1.0)

    async def handle(self, deliveries: list[Delivery], position: Any = None) -> bool:
        """Process a batch between other batches and ticks; whether it was committed.
        Every delivery is answered, unless a newer owner fenced this worker out (then
        `Fenced` is raised and nothing is answered). ``position``: see `Effects`."""
        async with self.lock:
            try:
                return await self.process(deliveries, position)
            except Fenced:
                raise
            except Exception:
                self._failed_by_bug(deliveries)
                return False

    def _failed_by_bug(self, deliveries: list[Delivery]) -> None:
        # Only a bug gets here (bad input gets its own error reply): drop what memory may
        # hold half-applied, answer every event, keep serving.
        log.exception("pipeline batch failed")
        self.applier.forget({conversation_of(d.event) for d in deliveries})
        for d in deliveries:
            d.source.refused.add(conversation_of(d.event))
            d.settle(error_reply(d.event, p.ErrorCode.INTERNAL_ERROR,
                                 "internal error; the event was not applied"))

    async def process(self, deliveries: list[Delivery], position: Any = None) -> bool:
        """Apply, commit, answer and publish a batch; whether it was committed."""
        await self._finish_committing()
        applied = await self._apply(deliveries, position)
        if applied is None:
            return False
        effects, finals = applied
        if not await self._commit(effects, time.time()):
            self._refuse(deliveries)
            await self.outlet.resync(effects.touched)
            return False
        await self._answer(deliveries, effects, finals)
        return True

    async def _apply(self, deliveries: list[Delivery],
                     position: Any = None) -> tuple[Effects, int] | None:
        """Load what is missing, score, apply in memory: the effects and the number of
        segments scored; None when the store could not be read (then all are refused)."""
        try:
            if self.applier.missing(d.event for d in deliveries):
                # No store read while a write is in flight: it could read what that write
                # is about to change (a conversation it ends, beyond the ended memory).
                await self._finish_committing()
                await self._load(self.applier.missing(d.event for d in deliveries))
        except Exception:
            log.exception("store read failed; %d events not applied", len(deliveries))
            self._refuse(deliveries)
            return None
        finals = [i for i, d in enumerate(deliveries)
                  if isinstance(d.event, p.Segment) and d.event.final]
        # Scored here, not in a thread: scoring is pure Python, so a thread would hold the
        # same lock the event loop needs (no time won) and add a hand-off to every batch.
        # A full batch of the fast scorer takes a few milliseconds.
        texts = [deliveries[i].event.text for i in finals]  # type: ignore[union-attr]
        scored: dict[int, Scores] = dict(zip(finals, self.scorer.score_many(texts),
                                             strict=True))
        effects = Effects(position=position)
        effects.replies = self.applier.apply_all(
            [(d.event, d.received_at, scored.get(i), d.source.refused)
             for i, d in enumerate(deliveries)], effects)
        return effects, len(finals)

    async def _answer(self, deliveries: list[Delivery], effects: Effects, finals: int) -> None:
        """A committed batch: count it, answer every event, publish."""
        self.processed += len(deliveries)
        self.batches += 1
        metrics.SEGMENTS_SCORED.inc(finals)  # (counted once committed: a retry of a
        metrics.BATCH_SIZE.observe(len(deliveries))  # failed batch is not counted twice)
        metrics.LIVE_CONVERSATIONS.set(len(self.applier.conversations))
        if self.applier.stale:  # a conversation of this batch failed and was dropped
            await self._reload_stale()
        for d, reply in zip(deliveries, effects.replies, strict=True):
            d.settle(reply)
        await self.outlet.publish(effects)

    async def _commit(self, effects: Effects, now: float) -> bool:
        """Save the touched conversations' state with the batch, in one transaction;
        whether it committed. After a failure memory is back in line with the store;
        `Fenced` is raised (after forgetting what the batch touched)."""
        effects.save_state(now)
        try:
            if self.marker is not None:
                effects.batch.marks = self.marker(effects)
            await self._store_batch(effects)
            return True
        except Fenced:
            # The fenced partitions' conversations are dropped by `on_fenced`; the rest
            # (a tick spans partitions) are reloaded as stale.
            self.applier.forget(effects.touched)
            raise
        except Exception as error:
            await self._failed_commit(effects, error)
            return False

    async def _store_batch(self, effects: Effects) -> None:
        with metrics.COMMIT_SECONDS.time():
            await self.store.write(effects.batch)
        for alert in effects.batch.alerts:
            metrics.ALERTS.labels(alert.rule_id, alert.severity).inc()

    async def _failed_commit(self, effects: Effects, error: BaseException) -> None:
        """Put memory back in line with the store, before anyone hears of the failure."""
        metrics.COMMIT_FAILURES.inc()
        log.error("store write failed; %d conversations not saved", len(effects.touched),
                  exc_info=error)
        self.applier.forget(effects.touched)
        await self._reload_stale()

    # -- rules and clock rules -----------------------------------------------------------

    async def change_rules(self, rules: RuleSet) -> None:
        """`set_rules` between batches, saving the rule state it changed."""
        async with self.lock:
            await self._finish_committing()  # (its state is saved before this change's)
            effects = Effects()
            for conv in self.set_rules(rules):
                effects.touched[conv.id] = conv
            try:
                if not await self._commit(effects, time.time()):
                    log.warning("rule state not saved; each conversation's next batch saves it")
            except Fenced as exc:
                self.on_fenced(exc)
                await self._reload_stale()  # those of partitions still held

    def set_rules(self, rules: RuleSet) -> list[Conversation]:
        """See `Applier.set_rules`."""
        return self.applier.set_rules(rules)

    async def tick(self, now: float | None = None) -> None:
        """Fire the clock rules that are due (response time), as one committed batch."""
        now = time.time() if now is None else now
        await self._finish_committing()  # (its state is saved before the tick's)
        effects = Effects()
        fired = self.applier.fire_due(now, effects)
        try:
            committed = await self._commit(effects, now)
        except Fenced as exc:
            self.on_fenced(exc)
            await self._reload_stale()
            committed = False
        if not committed:
            for conv in fired:  # the others' timers are still due; reloaded ones rescheduled
                if conv.id not in effects.touched:
                    self.applier.schedule(conv)
            return
        await self.outlet.publish(effects)
        for conv in fired:
            self.applier.schedule(conv)

    @staticmethod
    def _refuse(deliveries: list[Delivery]) -> None:
        for d in deliveries:
            d.source.refused.add(conversation_of(d.event))
            d.settle(error_reply(d.event, p.ErrorCode.UNAVAILABLE,
                                 "storage is unavailable; the event was not applied, retry"))

    # -- loading ------------------------------------------------------------------------

    async def _load(self, missing: set[str]) -> None:
        if missing:
            for stored in await self.store.load_conversations(missing):
                self.applier.restore(stored)
            self.applier.stale.clear()  # what the store did not have was never committed

    async def _reload_stale(self) -> None:
        """Bring conversations dropped after a failure back at once, so live views and
        monitors do not lose them until their next event (retried per batch otherwise)."""
        try:
            await self._load(self.applier.missing([]))
        except Exception:
            log.warning("reloading %d conversations failed; will retry",
                        len(self.applier.stale))
