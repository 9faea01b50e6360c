"""The conversation model and its lifecycle: live state kept per conversation.

Everything here is pure: the pipeline runner calls these methods with already-scored
segments and a clock reading, and does all I/O itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from analytics.rolling import RollingConfig, RollingSentiment
from analytics.rules import RuleState, Turn, track_wait
from analytics.scoring import Scores
from contact_center import protocol as p
from monitoring.messages import RECENT_LIMIT
from monitoring.presence import supervisor_participant
from monitoring.recording import RecordingPolicy


@dataclass(slots=True)
class Conversation:
    id: str
    channel: str
    queue: str
    agent_id: str | None
    customer: dict[str, Any]
    recording: str
    attributes: dict[str, str]
    started_at: float
    rolling: RollingSentiment
    status: str = "live"
    ended_at: float | None = None
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)  # segment ids and keyed events' keys
    next_seq: int = 1
    rule_states: dict[str, RuleState] = field(default_factory=dict)
    last_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    start_sentiment: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: {
        "customer": 0, "agent": 0, "bot": 0, "supervisor": 0, "partial": 0})
    customer_waiting_since: float | None = None
    last_customer_turn: Turn | None = None  # what a response-time alert points at
    last_final_started_at: float | None = None
    alerts: int = 0
    transfers: int = 0
    published: int = 0  # number of the last monitor message: orders catch-up and live
    # ... of the last one published (numbers are taken when a batch is applied, and its
    # messages published once it is committed): a catch-up covers up to this one.
    shown: int = 0
    # The newest RECENT_LIMIT transcript entries (see `remember`). A list, not a
    # deque(maxlen): an empty deque takes over 600 bytes, times every live conversation.
    recent: list[dict[str, Any]] = field(default_factory=list)
    last_activity_at: float = 0.0  # when its last event was applied (the idle timeout)
    # Its newest alert, whatever its status (`monitoring.alerts`); stored in the alerts
    # table, not in the snapshot.
    alert: dict[str, Any] | None = None
    recovering: int = 0  # customer turns in a row above the recovery threshold
    timer_at: float | None = None  # its earliest entry in the applier's timers (not saved)
    # Whether its connector's latest event came over a socket that takes pushes (whisper,
    # barge): without one, nobody would pass a supervisor's words to the customer.
    outbound: bool = False
    # While the connector paused recording: the segment ids said meanwhile (their words
    # are kept nowhere, alerts' evidence included).
    recording_paused: bool = False
    unrecorded: set[str] = field(default_factory=set)
    partials_kept: bool = False  # its recording policy keeps partial hypotheses too

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    def start(cls, event: p.ConversationStarted, now: float,
              rolling: RollingConfig, recording: RecordingPolicy,
              partials_kept: bool = False) -> Conversation:
        """``recording``: its policy (the one it asked for, or its queue's), and whether
        it keeps partials."""
        info = event.conversation
        conv = cls(
            id=info.id, channel=info.channel, queue=info.queue, agent_id=info.agent_id,
            customer=info.customer.model_dump(), recording=recording,
            attributes=dict(info.attributes),
            started_at=event.started_at.timestamp() if event.started_at else now,
            rolling=RollingSentiment(rolling), last_activity_at=now,
            partials_kept=partials_kept,
        )
        if info.agent_id:
            conv.participants[info.agent_id] = {"role": "agent", "name": None}
        if info.customer.id:
            conv.participants[info.customer.id] = {"role": "customer", "name": info.customer.name}
        return conv

    def default_participant(self, role: str) -> str:
        if role == "agent" and self.agent_id:
            return self.agent_id
        if role == "customer" and self.customer.get("id"):
            return str(self.customer["id"])
        return role

    def add_final(self, segment: p.Segment, scores: Scores, now: float) -> tuple[Turn, bool]:
        """Apply a new final segment; returns the turn and whether it arrived late."""
        participant = segment.participant_id or self.default_participant(segment.role)
        at = segment.started_at.timestamp() if segment.started_at else now
        late = self.last_final_started_at is not None and at < self.last_final_started_at
        self.last_final_started_at = max(at, self.last_final_started_at or at)
        self.applied.add(segment.segment_id)
        self.counts[segment.role] += 1
        self.last_scores[participant] = {"role": segment.role, "scores": scores.as_dict(),
                                         "at": now}
        turn = Turn(segment_id=segment.segment_id, role=segment.role, participant_id=participant,
                    text=segment.text, scores=scores, at=now)
        if segment.role == "customer":
            self.rolling.add(scores.compound)
            if self.start_sentiment is None:
                self.start_sentiment = scores.compound
            self.last_customer_turn = turn
        self.customer_waiting_since = track_wait(self.customer_waiting_since, segment.role, now)
        return turn, late

    def take_message_number(self) -> int:
        self.published += 1
        return self.published

    def take_seq(self) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq

    def join(self, event: p.ParticipantJoined) -> None:
        self.participants[event.participant.id] = {"role": event.participant.role,
                                                   "name": event.participant.name}

    def leave(self, event: p.ParticipantLeft) -> None:
        self.participants.pop(event.participant_id, None)

    def barged(self, username: str) -> bool:
        """Whether this supervisor barged in (and has not left)."""
        return supervisor_participant(username) in self.participants

    def barge(self, username: str, now: float) -> dict[str, Any]:
        """The supervisor joins as a participant; returns the participant."""
        self.participants[supervisor_participant(username)] = {
            "role": "supervisor", "name": username, "joined_at": now}
        return {"id": supervisor_participant(username), "role": "supervisor",
                "name": username}

    def leave_barge(self, username: str) -> str:
        """The supervisor leaves; returns their participant id."""
        self.participants.pop(supervisor_participant(username), None)
        return supervisor_participant(username)

    def transfer(self, event: p.Transferred) -> None:
        if event.to_agent_id:
            self.agent_id = event.to_agent_id
            self.participants.setdefault(event.to_agent_id, {"role": "agent", "name": None})
        if event.to_queue:
            self.queue = event.to_queue
        self.transfers += 1

    def handover(self, event: p.BotHandover) -> None:
        self.agent_id = event.agent_id
        self.participants.setdefault(event.agent_id, {"role": "agent", "name": None})

    def end(self, now: float) -> None:
        self.status, self.ended_at = "ended", now

    # -- views ----------------------------------------------------------------------

    def summary(self, now: float) -> dict[str, Any]:
        """The live view of this conversation, as supervisors list it."""
        waiting = self.customer_waiting_since
        return {
            "id": self.id, "channel": self.channel, "queue": self.queue,
            "agent_id": self.agent_id, "status": self.status,
            "recording": self.recording, "recording_paused": self.recording_paused,
            "recording_partials": self.partials_kept,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "customer": {"id": self.customer.get("id"), "name": self.customer.get("name")},
            "participants": [{"id": k, **v} for k, v in self.participants.items()],
            "sentiment": {
                "window": self.rolling.mean, "ewma": self.rolling.ewma,
                "start": self.start_sentiment,
                "change": (None if self.start_sentiment is None or self.rolling.mean is None
                           else self.rolling.mean - self.start_sentiment),
                "last": dict(self.last_scores),
            },
            "counts": dict(self.counts), "transfers": self.transfers,
            "customer_waiting_seconds": None if waiting is None else max(0.0, now - waiting),
            "alerts": self.alerts, "escalated": self.alerts > 0,
            "alert": None if self.alert is None else {
                k: self.alert[k] for k in ("id", "status", "severity", "version")},
        }

    # -- persistence ------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "queue": self.queue,
                "agent_id": self.agent_id, "customer": self.customer,
                "recording": self.recording, "attributes": self.attributes,
                "status": self.status, "started_at": self.started_at,
                "ended_at": self.ended_at}

    def remember(self, entry: dict[str, Any]) -> None:
        """Keep a transcript entry for a monitor's catch-up (the newest RECENT_LIMIT)."""
        self.recent.append(entry)
        if len(self.recent) > RECENT_LIMIT:
            del self.recent[0]

    def snapshot(self) -> dict[str, Any]:
        """Live state persisted with each batch, so a restart resumes where it was. Shares
        nothing that later events change (it is written while the next batch applies)."""
        return {
            "participants": dict(self.participants), "next_seq": self.next_seq,
            "rolling": self.rolling.snapshot(),
            "rules": {k: v.snapshot() for k, v in self.rule_states.items() if not v.fresh},
            "last_customer_turn": (self.last_customer_turn.reference()
                                   if self.last_customer_turn else None),
            "last_scores": dict(self.last_scores), "start_sentiment": self.start_sentiment,
            "counts": dict(self.counts), "customer_waiting_since": self.customer_waiting_since,
            "last_final_started_at": self.last_final_started_at,
            "alerts": self.alerts, "transfers": self.transfers, "published": self.published,
            "last_activity_at": self.last_activity_at, "recovering": self.recovering,
            "outbound": self.outbound, "recording_paused": self.recording_paused,
            "unrecorded": sorted(self.unrecorded), "partials_kept": self.partials_kept,
        }

    @classmethod
    def restore(cls, meta: dict[str, Any], state: dict[str, Any], applied: set[str],
                recent: list[dict[str, Any]], rolling: RollingConfig,
                alert: dict[str, Any] | None = None) -> Conversation:
        # Rule state keeps turns as references; their words come back only where recorded.
        recorded = {m["segment_id"]: m["text"] for m in recent if m.get("type") == "segment"}
        last = state.get("last_customer_turn")
        conv = cls(
            id=meta["id"], channel=meta["channel"], queue=meta["queue"],
            agent_id=meta["agent_id"], customer=meta["customer"], recording=meta["recording"],
            attributes=meta["attributes"], started_at=meta["started_at"],
            status=meta["status"], ended_at=meta["ended_at"],
            rolling=RollingSentiment.restore(rolling, state.get("rolling", {})),
            participants=state.get("participants", {}), applied=applied,
            next_seq=state.get("next_seq", 1),
            rule_states={k: restored for k, v in state.get("rules", {}).items()
                         if not (restored := RuleState.restore(v, recorded.get)).fresh},
            last_customer_turn=(Turn.from_reference(last, recorded.get(last["segment_id"]))
                                if last else None),
            last_scores=state.get("last_scores", {}),
            start_sentiment=state.get("start_sentiment"),
            customer_waiting_since=state.get("customer_waiting_since"),
            last_final_started_at=state.get("last_final_started_at"),
            alerts=state.get("alerts", 0), transfers=state.get("transfers", 0),
            published=state.get("published", 0), shown=state.get("published", 0),
            # (saved by a version before the idle timeout: counted from this restore)
            last_activity_at=state.get("last_activity_at", time.time()),
            alert=alert, recovering=state.get("recovering", 0),
            outbound=state.get("outbound", False),
            recording_paused=state.get("recording_paused", False),
            unrecorded=set(state.get("unrecorded", ())),
            partials_kept=state.get("partials_kept", False),
        )
        conv.counts.update(state.get("counts", {}))
        conv.recent.extend(recent[-RECENT_LIMIT:])
        return conv
