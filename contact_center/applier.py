"""The pipeline's logic: applies events to live conversation state and decides what to
store, what to answer and what to publish. No I/O: the pipeline (`pipeline.py`) loads what
is missing, scores, commits the `Effects`, then answers and publishes them.
"""

from __future__ import annotations

import heapq
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet, Trigger, deadlines, due, evaluate
from analytics.scoring import Scores
from contact_center import protocol as p
from contact_center.conversation import Conversation
from contact_center.stores import (
    AlertEventRow,
    EventRow,
    SegmentRow,
    StoredConversation,
    WriteBatch,
    event_key,
)
from monitoring import alerts
from monitoring import messages as live
from monitoring.alerts import AlertPolicy, TransitionError
from monitoring.messages import (
    WHISPERS_TOPIC,
    LiveMessage,
    connector_topic,
    conversation_topic,
)
from monitoring.presence import supervisor_participant
from monitoring.recording import Policies, records
from monitoring.words import evidence_without_words, quoting_reason

log = logging.getLogger(__name__)
V = TypeVar("V")

ENDED_MEMORY = 50_000  # ended conversation ids remembered to answer late events fast
ENDED_APPLIED_MEMORY = 1_000  # ... and the idempotency keys of the latest ones, for retries
TIMERS_PER_TICK = 1_000  # due timers handled in one tick (one batch); the rest right after
IDLE_TIMEOUT_REASON = "idle_timeout"
RESTORE_GRACE_SECONDS = 60.0  # a conversation restored idle past its time lives this long


@dataclass(slots=True, frozen=True)
class Ending:
    """A conversation ended by a batch not committed yet, as the live views go on
    showing it until then: as it stood just before the end."""

    conv: Conversation
    summary: dict[str, Any]
    number: int  # its last message's
    alert_open: bool  # (the end may resolve its alert in place)


@dataclass(slots=True)
class Effects:
    """What applying a batch decided: rows to commit, then messages to publish."""

    batch: WriteBatch = field(default_factory=WriteBatch)
    messages: list[LiveMessage] = field(default_factory=list)
    touched: dict[str, Conversation] = field(default_factory=dict)
    ended: list[str] = field(default_factory=list)  # the conversations it ends
    replies: list[p.Reply] = field(default_factory=list)  # per event, in order
    position: Any = None  # where the batch came from (a scale-out worker's stream entries)
    hits: list[tuple[str, str]] = field(default_factory=list)  # (rule id, severity)

    def to_monitors(self, conv: Conversation, body: dict[str, Any], keep: bool = True,
                    said: str | None = None) -> None:
        """``said``: a turn's words as said, where redaction changed them."""
        self.messages.append(LiveMessage(conv.id, conversation_topic(conv.id), body, keep,
                                         number=conv.take_message_number(),
                                         said=None if said == body.get("text") else said))

    def to_connector(self, conv: Conversation, body: dict[str, Any]) -> None:
        """Push to the connector socket that feeds the conversation (if one takes pushes)."""
        if conv.outbound:
            self.messages.append(LiveMessage(conv.id, connector_topic(conv.id), body))

    def to_agent(self, conv: Conversation, body: dict[str, Any]) -> None:
        """Push to the alert stream of the conversation's agent alone."""
        self.messages.append(LiveMessage(conv.id, WHISPERS_TOPIC, body,
                                         match={"to_agent": conv.agent_id}))

    def drop(self, conversation_ids: set[str]) -> None:
        """Forget everything these conversations would have written or published."""
        self.batch.drop(conversation_ids)
        self.messages = [m for m in self.messages if m.conversation_id not in conversation_ids]
        for cid in conversation_ids:
            self.touched.pop(cid, None)

    def alert_event(self, conv: Conversation, event_type: str, at: float,
                    by: str | None = None, origin: str | None = None) -> None:
        """Store the conversation's alert as it now is, with this event, and push it to
        its monitors (and, once committed and numbered, to the alert streams)."""
        assert conv.alert is not None
        alert = alerts.snapshot(conv.alert)
        message = alerts.event(event_type, None, alert)
        self.batch.alerts[alert["id"]] = alert
        self.batch.alert_events.append(AlertEventRow(alert, event_type, at, by, origin,
                                                     message))
        self.to_monitors(conv, message)

    def save_state(self, now: float) -> None:
        """Add the touched conversations' state to the batch."""
        for conv in self.touched.values():
            self.batch.conversations[conv.id] = (conv.metadata() | {"updated_at": now},
                                                 conv.snapshot())


def _ack(event: p.Submitted, status: p.AckStatus = "accepted", **extra: Any) -> p.Ack:
    return p.Ack(ref=event.ref, event=event.type, status=status,
                 conversation_id=conversation_of(event),
                 segment_id=getattr(event, "segment_id", None), **extra)


def already_applied(event: p.Submitted) -> p.Ack:
    """The answer to an event applied before (a redelivery)."""
    return _ack(event, "duplicate")


def error_reply(event: p.Submitted, code: p.ErrorCode, message: str) -> p.ErrorReply:
    return p.ErrorReply(ref=event.ref, code=code, message=message,
                        conversation_id=conversation_of(event),
                        segment_id=getattr(event, "segment_id", None))


def _remember(memory: OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    """Insert as the newest entry, forgetting the oldest beyond ``limit``."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


Redact = Callable[[str], str]
"""What of a text may be kept or shown (`monitoring.redaction`)."""


def _as_said(text: str) -> str:
    return text


def _as_recorded(conv: Conversation, trigger: Trigger, evidence: dict[str, Any],
                 redact: Redact) -> tuple[dict[str, Any], str | None]:
    """Evidence as it may be stored: words not recorded (of a role the policy does not
    keep, or said while recording was paused) are left out, and so is a reason that
    quotes them (`monitoring.words`); the words kept are redacted."""
    def kept(segment: dict[str, Any]) -> bool:
        return records(conv.recording, segment["role"]) and \
            segment["segment_id"] not in conv.unrecorded

    stored, quoted = evidence_without_words(evidence, kept, redact)
    return stored, None if quoted is None else quoting_reason(quoted, trigger.rule.kind,
                                                              "not recorded")


def _key(event: p.Submitted) -> str | None:
    """The event's idempotency key: a segment's id, or a keyed event's event_id."""
    if isinstance(event, p.Segment):
        return event.segment_id
    if isinstance(event, p.SupervisorCommand):  # (a turn's is its segment id)
        return event.segment_id if event.action == "say" else event_key(event.command_id)
    event_id = getattr(event, "event_id", None)
    return None if event_id is None else event_key(event_id)


def scored_text(event: p.Submitted) -> str | None:
    """The words of a turn to score: a final segment's, or a barged supervisor's."""
    if isinstance(event, p.Segment):
        return event.text if event.final else None
    if isinstance(event, p.SupervisorCommand) and event.action == "say":
        return event.text
    return None


def _refusal(conv: Conversation, command: p.SupervisorCommand) -> p.ProtocolError | None:
    """Why a supervisor may not do this now, if they may not."""
    if command.action == "whisper" and conv.agent_id is None:
        return p.ProtocolError(p.ErrorCode.NO_AGENT, "the conversation has no agent to "
                                                     "whisper to")
    if command.action in ("say", "leave") and not conv.barged(command.by):
        return p.ProtocolError(p.ErrorCode.NOT_BARGED, f"{command.by} has not barged into "
                                                       f"conversation {conv.id}")
    if command.action in ("barge", "say") and not conv.outbound:
        return p.ProtocolError(p.ErrorCode.NO_CONNECTOR, (
            "no connector socket that takes pushes (?outbound=true) feeds this "
            "conversation: nobody would pass a supervisor's words to the customer"))
    return None


def conversation_of(event: p.Submitted) -> str:
    if isinstance(event, p.ConversationStarted):
        return event.conversation.id
    return event.conversation_id


class Applier:
    """Live conversations and what the rules remember of them; applies events."""

    def __init__(self, rules: RuleSet, rolling: RollingConfig,
                 on_earlier_timer: Callable[[], None] = lambda: None,
                 idle_timeout: float = 0.0, policy: AlertPolicy | None = None,
                 redact: Redact | None = None, recording: Policies | None = None) -> None:
        """``idle_timeout``: a live conversation with no event for this long (seconds) ends
        itself (reason ``idle_timeout``); 0: never. ``policy``: what happens to alerts on
        their own. ``redact``: what of a text may be kept or shown (PII out); scoring and
        the rules read the text as said, in memory only. ``recording``: the policy of a
        conversation that names none."""
        self.rules, self.rolling = rules, rolling
        self.redact: Redact = redact or _as_said
        self.recording = recording or Policies()
        self.policy = policy or AlertPolicy()
        self.idle_timeout = idle_timeout
        self.conversations: dict[str, Conversation] = {}
        # Ended by a batch not committed yet: out of `conversations` (events after the
        # end are refused at once), but listed live until the end is in the store.
        self.ending: dict[str, Ending] = {}
        self.timers: list[tuple[float, str]] = []  # (when, conversation id): clock rules
        self.stale: set[str] = set()  # dropped from memory after a failure; reload them
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._ended_applied: OrderedDict[str, set[str]] = OrderedDict()
        self._last_alert_ms = 0
        self._on_earlier_timer = on_earlier_timer

    # -- what to load, restoring, forgetting -------------------------------------------------

    def missing(self, events: Iterable[p.Submitted]) -> set[str]:
        """Conversations to load from the store before these events can be applied."""
        missing = set(self.stale)
        for event in events:
            cid = conversation_of(event)
            if cid in self.conversations:
                continue
            if cid not in self._ended or (
                    # A retry after its conversation ended must be recognised.
                    _key(event) is not None and cid not in self._ended_applied) or (
                    # A start under the id of one that ended: erased since, it starts
                    # afresh (see Pipeline._load); else it is a duplicate.
                    isinstance(event, p.ConversationStarted)):
                missing.add(cid)
        return missing

    def knows(self, conversation_id: str) -> bool:
        """Whether memory has its say on this conversation (live, ended, or to reload)."""
        return (conversation_id in self.conversations or conversation_id in self._ended
                or conversation_id in self.stale)

    def restore(self, stored: StoredConversation) -> None:
        if stored.meta["status"] != "live":
            self._remember_ended(stored.meta["id"], stored.applied)
            return
        conv = Conversation.restore(stored.meta, stored.state, stored.applied,
                                    stored.recent, self.rolling, stored.alert)
        self._fit_states(conv)  # the rules may have changed while it was stored
        if self.idle_timeout:
            # Idle past its time while nobody applied its events (a restart, a worker
            # taking its partition over): its events still queued come first.
            now = time.time()
            if conv.last_activity_at + self.idle_timeout <= now:
                grace = min(self.idle_timeout, RESTORE_GRACE_SECONDS)
                conv.last_activity_at = now - self.idle_timeout + grace
        self.conversations[conv.id] = conv
        self.schedule(conv)

    def _remember_ended(self, conversation_id: str, applied: set[str]) -> None:
        _remember(self._ended, conversation_id, None, ENDED_MEMORY)
        _remember(self._ended_applied, conversation_id, applied, ENDED_APPLIED_MEMORY)
        self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the entries of conversations no longer here (ended, let go of) once they
        outnumber the live ones: memory stays in line with the live conversations."""
        if len(self.timers) > 2 * len(self.conversations) + 1024:
            self.timers[:] = [(c.timer_at, c.id) for c in self.conversations.values()
                              if c.timer_at is not None]
            heapq.heapify(self.timers)

    def drop(self, conversation_ids: Collection[str]) -> None:
        """Let go of conversations another worker now applies (their timers lapse)."""
        for cid in conversation_ids:
            self.conversations.pop(cid, None)
            self.ending.pop(cid, None)
            self._ended.pop(cid, None)
            self._ended_applied.pop(cid, None)
            self.stale.discard(cid)

    def forget(self, conversation_ids: Collection[str]) -> None:
        """After a failed commit, drop what memory changed, to reload it from the store
        (the truth)."""
        self.drop(conversation_ids)
        self.stale.update(conversation_ids)

    def committed(self, effects: Effects) -> None:
        """Their batch is in the store: the conversations it ended leave the live views
        (only those: one ended by the batch applied after it is not stored yet)."""
        for cid in effects.ended:
            self.ending.pop(cid, None)

    # -- rules and clock rules -------------------------------------------------------------

    def set_rules(self, rules: RuleSet) -> list[Conversation]:
        """Apply a new rule set from the next event on (clock rules: at once, to customers
        already waiting); returns the conversations whose rule state changed. A rule keeps
        its state per conversation (cooldown, hysteresis) across edits, except: a deleted
        rule's state is dropped, a rule that changes kind starts afresh, and a disabled
        rule forgets a streak in progress (turns it did not see cannot continue one)."""
        self.rules = rules
        self.timers.clear()
        changed = [conv for conv in self.conversations.values() if self._fit_states(conv)]
        for conv in self.conversations.values():
            conv.timer_at = None
            self.schedule(conv)
        self._on_earlier_timer()
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
                if state.fresh:  # (a disabled rule's is never evaluated to drop it)
                    del conv.rule_states[rule_id]
                changed = True
        return changed

    def schedule(self, conv: Conversation) -> None:
        """Queue the conversation's next clock check: its clock rules' earliest deadline,
        or when it would be idle too long. One entry in the queue at a time is enough (an
        earlier one checks, then schedules again): events do not grow the queue."""
        if conv.status != "live":
            return
        pending = deadlines(self.rules, conv.rule_states, conv)
        when = pending[0] if pending else None
        renotify = alerts.renotify_at(conv.alert, self.policy)
        if renotify is not None:
            when = renotify if when is None else min(when, renotify)
        if self.idle_timeout:
            idle_at = conv.last_activity_at + self.idle_timeout
            when = idle_at if when is None else min(when, idle_at)
        if when is None or (conv.timer_at is not None and conv.timer_at <= when):
            return
        earlier = not self.timers or when < self.timers[0][0]
        heapq.heappush(self.timers, (when, conv.id))
        conv.timer_at = when
        if earlier:
            self._on_earlier_timer()

    def fire_due(self, now: float, effects: Effects) -> list[Conversation]:
        """End the conversations idle too long and raise the clock rules' alerts due at
        ``now`` (TIMERS_PER_TICK at most); returns the conversations whose timers fired
        (to schedule again once committed)."""
        due_ids: dict[str, None] = {}
        while self.timers and self.timers[0][0] <= now and len(due_ids) < TIMERS_PER_TICK:
            when, cid = heapq.heappop(self.timers)
            conv = self.conversations.get(cid)
            if conv is not None and conv.timer_at == when:
                conv.timer_at = None
            due_ids[cid] = None
        fired = []
        for cid in due_ids:
            conv = self.conversations.get(cid)
            if conv is None:
                continue
            try:
                if self.idle_timeout and now >= conv.last_activity_at + self.idle_timeout:
                    effects.touched[cid] = conv
                    self._end(conv, now, {"reason": IDLE_TIMEOUT_REASON}, effects)
                    continue
                for trigger in due(self.rules, conv.rule_states, conv, now,
                                   conv.last_customer_turn):
                    effects.touched[cid] = conv
                    self._raise(conv, trigger, now, effects)
                renotify = alerts.renotify_at(conv.alert, self.policy)
                if conv.alert is not None and renotify is not None and renotify <= now:
                    effects.touched[cid] = conv
                    effects.alert_event(conv, alerts.renotify(conv.alert, now), now)
            except Exception:  # (a bug) this conversation alone is reloaded from the store
                log.exception("the clock failed on conversation %s", cid)
                effects.drop({cid})
                self.forget({cid})
                continue
            fired.append(conv)
        return fired

    # -- applying a batch ---------------------------------------------------------------------

    def apply_all(self, events: list[tuple[p.Submitted, float, Scores | None, set[str], bool]],
                  effects: Effects) -> list[p.Reply]:
        """Apply events (each with its received time, scores, its source's refused
        conversations, and whether its source takes pushes); one conversation's failure
        stays its own."""
        replies: list[p.Reply] = []
        failed: set[str] = set()
        for event, received_at, scores, refused, outbound in events:
            cid = conversation_of(event)
            if cid in refused:
                replies.append(error_reply(event, p.ErrorCode.UNAVAILABLE,
                                      "an earlier event of this conversation from this "
                                      "connection was not applied; resend from that one"))
                continue
            try:
                replies.append(self.apply(event, received_at, scores, effects, outbound))
            except Exception:
                log.exception("applying %s failed", event.type)
                failed.add(cid)
                replies.append(p.ErrorReply(code=p.ErrorCode.INTERNAL_ERROR, message=""))
        if failed:
            effects.drop(failed)
            self.forget(failed)
            for event, _, _, refused, _ in events:
                if conversation_of(event) in failed:
                    refused.add(conversation_of(event))
            replies = [error_reply(e[0], p.ErrorCode.INTERNAL_ERROR, "internal error; no event of "
                              "this conversation in its batch was applied")
                       if conversation_of(e[0]) in failed else reply
                       for e, reply in zip(events, replies, strict=True)]
        return replies

    def apply(self, event: p.Submitted, now: float, scores: Scores | None,
              effects: Effects, outbound: bool = False) -> p.Reply:
        """Apply one event to memory, adding what to store and publish to ``effects``.
        ``outbound``: it came over a connector socket that takes pushes."""
        batch, touched = effects.batch, effects.touched
        cid = conversation_of(event)
        if isinstance(event, p.ConversationStarted):
            if cid in self.conversations or cid in self._ended:
                return _ack(event, "duplicate")
            info = event.conversation
            started = Conversation.start(
                event, now, self.rolling, self.recording.of(info.queue, info.recording),
                self.recording.keeps_partials(info.queue, info.recording_partials))
            started.outbound = outbound
            self.conversations[cid] = touched[cid] = started
            batch.events.append(EventRow(cid, event.type, {"agent_id": started.agent_id,
                                                           "queue": started.queue}, now))
            self.schedule(started)  # (its idle timeout)
            return _ack(event)

        conv = self.conversations.get(cid)
        if conv is None:
            if cid in self._ended:
                if isinstance(event, p.ConversationEnded) or (
                        _key(event) in self._ended_applied.get(cid, ())):
                    return _ack(event, "duplicate" if getattr(event, "final", True) else "stale")
                return error_reply(event, p.ErrorCode.CONVERSATION_ENDED,
                              f"conversation {cid} has ended")
            return error_reply(event, p.ErrorCode.UNKNOWN_CONVERSATION,
                          f"conversation {cid} was never started")
        touched[cid] = conv
        if isinstance(event, p.AlertCommand):
            return self._command(conv, event, now, effects)
        if isinstance(event, p.SupervisorCommand):
            return self._supervise(conv, event, scores, now, effects)
        conv.outbound = outbound  # (where its connector is now)
        if isinstance(event, p.Segment):
            return self._segment(conv, event, scores, now, effects)
        key = _key(event)
        if key is not None:
            if key in conv.applied:
                return _ack(event, "duplicate")
            conv.applied.add(key)
        conv.last_activity_at = max(conv.last_activity_at, now)  # (applied: not a retry)

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
            self._follow(conv, now, effects)
        elif isinstance(event, p.RecordingPaused | p.RecordingResumed):
            conv.recording_paused = isinstance(event, p.RecordingPaused)
            payload = {"reason": getattr(event, "reason", None)}
        elif isinstance(event, p.BotHandover):
            payload = {"agent_id": event.agent_id}
            conv.handover(event)
            self._follow(conv, now, effects)
        else:  # ConversationEnded
            self._end(conv, now, {"reason": event.reason}, effects,
                      getattr(event, "event_id", None))
            return _ack(event)
        batch.events.append(EventRow(cid, event.type, payload, now,
                                     getattr(event, "event_id", None)))
        effects.to_monitors(conv, live.conversation_event(event.type, cid, now, payload))
        self.schedule(conv)  # a transfer can bring the conversation into a clock rule's scope
        return _ack(event)

    def _follow(self, conv: Conversation, now: float, effects: Effects) -> None:
        """An unresolved alert follows its conversation to its new agent and queue."""
        if alerts.is_open(conv.alert):
            assert conv.alert is not None
            effects.alert_event(conv, alerts.move_to(conv.alert, conv.agent_id, conv.queue),
                                now)

    def _end(self, conv: Conversation, now: float, payload: dict[str, Any],
             effects: Effects, event_id: str | None = None) -> None:
        self.ending[conv.id] = Ending(conv, conv.summary(now), conv.published,
                                      alerts.is_open(conv.alert))
        effects.ended.append(conv.id)
        if self.policy.resolve_on_end and alerts.is_open(conv.alert):
            assert conv.alert is not None
            alerts.resolve(conv.alert, now, alerts.CONVERSATION_ENDED)
            effects.alert_event(conv, "alert.resolved", now)
        conv.end(now)
        del self.conversations[conv.id]
        self._remember_ended(conv.id, conv.applied)
        effects.batch.events.append(EventRow(conv.id, "conversation.ended", payload, now,
                                             event_id))
        ended = live.conversation_event("conversation.ended", conv.id, now, payload)
        effects.to_monitors(conv, ended)
        effects.to_connector(conv, ended)  # (its socket stops following it)

    def _segment(self, conv: Conversation, event: p.Segment, scores: Scores | None, now: float,
                 effects: Effects) -> p.Reply:
        if event.segment_id in conv.applied:
            # A retried final is a duplicate; a partial after its final is stale.
            return _ack(event, "duplicate" if event.final else "stale")
        conv.last_activity_at = max(conv.last_activity_at, now)
        participant = event.participant_id or conv.default_participant(event.role)
        if not event.final:
            conv.counts["partial"] += 1
            shown = self.redact(event.text)
            if conv.partials_kept and records(conv.recording, event.role) \
                    and not conv.recording_paused:
                effects.batch.events.append(EventRow(conv.id, "segment.partial", {
                    "segment_id": event.segment_id, "role": event.role,
                    "participant_id": participant, "text": shown}, now))
            effects.to_monitors(conv, live.partial_segment(
                conv.id, event.segment_id, event.role, participant, shown, now),
                keep=False, said=event.text)
            return _ack(event)
        assert scores is not None
        turn, late = conv.add_final(event, scores, now)
        seq = conv.take_seq()
        kept = records(conv.recording, event.role) and not conv.recording_paused
        if conv.recording_paused:
            conv.unrecorded.add(event.segment_id)
        shown = self.redact(event.text)
        as_dict = scores.as_dict()  # (shared by the row, the message and the ack: not mutated)
        effects.batch.segments.append(SegmentRow(
            conversation_id=conv.id, segment_id=event.segment_id, seq=seq, role=event.role,
            participant_id=turn.participant_id, text=shown if kept else None,
            scores=as_dict,
            started_at=event.started_at.timestamp() if event.started_at else None,
            ended_at=event.ended_at.timestamp() if event.ended_at else None,
            received_at=now, late=late))
        effects.to_monitors(conv, live.final_segment(
            conv.id, seq, event.segment_id, event.role, turn.participant_id, shown, kept,
            as_dict, now, late), said=event.text)
        hits = 0
        for trigger in evaluate(self.rules, conv.rule_states, turn, conv):
            self._raise(conv, trigger, now, effects)
            hits += 1
        if event.role == "customer" and not hits and alerts.is_open(conv.alert):
            assert conv.alert is not None
            conv.recovering, recovered = alerts.recovery(conv.recovering, conv.rolling.mean,
                                                         self.policy)
            if recovered:
                alerts.resolve(conv.alert, now, alerts.RECOVERED)
                effects.alert_event(conv, "alert.resolved", now)
        self.schedule(conv)
        return _ack(event, scores=as_dict, late=late)

    def _command(self, conv: Conversation, command: p.AlertCommand, now: float,
                 effects: Effects) -> p.Reply:
        """A person's change to the conversation's alert (see `monitoring.alerts`)."""
        key = event_key(command.command_id)
        if key in conv.applied:
            return _ack(command, "duplicate")
        alert = conv.alert
        if alert is None or alert["id"] != command.alert_id:
            # Not its newest: an older one, resolved when the newer one was raised.
            return error_reply(command, p.ErrorCode.INVALID_TRANSITION,
                               f"alert {command.alert_id} is resolved and a newer alert on "
                               "its conversation followed it; only the newest can change")
        if command.agent_id is not None and alert["agent_id"] != command.agent_id:
            return error_reply(command, p.ErrorCode.INVALID_TRANSITION,
                               "the alert is no longer on your conversation")
        try:
            event_type = alerts.transition(alert, command.action, command.version,
                                           command.by, now, assignee=command.assignee,
                                           note=command.note)
        except TransitionError as exc:
            return error_reply(command, p.ErrorCode(exc.code), exc.message)
        conv.applied.add(key)
        if event_type == "alert.reopened":
            conv.recovering = 0
        effects.batch.events.append(EventRow(conv.id, event_type, {
            "alert_id": alert["id"], "by": command.by, "from": command.origin,
            "assignee": command.assignee, "note": command.note}, now, command.command_id))
        effects.alert_event(conv, event_type, now, command.by, command.origin)
        self.schedule(conv)  # (a reopened alert re-notifies)
        return _ack(command)

    def _supervise(self, conv: Conversation, command: p.SupervisorCommand,
                   scores: Scores | None, now: float, effects: Effects) -> p.Reply:
        """A supervisor whispers to the agent, barges in, says something, or leaves."""
        if _key(command) in conv.applied:
            return _ack(command, "duplicate")
        if command.action == "barge" and conv.barged(command.by):
            return _ack(command, "duplicate")  # (a retry: already in)
        refusal = _refusal(conv, command)
        if refusal is not None:
            return error_reply(command, refusal.code, refusal.message)
        if command.action == "say":
            return self._say(conv, command, scores, now, effects)
        conv.applied.add(event_key(command.command_id))
        conv.last_activity_at = max(conv.last_activity_at, now)
        if command.action == "whisper":
            assert command.text is not None
            shown = self.redact(command.text)
            kept = shown if records(conv.recording, "agent") and not conv.recording_paused \
                else None
            effects.batch.events.append(EventRow(conv.id, "whisper", {
                "whisper_id": command.command_id, "by": command.by,
                "agent_id": conv.agent_id, "text": kept}, now, command.command_id))
            body = live.whisper(conv.id, command.command_id, conv.agent_id, command.by,
                                shown, now)
            effects.to_agent(conv, body)
        elif command.action == "barge":
            payload: dict[str, Any] = {"participant": conv.barge(command.by, now),
                                       "by": command.by}
            effects.batch.events.append(EventRow(conv.id, "participant.joined", payload, now,
                                                 command.command_id))
            body = live.conversation_event("participant.joined", conv.id, now, payload)
        else:  # leave
            payload = {"participant_id": conv.leave_barge(command.by), "by": command.by}
            effects.batch.events.append(EventRow(conv.id, "participant.left", payload, now,
                                                 command.command_id))
            body = live.conversation_event("participant.left", conv.id, now, payload)
        effects.to_monitors(conv, body)
        effects.to_connector(conv, body)
        self.schedule(conv)
        return _ack(command)

    def _say(self, conv: Conversation, command: p.SupervisorCommand, scores: Scores | None,
             now: float, effects: Effects) -> p.Reply:
        """A barged supervisor's turn: a final segment like any other (scored, recorded
        under the policy, read by the rules, on monitors), and passed to the customer."""
        assert command.segment_id is not None and command.text is not None
        participant = supervisor_participant(command.by)
        turn = p.Segment.model_construct(
            conversation_id=conv.id, segment_id=command.segment_id, role="supervisor",
            participant_id=participant, text=command.text, final=True, ref=None,
            started_at=None, ended_at=None)
        reply = self._segment(conv, turn, scores, now, effects)
        if isinstance(reply, p.Ack) and reply.status == "accepted":
            effects.to_connector(conv, live.supervisor_message(
                conv.id, command.segment_id, participant, command.text, now))
        return reply

    def _new_alert_id(self, now: float, previous: dict[str, Any] | None) -> str:
        """Sortable and unguessable: strictly increasing milliseconds, then 64 random bits;
        after the conversation's ``previous`` alert even if another worker's clock was
        ahead (its newest alert is the one with the highest id)."""
        after = 0 if previous is None else int(previous["id"][:12], 16)
        self._last_alert_ms = max(int(now * 1000), self._last_alert_ms + 1, after + 1)
        return f"{self._last_alert_ms:012x}{secrets.token_hex(8)}"

    def _raise(self, conv: Conversation, trigger: Trigger, now: float,
               effects: Effects) -> None:
        """A rule fired: a hit, joining the conversation's unresolved alert or opening a
        new one."""
        rule = trigger.rule
        evidence: dict[str, Any] = {
            "rule": rule.model_dump(mode="json"), "metric": trigger.metric,
            "window": None if trigger.window is None else list(trigger.window),
            "matched": list(trigger.matched), "signals": trigger.signals,
            "segments": [t.evidence() for t in trigger.turns]}
        # Words of unrecorded roles are left out: the alert is stored, and a client that
        # resumes must get what a live one got.
        stored, reason = _as_recorded(conv, trigger, evidence, self.redact)
        hit = {"rule_id": rule.id, "rule_version": rule.version, "rule_name": rule.name,
               "kind": rule.kind, "severity": rule.severity,
               "reason": reason or trigger.reason, "raised_at": now, "evidence": stored}
        conv.recovering = 0
        effects.hits.append((rule.id, rule.severity))
        if alerts.is_open(conv.alert):
            assert conv.alert is not None
            effects.alert_event(conv, alerts.add_hit(conv.alert, hit), now)
            return
        conv.alerts += 1
        conv.alert = alerts.new_alert(self._new_alert_id(now, conv.alert), conv.id, conv.agent_id,
                                      conv.queue, hit)
        effects.alert_event(conv, "alert.raised", now)
