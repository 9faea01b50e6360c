"""Stored rows as the service shows them, shared by the stores.

Both drivers' rows are read by column name; a JSON column comes back as text from SQLite
and already decoded from PostgreSQL, so each store passes its ``decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from contact_center.stores import AlertQuery
from monitoring.alerts import new_alert
from monitoring.credentials import Token, User
from monitoring.scope import Scope, Within

Row = Mapping[str, Any]
Decode = Callable[[Any], Any]
OneOf = Callable[[str, int], str]
"""``(column, n)``: the driver's condition that ``column`` is one of the list its nth
placeholder holds."""


def as_meta(row: Row, decode: Decode) -> dict[str, Any]:
    return {
        "id": row["id"], "channel": row["channel"], "queue": row["queue"],
        "agent_id": row["agent_id"], "customer": decode(row["customer"]),
        "recording": row["recording"], "attributes": decode(row["attributes"]),
        "status": row["status"], "started_at": row["started_at"], "ended_at": row["ended_at"],
    }


def as_transcript(row: Row, turns: list[Row], alerts: list[Row], events: list[Row],
                  decode: Decode) -> dict[str, Any]:
    """A recorded conversation as served: its metadata, when retention removed its words
    (None: kept), its turns, alerts and events."""
    return {**as_meta(row, decode), "words_removed_at": row["words_removed_at"],
            "turns": [as_turn(t) for t in turns], "alerts": [as_alert(a, decode) for a in alerts],
            "events": [as_event(e, decode) for e in events]}


def as_turn(row: Row) -> dict[str, Any]:
    return {
        "type": "segment", "seq": row["seq"], "segment_id": row["segment_id"],
        "role": row["role"], "participant_id": row["participant_id"], "text": row["text"],
        "recorded": row["text"] is not None, "final": True,
        "scores": {k: row[k] for k in ("neg", "neu", "pos", "compound")},
        "started_at": row["started_at"], "ended_at": row["ended_at"],
        "at": row["received_at"], "late": bool(row["late"]),
    }


def as_hit(row: Row) -> dict[str, Any]:
    return {"conversation_id": row["conversation_id"], "queue": row["queue"],
            "agent_id": row["agent_id"], "channel": row["channel"], **as_turn(row)}


def as_alert(row: Row, decode: Decode) -> dict[str, Any]:
    """An alert row as served. Rows from before the alert workflow (one per rule hit,
    no document) read as an alert of that one hit."""
    if row["document"] is not None:
        return dict(decode(row["document"]))
    hit = {"rule_id": row["rule_id"], "rule_version": row["rule_version"],
           "rule_name": row["rule_name"], "kind": row["kind"], "severity": row["severity"],
           "reason": row["reason"], "raised_at": row["raised_at"],
           "evidence": decode(row["evidence"])}
    alert = new_alert(row["id"], row["conversation_id"], row["agent_id"], row["queue"], hit)
    alert["status"] = row["status"]
    return alert


# Upgrading to the alert workflow: alerts were one per hit, all open for ever. The newest
# of each live conversation becomes its alert; the rest are resolved (no resolution).
RESOLVE_LEGACY_ALERTS = """
UPDATE alerts SET status = 'resolved' WHERE status = 'open' AND id NOT IN (
    SELECT max(a.id) FROM alerts a JOIN conversations c ON c.id = a.conversation_id
    WHERE c.status = 'live' GROUP BY a.conversation_id)
"""

ALERT_COLUMNS = ("id", "conversation_id", "rule_id", "rule_version", "rule_name", "kind",
                 "severity", "reason", "raised_at", "agent_id", "queue", "evidence",
                 "status", "version", "last_hit_at", "assignee", "rule_ids", "document")


def alert_values(alert: dict[str, Any], encode: Callable[[Any], Any]) -> tuple[Any, ...]:
    """An alert's row, in ALERT_COLUMNS order: the columns filters use, and the whole
    alert in ``document`` (``evidence`` is left empty: the document holds it)."""
    rule_ids = "," + ",".join(alert["rule_ids"]) + ","
    return (alert["id"], alert["conversation_id"], alert["rule_id"], alert["rule_version"],
            alert["rule_name"], alert["kind"], alert["severity"], alert["reason"],
            alert["first_raised_at"], alert["agent_id"], alert["queue"], encode({}),
            alert["status"], alert["version"], alert["last_hit_at"], alert["assignee"],
            rule_ids, encode(alert))


def as_alert_event(row: Row, decode: Decode) -> dict[str, Any]:
    """An alert event as pushed (its ``alert`` kept)."""
    return {"type": row["type"], "event_id": row["id"], "alert": decode(row["alert"])}


def as_alert_change(row: Row) -> dict[str, Any]:
    """An alert event as its history shows it: who, when, from where."""
    return {"event_id": row["id"], "type": row["type"], "at": row["at"], "by": row["actor"],
            "from": row["origin"]}


def as_user(row: Row, decode: Decode) -> User:
    return User(id=row["id"], username=row["username"], agent_id=row["agent_id"],
                profiles=decode(row["profiles"]), disabled=bool(row["disabled"]),
                created_at=row["created_at"],
                scope=Scope.from_json(None if row["scope"] is None else decode(row["scope"])))


def as_token(row: Row) -> Token:
    return Token(id=row["id"], user_id=row["user_id"], prefix=row["prefix"],
                 digest=row["digest"], label=row["label"], created_at=row["created_at"],
                 revoked=bool(row["revoked"]))


def as_event(row: Row, decode: Decode) -> dict[str, Any]:
    return {"type": row["type"], "at": row["at"], **decode(row["payload"])}


def like_pattern(term: str) -> str:
    """A LIKE pattern that finds ``term`` as a substring (backslash escapes % and _)."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def folded(text: str) -> str:
    """``text`` as search compares it, case aside: each character lowercased on its own,
    as PostgreSQL's ILIKE does in a UTF-8 database (Python's `str.lower` alone would
    make a final Σ a ς, and İ two characters)."""
    return text.replace("\u03a3", "\u03c3").replace("\u0130", "i").lower()


def within_clause(within: Within | None, queue: str, agent: str, one_of: OneOf,
                  first: int) -> tuple[str, list[Any]]:
    """The condition keeping only the conversations ``within`` covers (``queue`` and
    ``agent``: the column names), its placeholders numbered from ``first``."""
    if within is None:
        return "1 = 1", []
    return (f"({one_of(queue, first)} OR {one_of(agent, first + 1)})",
            [sorted(within.queues), sorted(within.agents)])


def alert_filters(q: AlertQuery, mark: Callable[[int], str], position: str,
                  one_of: OneOf) -> tuple[str, list[Any]]:
    """The WHERE clause of an alert listing (``mark(n)``: the driver's nth placeholder;
    ``position``: its function finding a string in another, ``instr`` or ``strpos``)."""
    clauses, args = ["1 = 1"], list[Any]()
    for clause, value in (("status = {}", q.status), ("severity = {}", q.severity),
                          ("queue = {}", q.queue), ("agent_id = {}", q.agent_id),
                          ("assignee = {}", q.assignee),
                          ("conversation_id = {}", q.conversation_id),
                          ("raised_at >= {}", q.since), ("raised_at < {}", q.until),
                          ("id < {}", q.before),
                          # (legacy rows have no rule_ids: their one rule is rule_id)
                          (f"{position}(coalesce(rule_ids, ',' || rule_id || ','), {{}}) > 0",
                           None if q.rule_id is None else f",{q.rule_id},")):
        if value is not None:
            args.append(value)
            clauses.append(clause.format(mark(len(args))))
    if q.within is not None:  # where its conversation is now: a resolved alert stays put
        within, more = within_clause(q.within, "queue", "agent_id", one_of, len(args) + 1)
        clauses.append(f"conversation_id IN (SELECT id FROM conversations WHERE {within})")
        args += more
    return " AND ".join(clauses), args
