"""The embedded pipeline runner: takes event batches off the bus, scores them, has the
`Applier` apply them, commits the batch, then answers and publishes. All I/O is here; the
decisions are the applier's.

Order of effects per batch: apply in memory -> one store transaction (group commit) ->
settle replies (the ack means "durable") -> publish to live subscribers. Replies and
live messages never get ahead of what the store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer, Scores
from contact_center import protocol as p
from contact_center.applier import (
    ALERTS_TOPIC,
    LIVE_TOPIC,
    Applier,
    Effects,
    conversation_of,
    conversation_topic,
    error_reply,
)
from contact_center.bus import Bus, Delivery
from contact_center.conversation import Conversation
from contact_center.store import Store
from monitoring.hub import Hub
from monitoring.metrics import agent_metrics

__all__ = ["ALERTS_TOPIC", "LIVE_TOPIC", "Pipeline", "conversation_topic"]

log = logging.getLogger(__name__)

AGENT_METRICS_INTERVAL = 1.0  # seconds between agent metric pushes on the live board


class Pipeline:
    def __init__(self, store: Store, hub: Hub, rules: RuleSet, rolling: RollingConfig,
                 batch_size: int = 500, scorer: Scorer | None = None) -> None:
        self.store, self.hub = store, hub
        self.batch_size = batch_size
        self.scorer = scorer or Scorer()
        self._wake = asyncio.Event()  # the earliest timer moved earlier
        self.applier = Applier(rules, rolling, self._wake.set)
        self._lock = asyncio.Lock()  # one batch, tick or rules change at a time
        self.processed = 0
        self.batches = 0
        self._agents_due: asyncio.TimerHandle | None = None
        self._agents_sent_at = 0.0

    @property
    def conversations(self) -> dict[str, Conversation]:
        return self.applier.conversations

    @property
    def rules(self) -> RuleSet:
        return self.applier.rules

    async def start(self) -> None:
        for stored in await self.store.load_conversations(None):
            self.applier.restore(stored)

    async def run(self, bus: Bus) -> None:
        """Take batches off the bus and process them; clock rules run beside, never in
        the middle of a batch."""
        clock = asyncio.create_task(self._clock(), name="pipeline-clock")
        try:
            while True:
                deliveries = await bus.take(self.batch_size)
                async with self._lock:
                    await self._process_or_refuse(bus, deliveries)
        finally:
            clock.cancel()

    async def _clock(self) -> None:
        timers = self.applier.timers
        while True:
            self._wake.clear()
            delay = max(0.0, timers[0][0] - time.time()) if timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if timers and timers[0][0] <= time.time():
                try:
                    async with self._lock:
                        await self.tick()
                except Exception:
                    log.exception("clock rules failed; retrying in a second")
                    await asyncio.sleep(1.0)

    async def _process_or_refuse(self, bus: Bus, deliveries: list[Delivery]) -> None:
        try:
            await self.process(deliveries)
        except Exception:
            # Only a bug gets here (bad input gets its own error reply): drop what
            # memory may hold half-applied, answer every event, keep serving.
            log.exception("pipeline batch failed")
            self.applier.forget({conversation_of(d.event) for d in deliveries})
            for d in deliveries:
                d.source.refused.add(conversation_of(d.event))
                d.settle(error_reply(d.event, p.ErrorCode.INTERNAL_ERROR,
                                     "internal error; the event was not applied"))
        finally:
            bus.done(len(deliveries))

    async def process(self, deliveries: list[Delivery]) -> None:
        try:
            await self._load(self.applier.missing(d.event for d in deliveries))
        except Exception:
            log.exception("store read failed; %d events not applied", len(deliveries))
            self._refuse(deliveries)
            return
        finals = [i for i, d in enumerate(deliveries)
                  if isinstance(d.event, p.Segment) and d.event.final]
        scored: dict[int, Scores] = {}
        if finals:
            texts = [deliveries[i].event.text for i in finals]  # type: ignore[union-attr]
            scored = dict(zip(finals, await asyncio.to_thread(self.scorer.score_many, texts),
                              strict=True))
        effects = Effects()
        replies = self.applier.apply_all(
            [(d.event, d.received_at, scored.get(i), d.source.refused)
             for i, d in enumerate(deliveries)], effects)
        effects.save_state(time.time())
        try:
            await self.store.write(effects.batch)
        except Exception:
            log.exception("store write failed; %d events not applied", len(deliveries))
            self.applier.forget(effects.touched)
            await self._reload_stale()  # back before anyone hears of the failure
            self._refuse(deliveries)
            self._resync(effects.touched)
            return
        self.processed += len(deliveries)
        self.batches += 1
        if self.applier.stale:  # a conversation of this batch failed and was dropped
            await self._reload_stale()
        for d, reply in zip(deliveries, replies, strict=True):
            d.settle(reply)
        self._publish(effects)
        if self.hub.subscribers(LIVE_TOPIC):
            now = time.time()
            for conv in effects.touched.values():
                self.hub.publish(LIVE_TOPIC, {"type": "conversation.updated",
                                              "conversation": conv.summary(now)})
            self._schedule_agent_metrics()

    def _publish(self, effects: Effects) -> None:
        for message in effects.messages:
            try:
                if message.keep:
                    # Kept entries feed a new monitor's catch-up; kept here, after the commit
                    # and with the publishing, so catch-up and live never overlap or gap.
                    effects.touched[message.conversation_id].recent.append(message.body)
                self.hub.publish(message.topic, message.body, message.match)
            except Exception:  # a failed push must not cost the others theirs
                log.exception("publishing a live message failed")

    # -- rules and clock rules -----------------------------------------------------------

    async def change_rules(self, rules: RuleSet) -> None:
        """`set_rules` between batches, saving the rule state it changed."""
        async with self._lock:
            effects = Effects()
            for conv in self.set_rules(rules):
                effects.touched[conv.id] = conv
            effects.save_state(time.time())
            try:
                await self.store.write(effects.batch)
            except Exception:
                # Memory is ahead of the store; each conversation's next batch saves it.
                log.exception("saving rule state after a rules change failed")

    def set_rules(self, rules: RuleSet) -> list[Conversation]:
        """See `Applier.set_rules`."""
        return self.applier.set_rules(rules)

    async def tick(self, now: float | None = None) -> None:
        """Fire the clock rules that are due (response time), as one committed batch."""
        now = time.time() if now is None else now
        effects = Effects()
        fired = self.applier.fire_due(now, effects)
        effects.save_state(now)
        try:
            await self.store.write(effects.batch)
        except Exception:
            log.exception("store write failed; %d timed alerts not raised yet",
                          len(effects.touched))
            self.applier.forget(effects.touched)
            await self._reload_stale()  # reloaded conversations are rescheduled
            for conv in fired:  # the others' timers are still due
                if conv.id not in effects.touched:
                    self.applier.schedule(conv)
            return
        self._publish(effects)
        for conv in fired:
            self.applier.schedule(conv)

    def _schedule_agent_metrics(self) -> None:
        """Push agent metrics at most every AGENT_METRICS_INTERVAL, always once more after
        the last change."""
        if self._agents_due is None:
            delay = self._agents_sent_at + AGENT_METRICS_INTERVAL - time.monotonic()
            self._agents_due = asyncio.get_running_loop().call_later(
                max(0.0, delay), self._publish_agent_metrics)

    def _publish_agent_metrics(self) -> None:
        self._agents_due, self._agents_sent_at = None, time.monotonic()
        self.hub.publish(LIVE_TOPIC, {"type": "agents.updated",
                                      "agents": agent_metrics(list(self.conversations.values()))})

    @staticmethod
    def _refuse(deliveries: list[Delivery]) -> None:
        for d in deliveries:
            d.source.refused.add(conversation_of(d.event))
            d.settle(error_reply(d.event, p.ErrorCode.UNAVAILABLE,
                                 "storage is unavailable; the event was not applied, retry"))

    def _resync(self, conversation_ids: Collection[str]) -> None:
        """Tell live subscribers that what they saw may not have been kept."""
        message = {"type": "resync", "reason": "storage failure; reconnect for a fresh view"}
        for cid in conversation_ids:
            self.hub.publish(conversation_topic(cid), message)
        self.hub.publish(LIVE_TOPIC, message)

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
