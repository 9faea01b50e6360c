"""Live messages: their topics and shapes, in one place (docs/protocol.md#live-streams).

The pipeline decides which to send (`contact_center.applier`); an outlet publishes them
once their batch is committed (`monitoring.feeds`); subscribers get them through the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LIVE_TOPIC = "live"  # the live board: conversation and agent updates
ALERTS_TOPIC = "alerts"  # alert events in event_id order, filtered per subscriber
# Alert events as committed, in commit order within a worker; `monitoring.alert_stream`
# puts them in event_id order onto ALERTS_TOPIC.
ALERT_EVENTS_TOPIC = "alert-events"
# Whispers, each for one agent's alert stream (filtered on ``to_agent``).
WHISPERS_TOPIC = "whispers"
# What a monitor allowed to (`monitor-unredacted`) gets besides a turn's redacted text.
UNREDACTED = "text_unredacted"
RECENT_LIMIT = 500  # monitor messages kept per live conversation for a monitor's catch-up


def conversation_topic(conversation_id: str) -> str:
    """A conversation's monitor messages."""
    return f"conversation:{conversation_id}"


def connector_topic(conversation_id: str) -> str:
    """What a conversation's connector socket is sent (whisper, barge, ...)."""
    return f"connector:{conversation_id}"


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A live message to publish once its batch is committed."""

    conversation_id: str
    topic: str
    body: dict[str, Any]
    keep: bool = False  # also kept in the conversation's recent entries (monitor catch-up)
    match: dict[str, Any] | None = None  # what subscribers filter on (alerts)
    number: int = 0  # a monitor message's number in its conversation (0: not numbered)
    event_id: int = 0  # an alert event's id (0: not an alert event)
    # A turn's words as said where redaction changed them: published to its monitors (who
    # see them only with the permission), never kept for a catch-up nor stored.
    said: str | None = None

    def published(self) -> dict[str, Any]:
        """The body as published: with the words as said, if any."""
        return self.body if self.said is None else {**self.body, UNREDACTED: self.said}


# -- shapes ----------------------------------------------------------------------------


def partial_segment(conversation_id: str, segment_id: str, role: str, participant_id: str,
                    text: str, at: float) -> dict[str, Any]:
    return {"type": "segment", "conversation_id": conversation_id, "segment_id": segment_id,
            "role": role, "participant_id": participant_id, "text": text, "final": False,
            "at": at}


def final_segment(conversation_id: str, seq: int, segment_id: str, role: str,
                  participant_id: str, text: str, recorded: bool, scores: dict[str, float],
                  at: float, late: bool) -> dict[str, Any]:
    return {"type": "segment", "conversation_id": conversation_id, "seq": seq,
            "segment_id": segment_id, "role": role, "participant_id": participant_id,
            "text": text, "recorded": recorded, "final": True, "scores": scores, "at": at,
            "late": late}


def conversation_event(event_type: str, conversation_id: str, at: float,
                       payload: dict[str, Any]) -> dict[str, Any]:
    """A lifecycle event (participant joined or left, transfer, handover, end)."""
    return {"type": event_type, "conversation_id": conversation_id, "at": at, **payload}


def whisper(conversation_id: str, whisper_id: str, agent_id: str | None, by: str,
            text: str, at: float) -> dict[str, Any]:
    """A supervisor's note to the agent, which the customer never sees."""
    return {"type": "whisper", "conversation_id": conversation_id, "whisper_id": whisper_id,
            "agent_id": agent_id, "by": by, "text": text, "at": at}


def supervisor_message(conversation_id: str, segment_id: str, participant_id: str,
                       text: str, at: float) -> dict[str, Any]:
    """What a supervisor who barged in wrote, for the connector to pass to the customer."""
    return {"type": "supervisor.message", "conversation_id": conversation_id,
            "segment_id": segment_id, "participant_id": participant_id, "text": text,
            "at": at}


def monitor_event(event_type: str, conversation_id: str, monitor_id: str, by: str,
                  at: float, monitors: list[dict[str, Any]]) -> dict[str, Any]:
    """A monitor socket opened or closed (``monitor.started``, ``monitor.ended``), with
    who monitors the conversation now."""
    return {"type": event_type, "conversation_id": conversation_id, "monitor_id": monitor_id,
            "by": by, "at": at, "monitors": monitors}


def agent_told_monitored(event_type: str, conversation_id: str, at: float,
                         monitors: int) -> dict[str, Any]:
    """What the agent desktop (the connector socket) is told of monitoring: not who."""
    return {"type": event_type, "conversation_id": conversation_id, "at": at,
            "monitors": monitors}


def monitors_updated(conversation_id: str, monitors: list[dict[str, Any]]) -> dict[str, Any]:
    """On the live board: who monitors a conversation changed."""
    return {"type": "monitors.updated", "conversation_id": conversation_id,
            "monitors": monitors}


def conversation_updated(summary: dict[str, Any]) -> dict[str, Any]:
    return {"type": "conversation.updated", "conversation": summary}


def agents_updated(agents: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "agents.updated", "agents": agents}


def resync(reason: str) -> dict[str, Any]:
    """What a subscriber saw may not have been kept, or it missed messages: reconnect."""
    return {"type": "resync", "reason": reason}


STORAGE_RESYNC = resync("storage failure; reconnect for a fresh view")
RELAY_RESYNC = resync("live messages may have been lost; reconnect")
