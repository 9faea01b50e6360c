"""The alert lifecycle, as pure functions over an alert (a plain dict, as served).

One alert per conversation in trouble: a rule firing is a *hit*, and hits on a
conversation join its open (or acknowledged) alert. The alert's severity is its highest
hit's; a hit above it *escalates* the alert (it needs attention again), any other
updates it quietly. People move an alert from ``open`` to ``acknowledged`` to
``resolved`` (and reopen it); the pipeline resolves it when the conversation ends or the
customer has recovered, and re-notifies an open alert nobody acknowledged. Each change
bumps ``version`` and is one *event* (`EVENT_TYPES`). docs/alerts.md tells the story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from analytics.rules import Severity

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}
MAX_HITS = 20  # hits kept per alert (the first, then the newest); ``hit_count`` counts all

Action = Literal["acknowledge", "assign", "resolve", "reopen"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "assign", "resolve", "reopen")
EVENT_TYPES = ("alert.raised", "alert.updated", "alert.escalated", "alert.renotified",
               "alert.acknowledged", "alert.assigned", "alert.resolved", "alert.reopened")
# What a resolution says happened.
MANUAL, CONVERSATION_ENDED, RECOVERED = "manual", "conversation_ended", "recovered"
NOTIFYING = frozenset({"alert.raised", "alert.escalated", "alert.renotified"})

# The hit fields repeated at the alert's top level (the *lead* hit: the first at the
# alert's severity), for clients written when an alert was one rule's.
_LEAD_FIELDS = ("rule_id", "rule_version", "rule_name", "kind", "reason", "evidence")


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """What the pipeline does with alerts on its own (`contact_center.settings`)."""

    resolve_on_end: bool = True  # a conversation's end resolves its alert
    recovered_above: float = 0.05  # the customer's rolling sentiment counted as recovered
    recovered_turns: int = 3  # ... for this many customer turns in a row (0: never)
    renotify_seconds: dict[Severity, float] = field(default_factory=lambda: {
        "high": 300.0, "medium": 900.0, "low": 0.0})  # per severity; 0: never


class TransitionError(Exception):
    """A change the alert's state does not allow; ``code`` is the API's error code."""

    def __init__(self, code: Literal["version_conflict", "invalid_transition"],
                 message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def new_alert(alert_id: str, conversation_id: str, agent_id: str | None, queue: str,
              hit: dict[str, Any]) -> dict[str, Any]:
    """A conversation's new alert, from its first hit."""
    at = hit["raised_at"]
    return {
        "id": alert_id, "conversation_id": conversation_id, "agent_id": agent_id,
        "queue": queue, "status": "open", "severity": hit["severity"], "version": 1,
        "state_version": 1, "rule_ids": [hit["rule_id"]],
        "first_raised_at": at, "raised_at": at, "last_hit_at": at,
        **{k: hit[k] for k in _LEAD_FIELDS},
        "hits": [hit], "hit_count": 1,
        "acknowledged_at": None, "acknowledged_by": None,
        "assignee": None, "assigned_at": None, "assigned_by": None,
        "resolved_at": None, "resolved_by": None, "resolution": None, "note": None,
        "notified_at": at, "notifications": 1,
    }


def is_open(alert: dict[str, Any] | None) -> bool:
    """Whether new hits join this alert (open or acknowledged)."""
    return alert is not None and alert["status"] != "resolved"


def add_hit(alert: dict[str, Any], hit: dict[str, Any]) -> str:
    """Join a hit to an unresolved alert; the event type: escalated (a higher severity:
    open again, notified) or updated."""
    alert["hit_count"] += 1
    alert["hits"].append(hit)
    if hit["rule_id"] not in alert["rule_ids"]:
        alert["rule_ids"].append(hit["rule_id"])
    if len(alert["hits"]) > MAX_HITS:
        del alert["hits"][1]  # the first stays: how it began
    alert["last_hit_at"] = max(alert["last_hit_at"], hit["raised_at"])
    alert["version"] += 1
    if SEVERITY_RANK[hit["severity"]] <= SEVERITY_RANK[alert["severity"]]:
        return "alert.updated"
    alert["severity"] = hit["severity"]
    alert.update({k: hit[k] for k in _LEAD_FIELDS})
    # Acknowledged at a lower severity is not acknowledged at this one.
    alert["status"] = "open"
    alert["acknowledged_at"] = alert["acknowledged_by"] = None
    _notified(alert, hit["raised_at"])
    alert["state_version"] = alert["version"]
    return "alert.escalated"


def move_to(alert: dict[str, Any], agent_id: str | None, queue: str) -> str:
    """Follow the conversation to its new agent and queue (a transfer or handover)."""
    alert["agent_id"], alert["queue"] = agent_id, queue
    alert["version"] += 1
    return "alert.updated"


def transition(alert: dict[str, Any], action: Action, version: int, by: str, now: float,
               *, assignee: str | None = None, note: str | None = None,
               latest: bool = True) -> str:
    """A person's change: check it, apply it, return its event type. ``version``: the
    alert's version the person saw; older than its last change of status, severity or
    assignee (``state_version``) is stale, while quiet hits and moves since do not make
    it so. ``latest``: whether this is its conversation's newest alert (only that one
    may be reopened: at most one is open per conversation). Raises `TransitionError`."""
    if not alert["state_version"] <= version <= alert["version"]:
        raise TransitionError("version_conflict", f"alert {alert['id']} changed at version "
                              f"{alert['state_version']} (now {alert['version']}), after "
                              f"version {version}; reload it and retry")
    status = alert["status"]
    if action == "reopen":
        if status != "resolved":
            raise TransitionError("invalid_transition", f"alert {alert['id']} is {status}; "
                                  "only a resolved alert can be reopened")
        if not latest:
            raise TransitionError("invalid_transition", "a newer alert on this conversation "
                                  "followed this one; only the newest can be reopened")
        alert.update(status="open", resolved_at=None, resolved_by=None, resolution=None,
                     acknowledged_at=None, acknowledged_by=None, note=None)
        _notified(alert, now)
    elif status == "resolved":
        raise TransitionError("invalid_transition",
                              f"alert {alert['id']} is resolved; reopen it first")
    elif action == "acknowledge":
        if status == "acknowledged":
            raise TransitionError("invalid_transition",
                                  f"alert {alert['id']} is already acknowledged")
        alert.update(status="acknowledged", acknowledged_at=now, acknowledged_by=by)
    elif action == "assign":
        alert.update(assignee=assignee, assigned_at=now, assigned_by=by)
    else:
        return resolve(alert, now, MANUAL, by, note)
    alert["version"] += 1
    alert["state_version"] = alert["version"]
    return f"alert.{_PAST[action]}"


_PAST = {"acknowledge": "acknowledged", "assign": "assigned", "reopen": "reopened"}


def resolve(alert: dict[str, Any], now: float, resolution: str, by: str | None = None,
            note: str | None = None) -> str:
    """Resolve an unresolved alert (by a person, or by the pipeline: ``by`` None)."""
    alert.update(status="resolved", resolved_at=now, resolved_by=by, resolution=resolution,
                 note=note)
    alert["version"] += 1
    alert["state_version"] = alert["version"]
    return "alert.resolved"


def renotify_at(alert: dict[str, Any] | None, policy: AlertPolicy) -> float | None:
    """When an open alert nobody acknowledged is notified again (None: never)."""
    if alert is None or alert["status"] != "open":
        return None
    interval = policy.renotify_seconds.get(alert["severity"], 0.0)
    return alert["notified_at"] + interval if interval > 0 else None


def renotify(alert: dict[str, Any], now: float) -> str:
    _notified(alert, now)
    alert["version"] += 1
    return "alert.renotified"


def _notified(alert: dict[str, Any], now: float) -> None:
    alert["notified_at"] = now
    alert["notifications"] += 1


def recovery(streak: int, rolling_mean: float | None, policy: AlertPolicy) -> tuple[int, bool]:
    """After a customer turn while an alert is unresolved: the streak of turns the
    customer's rolling sentiment has been above the threshold, and whether that streak
    now counts as recovered."""
    if policy.recovered_turns <= 0:
        return 0, False
    if rolling_mean is None or rolling_mean < policy.recovered_above:
        return 0, False
    streak += 1
    return streak, streak >= policy.recovered_turns


def snapshot(alert: dict[str, Any]) -> dict[str, Any]:
    """A copy later changes will not touch (hits themselves are never changed)."""
    return {**alert, "hits": list(alert["hits"])}


def event(event_type: str, event_id: int | None, alert: dict[str, Any]) -> dict[str, Any]:
    """An alert event as pushed: ``event_id`` is filled in once it is committed."""
    return {"type": event_type, "event_id": event_id, "alert": alert}
