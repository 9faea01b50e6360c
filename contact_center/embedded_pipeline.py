"""The embedded pipeline: the same `Pipeline` over the in-process bus, with one write in
flight (`run`), and the live conversations brought back in the background after a start
(`restore`).

It applies the next batch while one is being written, so the event loop works while the
disk syncs; a batch is answered once its own write is done, in order, and a batch that
fails to be written takes the one applied after it down too. (A conversation's summary
published with a batch may already show the batch applied after it: a commit's time
early; if that batch is refused, a resync follows.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer
from contact_center.applier import Effects, Redact, conversation_of
from contact_center.buses import Delivery
from contact_center.buses.memory import InMemoryBus
from contact_center.pipeline import Pipeline, bulk_load
from contact_center.stores import Store, StoredConversation
from monitoring.alerts import AlertPolicy
from monitoring.feeds import Outlet
from monitoring.recording import Policies

log = logging.getLogger(__name__)
T = TypeVar("T")

LOAD_SLICE = 5_000  # live conversations read at a time at start
RESTORE_STEP = 1_000  # ... and restored at a time, between batches (about 40 ms here)


def _retrieve(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()  # (retrieved: stopping, nobody waits for it any more)


@dataclass(slots=True)
class Committing:
    """A batch applied in memory whose write is in flight (see `EmbeddedPipeline.run`)."""

    deliveries: list[Delivery]
    effects: Effects
    finals: int  # segments scored
    done: Callable[[], None]  # called once the batch is answered
    write: asyncio.Future[None]


async def _retried(read: Callable[[], Awaitable[T]]) -> T:
    """A read at start, retried every second until the store answers."""
    while True:
        try:
            return await read()
        except Exception:
            log.warning("reading live conversations failed; retrying in a second",
                        exc_info=True)
            await asyncio.sleep(1.0)


class EmbeddedPipeline(Pipeline):
    """A `Pipeline` that keeps one write in flight (`run`) and restores in the background."""

    def __init__(self, store: Store, outlet: Outlet, rules: RuleSet, rolling: RollingConfig,
                 batch_size: int = 500, scorer: Scorer | None = None,
                 freeze: bool = True, idle_timeout: float = 0.0,
                 policy: AlertPolicy | None = None, redact: Redact | None = None,
                 recording: Policies | None = None, commit_window: float = 0.0) -> None:
        """``commit_window``: seconds after a batch's write started that the next batch
        may gather (see `run`; 0: none); the rest as `Pipeline`."""
        super().__init__(store, outlet, rules, rolling, batch_size, scorer, freeze=freeze,
                         idle_timeout=idle_timeout, policy=policy, redact=redact,
                         recording=recording)
        self.restored = asyncio.Event()  # set once `restore` has brought back every one
        self._committing: Committing | None = None  # the batch being written (see `run`)
        self.commit_window = commit_window
        self._write_started = 0.0  # time.monotonic() when the last write started

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
        of a batch.

        The next batch gathers until ``commit_window`` after the last batch's write
        started (unless a full batch waits): while that write is in flight, and, if that
        batch held several events (several sources sending at once), after it too, the
        batch answered without waiting for the window once it is written. At a moderate
        rate: fewer and fuller batches, each with its own commit and fixed costs, for at
        most that much more latency. After a batch of one event (say one source sending
        turn by turn, waiting for each answer) the next is taken as soon as the write is
        done."""
        clock = asyncio.create_task(self.clock(), name="pipeline-clock")
        taking: asyncio.Future[list[Delivery]] | None = None
        after_several = False
        try:
            while True:
                if taking is None and self.commit_window:
                    await self._gather(bus, after_several)
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
                after_several = len(deliveries) > 1
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

    async def _gather(self, bus: InMemoryBus, after_several: bool) -> None:
        """Let the next batch gather until ``commit_window`` after the last batch's write
        started, or until a full batch waits: while that write is in flight, and after it
        only ``after_several`` (see `run`), answering it as soon as it is done."""
        while True:
            left = self._write_started + self.commit_window - time.monotonic()
            if left <= 0 or bus.holds(self.batch_size):
                return
            committing = self._committing
            if committing is not None and committing.write.done():
                if not after_several:
                    return
                async with self.lock:
                    await self._finish_committing()
                continue  # (the lock may have taken a while: the window is counted again)
            if committing is None and not after_several:
                return
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(bus.fill(self.batch_size))]
            if committing is not None:
                waits.append(committing.write)
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waits[0].cancel()

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
                self._write_started = time.monotonic()
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
