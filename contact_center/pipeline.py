"""The pipeline: scores event batches, has the `Applier` apply them, commits each batch,
then answers and publishes it. All I/O is here; the decisions are the applier's.

Order of effects per batch: apply in memory -> one store transaction (group commit) ->
settle replies (the ack means "durable") -> publish to live subscribers. Replies and
live messages never get ahead of what the store holds.

`Pipeline` handles one batch at a time (`handle`): a scale-out worker
(`contact_center.worker`) feeds it batches read from Redis, marks each batch with its
partitions' fencing tokens, and publishes through Redis (`monitoring.feeds.redis.
RedisOutlet`). The embedded deployment runs `embedded_pipeline.EmbeddedPipeline`, the
same pipeline over the in-process bus with one write in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer, Scores
from contact_center import protocol as p
from contact_center import service_metrics as metrics
from contact_center.applier import (
    Applier,
    Effects,
    Ending,
    Redact,
    conversation_of,
    error_reply,
    scored_text,
)
from contact_center.buses import Delivery
from contact_center.collector import freeze_survivors
from contact_center.conversation import Conversation
from contact_center.stores import Fenced, PartitionMark, Store
from monitoring.alerts import AlertPolicy
from monitoring.feeds import Outlet
from monitoring.messages import ALERT_EVENTS_TOPIC, LiveMessage
from monitoring.recording import Policies

log = logging.getLogger(__name__)

Marker = Callable[[Effects], list[PartitionMark]]


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
    """Applies, commits, answers and publishes batches, one at a time."""

    def __init__(self, store: Store, outlet: Outlet, rules: RuleSet, rolling: RollingConfig,
                 batch_size: int = 500, scorer: Scorer | None = None,
                 marker: Marker | None = None, freeze: bool = True,
                 idle_timeout: float = 0.0, policy: AlertPolicy | None = None,
                 redact: Redact | None = None, recording: Policies | None = None) -> None:
        """``marker``: the partition marks each batch carries (scale-out workers);
        ``freeze``: freeze what a bulk load restored (see `bulk_load`); ``idle_timeout``,
        ``redact``, ``recording``: see `Applier`; ``policy``: what happens to alerts on
        their own."""
        self.store, self.outlet = store, outlet
        self.freeze = freeze
        self.batch_size = batch_size
        self.scorer = scorer or Scorer()
        self.marker = marker
        self.on_fenced: Callable[[Fenced], None] = lambda exc: None
        self._wake = asyncio.Event()  # the earliest timer moved earlier
        self.applier = Applier(rules, rolling, self._wake.set, idle_timeout, policy, redact,
                               recording)
        self.lock = asyncio.Lock()  # one batch, tick, rules change or restore step at a time
        self.processed = 0
        self.batches = 0

    @property
    def conversations(self) -> dict[str, Conversation]:
        return self.applier.conversations

    @property
    def ending(self) -> dict[str, Ending]:
        return self.applier.ending

    @property
    def rules(self) -> RuleSet:
        return self.applier.rules

    async def _finish_committing(self) -> bool:
        """Wait for the write in flight, then answer and publish its batch, or refuse it
        if it failed; whether it was written (True when there was none, as ever here:
        `EmbeddedPipeline` keeps one in flight). Called before anything that must see
        the store and memory in line: a store read, a tick, a rules change, a batch."""
        return True

    async def clock(self) -> None:
        """Fire clock rules when due, forever."""
        timers = self.applier.timers
        while True:
            self._wake.clear()
            delay = max(0.0, timers[0][0] - time.time()) if timers else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if timers and timers[0][0] <= time.time():
                try:
                    async with self.lock:
                        committed = await self.tick()
                except Exception:
                    log.exception("clock rules failed; retrying in a second")
                    committed = False
                if not committed:  # (what is due is due again at once: no hot loop)
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
        to_score = {i: text for i, d in enumerate(deliveries)
                    if (text := scored_text(d.event)) is not None}
        finals = list(to_score)
        # Scored here, not in a thread: scoring is pure Python, so a thread would hold the
        # same lock the event loop needs (no time won) and add a hand-off to every batch.
        # A full batch of the fast scorer takes a few milliseconds.
        scored: dict[int, Scores] = dict(zip(finals, self.scorer.score_many(
            list(to_score.values())), strict=True))
        effects = Effects(position=position)
        effects.replies = self.applier.apply_all(
            [(d.event, d.received_at, scored.get(i), d.source.refused, d.source.outbound)
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
        try:
            await self.outlet.publish(effects)
        finally:
            self.applier.committed(effects)  # (after the monitors heard of the end)

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
        alerts = []
        for row in effects.batch.alert_events:  # numbered now: to the alert streams
            assert row.message is not None and row.event_id is not None
            row.message["event_id"] = row.event_id
            alerts.append(LiveMessage(
                row.conversation_id, ALERT_EVENTS_TOPIC, row.message, event_id=row.event_id,
                match={"agent_id": row.alert["agent_id"], "queue": row.alert["queue"]}))
        # First: each push wakes its socket's sender in turn, and a supervisor waiting
        # for an alert should not wait behind every monitor's push of the batch.
        effects.messages[:0] = alerts
        for rule_id, severity in effects.hits:
            metrics.ALERTS.labels(rule_id, severity).inc()

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

    async def tick(self, now: float | None = None) -> bool:
        """End the conversations idle too long and fire the clock rules that are due
        (response time), as one committed batch; whether it was committed."""
        now = time.time() if now is None else now
        await self._finish_committing()  # (its state is saved before the tick's)
        effects = Effects()
        fired = self.applier.fire_due(now, effects)
        if self.applier.stale:  # one failed (a bug): back from the store, rescheduled
            await self._reload_stale()
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
            return False
        metrics.LIVE_CONVERSATIONS.set(len(self.applier.conversations))
        try:
            await self.outlet.publish(effects)
        finally:
            self.applier.committed(effects)
        for conv in fired:
            self.applier.schedule(conv)
        return True

    @staticmethod
    def _refuse(deliveries: list[Delivery]) -> None:
        for d in deliveries:
            d.source.refused.add(conversation_of(d.event))
            d.settle(error_reply(d.event, p.ErrorCode.UNAVAILABLE,
                                 "storage is unavailable; the event was not applied, retry"))

    # -- loading ------------------------------------------------------------------------

    async def _load(self, missing: set[str]) -> None:
        if missing:
            found = await self.store.load_conversations(missing)
            for stored in found:
                self.applier.restore(stored)
            # What the store does not hold was never committed, or was erased since
            # (contact_center.erasure): memory forgets it too, so that a conversation
            # started again under an erased one's id is new, not a duplicate.
            self.applier.drop(missing - {stored.meta["id"] for stored in found})
            self.applier.stale.clear()

    async def _reload_stale(self) -> None:
        """Bring conversations dropped after a failure back at once, so live views and
        monitors do not lose them until their next event (retried per batch otherwise)."""
        try:
            await self._load(self.applier.missing([]))
        except Exception:
            log.warning("reloading %d conversations failed; will retry",
                        len(self.applier.stale))
