"""The pipeline runner: takes event batches off the bus, runs the pure stages
(score, update state, evaluate rules), commits the batch, then answers and publishes.

Order of effects per batch: apply in memory -> one store transaction (group commit) ->
settle replies (the ack means "durable") -> publish to live subscribers. Replies and
live messages never get ahead of what the store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any, TypeVar

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet, Trigger, deadlines, due, evaluate
from analytics.scoring import Scorer, Scores
from contact_center import protocol as p
from contact_center.bus import Bus, Delivery
from contact_center.conversation import Conversation
from contact_center.store import (
    AlertRow,
    EventRow,
    SegmentRow,
    Store,
    StoredConversation,
    WriteBatch,
    event_key,
)
from monitoring.hub import Hub
from monitoring.metrics import agent_metrics
from monitoring.recording import records

log = logging.getLogger(__name__)
V = TypeVar("V")

ENDED_MEMORY = 50_000  # ended conversation ids remembered to answer late events fast
ENDED_APPLIED_MEMORY = 1_000  # ... and the idempotency keys of the latest ones, for retries
AGENT_METRICS_INTERVAL = 1.0  # seconds between agent metric pushes on the live board


class Outbox(list[tuple[str, Callable[[], None]]]):
    """Effects to run once the batch is committed, in order, by conversation id."""

    def add(self, conversation_id: str, effect: Callable[[], None]) -> None:
        self.append((conversation_id, effect))

    def run(self) -> None:
        for _, effect in self:
            try:
                effect()
            except Exception:  # a failed push must not cost the others theirs
                log.exception("publishing a live message failed")


def conversation_topic(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


ALERTS_TOPIC = "alerts"
LIVE_TOPIC = "live"


def _ack(event: p.Event, status: p.AckStatus = "accepted", **extra: Any) -> p.Ack:
    return p.Ack(ref=event.ref, event=event.type, status=status,
                 conversation_id=_conversation_id(event),
                 segment_id=getattr(event, "segment_id", None), **extra)


def _error(event: p.Event, code: p.ErrorCode, message: str) -> p.ErrorReply:
    return p.ErrorReply(ref=event.ref, code=code, message=message,
                        conversation_id=_conversation_id(event),
                        segment_id=getattr(event, "segment_id", None))


def _remember(memory: OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    """Insert as the newest entry, forgetting the oldest beyond ``limit``."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


def _as_recorded(recording: str, trigger: Trigger, evidence: dict[str, Any]
                 ) -> tuple[dict[str, Any], str | None]:
    """Evidence as it may be stored: words of unrecorded roles (segment text, matched
    phrases and signals) are left out, and so is a reason that quotes them."""
    stored = dict(evidence)
    stored["segments"] = [s if records(recording, s["role"]) else {**s, "text": None}
                          for s in evidence["segments"]]
    unrecorded = [t.role for t in trigger.turns if not records(recording, t.role)]
    if (trigger.matched or trigger.signals) and unrecorded:
        stored["matched"], stored["signals"] = [], {k: [] for k in trigger.signals}
        return stored, f"{unrecorded[0]} turn matched {trigger.rule.kind} rule (not recorded)"
    return stored, None


def _save_state(batch: WriteBatch, conversations: Iterable[Conversation], now: float) -> None:
    for conv in conversations:
        batch.conversations[conv.id] = (conv.metadata() | {"updated_at": now}, conv.snapshot())


def _key(event: p.Event) -> str | None:
    """The event's idempotency key: a segment's id, or a keyed event's event_id."""
    if isinstance(event, p.Segment):
        return event.segment_id
    event_id = getattr(event, "event_id", None)
    return None if event_id is None else event_key(event_id)


def _conversation_id(event: p.Event) -> str:
    if isinstance(event, p.ConversationStarted):
        return event.conversation.id
    return event.conversation_id


class Pipeline:
    def __init__(self, store: Store, hub: Hub, rules: RuleSet, rolling: RollingConfig,
                 batch_size: int = 500, scorer: Scorer | None = None) -> None:
        self.store, self.hub, self.rules, self.rolling = store, hub, rules, rolling
        self.batch_size = batch_size
        self.scorer = scorer or Scorer()
        self._timers: list[tuple[float, str]] = []  # (when, conversation id): clock rules
        self._wake = asyncio.Event()  # the earliest timer moved earlier
        self._lock = asyncio.Lock()  # one batch, tick or rules change at a time
        self.conversations: dict[str, Conversation] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._ended_applied: OrderedDict[str, set[str]] = OrderedDict()
        self._stale: set[str] = set()  # dropped from memory after a failure; reload them
        self.processed = 0
        self.batches = 0
        self._last_alert_ms = 0
        self._agents_due: asyncio.TimerHandle | None = None
        self._agents_sent_at = 0.0

    async def start(self) -> None:
        for stored in await self.store.load_conversations(None):
            self._restore(stored)

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
        while True:
            self._wake.clear()
            delay = max(0.0, self._timers[0][0] - time.time()) if self._timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            if self._timers and self._timers[0][0] <= time.time():
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
            self._forget({_conversation_id(d.event) for d in deliveries})
            for d in deliveries:
                d.source.refused.add(_conversation_id(d.event))
                d.settle(_error(d.event, p.ErrorCode.INTERNAL_ERROR,
                                "internal error; the event was not applied"))
        finally:
            bus.done(len(deliveries))

    async def process(self, deliveries: list[Delivery]) -> None:
        try:
            await self._load_missing(deliveries)
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

        batch, outbox = WriteBatch(), Outbox()
        touched: dict[str, Conversation] = {}
        replies: list[p.Reply] = []
        failed: set[str] = set()
        for i, d in enumerate(deliveries):
            if _conversation_id(d.event) in d.source.refused:
                replies.append(_error(d.event, p.ErrorCode.UNAVAILABLE,
                                      "an earlier event of this conversation from this "
                                      "connection was not applied; resend from that one"))
                continue
            try:
                replies.append(self._apply(d, scored.get(i), batch, outbox, touched))
            except Exception:
                log.exception("applying %s failed", d.event.type)
                failed.add(_conversation_id(d.event))
                replies.append(p.ErrorReply(code=p.ErrorCode.INTERNAL_ERROR, message=""))
        if failed:
            # One conversation's failure stays its own: drop its effects, keep the rest.
            replies = self._isolate(failed, deliveries, replies, batch, outbox, touched)
        _save_state(batch, touched.values(), time.time())
        try:
            await self.store.write(batch)
        except Exception:
            log.exception("store write failed; %d events not applied", len(deliveries))
            self._forget(touched)
            await self._reload_stale()  # back before anyone hears of the failure
            self._refuse(deliveries)
            self._resync(touched)
            return
        self.processed += len(deliveries)
        self.batches += 1
        if self._stale:  # a conversation of this batch failed and was dropped
            await self._reload_stale()
        for d, reply in zip(deliveries, replies, strict=True):
            d.settle(reply)
        outbox.run()
        if self.hub.subscribers(LIVE_TOPIC):
            now = time.time()
            for conv in touched.values():
                self.hub.publish(LIVE_TOPIC, {"type": "conversation.updated",
                                              "conversation": conv.summary(now)})
            self._schedule_agent_metrics()

    # -- rules and clock rules -----------------------------------------------------------

    async def change_rules(self, rules: RuleSet) -> None:
        """`set_rules` between batches, saving the rule state it changed."""
        async with self._lock:
            batch = WriteBatch()
            _save_state(batch, self.set_rules(rules), time.time())
            try:
                await self.store.write(batch)
            except Exception:
                # Memory is ahead of the store; each conversation's next batch saves it.
                log.exception("saving rule state after a rules change failed")

    def set_rules(self, rules: RuleSet) -> list[Conversation]:
        """Apply a new rule set from the next event on (clock rules: at once, to customers
        already waiting); returns the conversations whose rule state changed. A rule keeps
        its state per conversation (cooldown, hysteresis) across edits, except: a deleted
        rule's state is dropped, a rule that changes kind starts afresh, and a disabled
        rule forgets a streak in progress (turns it did not see cannot continue one)."""
        self.rules = rules
        self._timers.clear()
        changed = [conv for conv in self.conversations.values() if self._fit_states(conv)]
        for conv in self.conversations.values():
            self._schedule(conv)
        self._wake.set()
        return changed

    def _fit_states(self, conv: Conversation) -> bool:
        """Make a conversation's rule state fit the rules in force; whether it changed."""
        changed = False
        for rule_id, state in list(conv.rule_states.items()):
            rule = self.rules.get(rule_id)
            if rule is None or rule.kind != state.kind:
                del conv.rule_states[rule_id]
                changed = True
            elif not rule.enabled and (state.breaches or state.bot_failures):
                state.breaches.clear()
                state.bot_failures.clear()
                changed = True
        return changed

    def _schedule(self, conv: Conversation) -> None:
        if conv.status != "live":
            return
        pending = deadlines(self.rules, conv.rule_states, conv)
        if pending:
            if not self._timers or pending[0] < self._timers[0][0]:
                self._wake.set()
            heapq.heappush(self._timers, (pending[0], conv.id))

    async def tick(self, now: float | None = None) -> None:
        """Fire the clock rules that are due (response time), as one committed batch."""
        now = time.time() if now is None else now
        due_ids: dict[str, None] = {}
        while self._timers and self._timers[0][0] <= now:
            due_ids[heapq.heappop(self._timers)[1]] = None
        batch, outbox = WriteBatch(), Outbox()
        touched: dict[str, Conversation] = {}
        for cid in due_ids:
            conv = self.conversations.get(cid)
            if conv is None:
                continue
            for trigger in due(self.rules, conv.rule_states, conv, now, conv.last_customer_turn):
                self._raise(conv, trigger, now, batch, outbox)
                touched[cid] = conv
        _save_state(batch, touched.values(), now)
        try:
            await self.store.write(batch)
        except Exception:
            log.exception("store write failed; %d timed alerts not raised yet", len(touched))
            self._forget(touched)
            await self._reload_stale()  # reloaded conversations are rescheduled
            return
        outbox.run()
        for conv in (self.conversations.get(cid) for cid in due_ids):
            if conv is not None:
                self._schedule(conv)

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
            d.source.refused.add(_conversation_id(d.event))
            d.settle(_error(d.event, p.ErrorCode.UNAVAILABLE,
                            "storage is unavailable; the event was not applied, retry"))

    def _isolate(self, failed: set[str], deliveries: list[Delivery], replies: list[p.Reply],
                 batch: WriteBatch, outbox: Outbox,
                 touched: dict[str, Conversation]) -> list[p.Reply]:
        batch.drop(failed)
        outbox[:] = [(cid, effect) for cid, effect in outbox if cid not in failed]
        for cid in failed:
            touched.pop(cid, None)
        self._forget(failed)
        for d in deliveries:
            if _conversation_id(d.event) in failed:
                d.source.refused.add(_conversation_id(d.event))
        return [_error(d.event, p.ErrorCode.INTERNAL_ERROR,
                       "internal error; no event of this conversation in its batch was applied")
                if _conversation_id(d.event) in failed else reply
                for d, reply in zip(deliveries, replies, strict=True)]

    def _resync(self, conversation_ids: Collection[str]) -> None:
        """Tell live subscribers that what they saw may not have been kept."""
        message = {"type": "resync", "reason": "storage failure; reconnect for a fresh view"}
        for cid in conversation_ids:
            self.hub.publish(conversation_topic(cid), message)
        self.hub.publish(LIVE_TOPIC, message)

    # -- loading ------------------------------------------------------------------------

    async def _load_missing(self, deliveries: list[Delivery]) -> None:
        missing = set(self._stale)
        for d in deliveries:
            cid = _conversation_id(d.event)
            if cid in self.conversations:
                continue
            if cid not in self._ended or (
                    # A segment retried after its conversation ended must be recognised.
                    _key(d.event) is not None and cid not in self._ended_applied):
                missing.add(cid)
        if missing:
            for stored in await self.store.load_conversations(missing):
                self._restore(stored)
            self._stale.clear()  # what the store did not have was never committed

    async def _reload_stale(self) -> None:
        """Bring conversations dropped after a failure back at once, so live views and
        monitors do not lose them until their next event (retried per batch otherwise)."""
        try:
            await self._load_missing([])
        except Exception:
            log.warning("reloading %d conversations failed; will retry", len(self._stale))

    def _restore(self, stored: StoredConversation) -> None:
        if stored.meta["status"] != "live":
            self._remember_ended(stored.meta["id"], stored.applied)
            return
        conv = Conversation.restore(stored.meta, stored.state, stored.applied,
                                    stored.recent, self.rolling)
        self._fit_states(conv)  # the rules may have changed while it was stored
        self.conversations[conv.id] = conv
        self._schedule(conv)

    def _remember_ended(self, conversation_id: str, applied: set[str]) -> None:
        _remember(self._ended, conversation_id, None, ENDED_MEMORY)
        _remember(self._ended_applied, conversation_id, applied, ENDED_APPLIED_MEMORY)

    def _forget(self, touched: Collection[str]) -> None:
        """After a failed commit, drop what memory changed; the store is the truth."""
        for cid in touched:
            self.conversations.pop(cid, None)
            self._ended.pop(cid, None)
            self._ended_applied.pop(cid, None)
        self._stale.update(touched)

    # -- applying one event ------------------------------------------------------------------

    def _apply(self, d: Delivery, scores: Scores | None, batch: WriteBatch, outbox: Outbox,
               touched: dict[str, Conversation]) -> p.Reply:
        event, now = d.event, d.received_at
        cid = _conversation_id(event)
        if isinstance(event, p.ConversationStarted):
            if cid in self.conversations or cid in self._ended:
                return _ack(event, "duplicate")
            started = Conversation.start(event, now, self.rolling)
            self.conversations[cid] = touched[cid] = started
            batch.events.append(EventRow(cid, event.type, {"agent_id": started.agent_id,
                                                           "queue": started.queue}, now))
            return _ack(event)

        conv = self.conversations.get(cid)
        if conv is None:
            if cid in self._ended:
                if isinstance(event, p.ConversationEnded) or (
                        _key(event) in self._ended_applied.get(cid, ())):
                    return _ack(event, "duplicate" if getattr(event, "final", True) else "stale")
                return _error(event, p.ErrorCode.CONVERSATION_ENDED,
                              f"conversation {cid} has ended")
            return _error(event, p.ErrorCode.UNKNOWN_CONVERSATION,
                          f"conversation {cid} was never started")
        touched[cid] = conv
        if isinstance(event, p.Segment):
            return self._segment(conv, event, scores, now, batch, outbox)
        key = _key(event)
        if key is not None:
            if key in conv.applied:
                return _ack(event, "duplicate")
            conv.applied.add(key)

        if isinstance(event, p.ParticipantJoined):
            conv.join(event)
            payload: dict[str, Any] = {"participant": event.participant.model_dump()}
        elif isinstance(event, p.ParticipantLeft):
            conv.leave(event)
            payload = {"participant_id": event.participant_id}
        elif isinstance(event, p.Transferred):
            payload = {"from_agent_id": conv.agent_id, "from_queue": conv.queue,
                       "to_agent_id": event.to_agent_id, "to_queue": event.to_queue,
                       "reason": event.reason}
            conv.transfer(event)
        elif isinstance(event, p.BotHandover):
            payload = {"agent_id": event.agent_id}
            conv.handover(event)
        else:  # ConversationEnded
            conv.end(now)
            payload = {"reason": event.reason}
            del self.conversations[cid]
            self._remember_ended(cid, conv.applied)
        batch.events.append(EventRow(cid, event.type, payload, now,
                                     getattr(event, "event_id", None)))
        outbox.add(cid, partial(self._to_monitors, conv,
                              {"type": event.type, "conversation_id": cid, "at": now, **payload}))
        self._schedule(conv)  # a transfer can bring the conversation into a clock rule's scope
        return _ack(event)

    def _segment(self, conv: Conversation, event: p.Segment, scores: Scores | None, now: float,
                 batch: WriteBatch, outbox: Outbox) -> p.Reply:
        if event.segment_id in conv.applied:
            # A retried final is a duplicate; a partial after its final is stale.
            return _ack(event, "duplicate" if event.final else "stale")
        participant = event.participant_id or conv.default_participant(event.role)
        if not event.final:
            conv.counts["partial"] += 1
            outbox.add(conv.id, partial(self._to_monitors, conv, {
                "type": "segment", "conversation_id": conv.id, "segment_id": event.segment_id,
                "role": event.role, "participant_id": participant, "text": event.text,
                "final": False, "at": now}, keep=False))
            return _ack(event)
        assert scores is not None
        turn, late = conv.add_final(event, scores, now)
        seq = conv.take_seq()
        kept = records(conv.recording, event.role)
        batch.segments.append(SegmentRow(
            conversation_id=conv.id, segment_id=event.segment_id, seq=seq, role=event.role,
            participant_id=turn.participant_id, text=event.text if kept else None,
            scores=scores.as_dict(),
            started_at=event.started_at.timestamp() if event.started_at else None,
            ended_at=event.ended_at.timestamp() if event.ended_at else None,
            received_at=now, late=late))
        outbox.add(conv.id, partial(self._to_monitors, conv, {
            "type": "segment", "conversation_id": conv.id, "seq": seq,
            "segment_id": event.segment_id, "role": event.role,
            "participant_id": turn.participant_id, "text": event.text, "recorded": kept,
            "final": True, "scores": scores.as_dict(), "at": now, "late": late}))
        for trigger in evaluate(self.rules, conv.rule_states, turn, conv):
            self._raise(conv, trigger, now, batch, outbox)
        self._schedule(conv)
        return _ack(event, scores=scores.as_dict(), late=late)

    def _new_alert_id(self, now: float) -> str:
        """Sortable and unguessable: strictly increasing milliseconds, then 64 random bits."""
        self._last_alert_ms = max(int(now * 1000), self._last_alert_ms + 1)
        return f"{self._last_alert_ms:012x}{secrets.token_hex(8)}"

    def _raise(self, conv: Conversation, trigger: Trigger, now: float, batch: WriteBatch,
               outbox: Outbox) -> None:
        conv.alerts += 1
        rule = trigger.rule
        evidence: dict[str, Any] = {
            "rule": rule.model_dump(mode="json"), "metric": trigger.metric,
            "window": None if trigger.window is None else list(trigger.window),
            "matched": list(trigger.matched), "signals": trigger.signals,
            "segments": [t.evidence() for t in trigger.turns]}
        alert: dict[str, Any] = {
            "id": self._new_alert_id(now), "conversation_id": conv.id, "rule_id": rule.id,
            "rule_version": rule.version, "rule_name": rule.name, "kind": rule.kind,
            "severity": rule.severity, "reason": trigger.reason, "raised_at": now,
            "agent_id": conv.agent_id, "queue": conv.queue, "status": "open",
            "evidence": evidence,
        }
        stored, reason = _as_recorded(conv.recording, trigger, evidence)
        batch.alerts.append(AlertRow(
            id=alert["id"], conversation_id=conv.id, rule_id=rule.id, rule_version=rule.version,
            rule_name=rule.name, kind=rule.kind, severity=rule.severity,
            reason=reason or trigger.reason, raised_at=now, agent_id=conv.agent_id,
            queue=conv.queue, evidence=stored))
        message = {"type": "alert", "alert": alert}
        outbox.add(conv.id, partial(self._to_monitors, conv, message))
        outbox.add(conv.id, partial(self.hub.publish, ALERTS_TOPIC, message,
                                    {"agent_id": conv.agent_id, "queue": conv.queue}))

    def _to_monitors(self, conv: Conversation, message: dict[str, Any],
                     keep: bool = True) -> None:
        # Kept entries feed a new monitor's catch-up; appending here, after the commit and
        # in the same step as publishing, means catch-up and live never overlap or gap.
        if keep:
            conv.recent.append(message)
        self.hub.publish(conversation_topic(conv.id), message)
