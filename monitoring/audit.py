"""The audit log's entries (docs/audit.md): who did what to which conversation or object,
when, from where, through which request, and how it went. What each action means, and how
an entry is made storable and bounded, whatever a client sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every action recorded, and what it means. An action is `<object>.<verb>`; add a new one
# here and in docs/audit.md (a test checks the page names each).
ACTIONS: dict[str, str] = {
    "auth.failed": "a request or socket refused: no valid token (401), a permission it "
                   "lacks (403), an origin not allowed (from an address already slowed "
                   "down: counted, see audit.counted)",
    "monitor.start": "silent monitoring of a conversation began (or was refused: result)",
    "monitor.end": "silent monitoring of a conversation ended",
    "transcript.read": "a recorded conversation was read",
    "transcript.search": "recorded transcripts were searched (terms and filters in details)",
    "transcript.export": "what a search found was exported (query, filters and count in "
                         "details)",
    "analytics.query": "recorded conversations were aggregated (grouping and filters in "
                       "details)",
    "rule.create": "an escalation rule was added",
    "rule.change": "an escalation rule was replaced or changed in part",
    "rule.delete": "an escalation rule was deleted",
    "rules.import": "the whole rule set was replaced",
    "rule.backtest": "a draft or saved rule was backtested on recorded conversations",
    "alert.acknowledge": "a person acknowledged an alert",
    "alert.assign": "a person assigned (or unassigned) an alert",
    "alert.resolve": "a person resolved an alert",
    "alert.reopen": "a person reopened an alert",
    "user.create": "a user was created",
    "user.disable": "a user was disabled (every token of theirs stops working)",
    "user.enable": "a user was enabled again",
    "user.change": "a change to a user was refused before anything was changed (result)",
    "user.profiles": "a user's security profiles were changed",
    "user.scope": "a user's scope (teams and queues) was set, or cleared",
    "user.password": "a user's password was set (every session of theirs ended); never "
                     "the password",
    "session.create": "a user signed in from a browser, or a sign-in was refused (result; "
                      "the username given is the target)",
    "session.end": "a user signed out (their session ended on the server)",
    "team.create": "a team was added",
    "team.change": "a team was renamed or moved",
    "team.delete": "a team was deleted",
    "agent.put": "an agent was added to the directory, or their name or team changed",
    "profile.create": "a custom security profile was created",
    "profile.change": "a custom security profile's permissions or description changed",
    "profile.delete": "a custom security profile was deleted",
    "whisper": "a supervisor whispered to a conversation's agent",
    "barge.join": "a supervisor barged into a conversation",
    "barge.leave": "a supervisor left a conversation they had barged into",
    "barge.message": "a barged-in supervisor wrote to the customer",
    "token.issue": "an API token was issued",
    "token.revoke": "an API token was revoked",
    "webhook.create": "a webhook endpoint was added",
    "webhook.change": "a webhook endpoint was changed",
    "webhook.delete": "a webhook endpoint was deleted",
    "webhook.redeliver": "a webhook delivery was sent again by hand",
    "audit.export": "the audit log was exported",
    "retention.run": "the retention job removed the words of ended conversations past their "
                     "queue's retention (counts in details; actor system, or cli)",
    "erasure": "a customer's conversations were erased, or the erasure refused (result); "
               "details: the counts, the conversation ids and the SHA-256 of the customer "
               "identifier, never the identifier",
    "audit.counted": "failed authentications counted rather than written one by one "
                     "(from an address already slowed down, past the room kept for them, "
                     "or lost to a storage failure)",
}

OK = "ok"  # the result of what went as asked; otherwise the error code answered

TEXT_CHARS = 256  # actor, action, target, result, source, request id: at most this long
DETAIL_CHARS = 1000  # a string in details
DETAIL_ITEMS = 100  # a list's items, or an object's keys, in details
DETAIL_DEPTH = 4  # nesting in details; deeper values are replaced by a note


@dataclass(slots=True)
class AuditEntry:
    """One entry. The store numbers it (``id``, from 1, no gaps) and chains it
    (``prev_hash``, ``hash``: `monitoring.audit_chain`) as it appends it."""

    at: float  # Unix time
    actor: str | None  # a username; "cli" for the command line; None: unauthenticated
    action: str  # one of ACTIONS
    target_type: str | None  # e.g. conversation, rule, alert, user, token, webhook, route
    target_id: str | None
    result: str  # OK, or the error code answered (forbidden, unknown_rule, ...)
    source: str | None  # the client address; "local" for the command line
    request_id: str | None  # as in the logs and the X-Request-ID header
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


def entry_fields(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API and exports show it: every field, the id first."""
    return {"id": entry.id, "at": entry.at, "actor": entry.actor, "action": entry.action,
            "target_type": entry.target_type, "target_id": entry.target_id,
            "result": entry.result, "source": entry.source, "request_id": entry.request_id,
            "details": entry.details, "prev_hash": entry.prev_hash, "hash": entry.hash}


def storable_text(value: str | None) -> str | None:
    """A string every store keeps as it is: no NUL (PostgreSQL refuses it), no lone
    surrogate (not UTF-8), at most TEXT_CHARS characters."""
    if value is None:
        return None
    return _clean(value)[:TEXT_CHARS]


def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def bounded(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON a store keeps, bounded (DETAIL_CHARS, DETAIL_ITEMS, DETAIL_DEPTH):
    what a client sent never makes an entry large."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # (past 2**53 a JSON reader may round it)
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return _clean(value)[:DETAIL_CHARS]
    if depth >= DETAIL_DEPTH:
        return "(nested too deep)"
    if isinstance(value, dict):
        return {_clean(str(k))[:TEXT_CHARS]: bounded(v, depth + 1)
                for k, v in list(value.items())[:DETAIL_ITEMS]}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [bounded(v, depth + 1) for v in list(items)[:DETAIL_ITEMS]]
    return _clean(str(value))[:DETAIL_CHARS]


def make_entry(at: float, actor: str | None, action: str, target_type: str | None,
               target_id: str | None, result: str, source: str | None,
               request_id: str | None, details: dict[str, Any] | None = None) -> AuditEntry:
    """An entry, its fields made storable and bounded."""
    return AuditEntry(at=at, actor=storable_text(actor), action=storable_text(action) or "",
                      target_type=storable_text(target_type),
                      target_id=storable_text(target_id),
                      result=storable_text(result) or "", source=storable_text(source),
                      request_id=storable_text(request_id),
                      details=bounded(details or {}))


def monitoring_sessions(entries: list[AuditEntry]) -> list[dict[str, Any]]:
    """Who monitored a conversation, from its ``monitor.start`` and ``monitor.end``
    entries (any order): each session that started, oldest first, with when it ended and
    how long it lasted (null while it is open, or if its end was never recorded)."""
    ordered = sorted(entries, key=lambda e: (e.at, e.id or 0))
    sessions: list[dict[str, Any]] = []
    open_by: dict[str | None, list[dict[str, Any]]] = {}
    for entry in ordered:
        if entry.action == "monitor.start" and entry.result == OK:
            session = {"username": entry.actor, "started_at": entry.at, "ended_at": None,
                       "seconds": None}
            sessions.append(session)
            open_by.setdefault(entry.actor, []).append(session)
        elif entry.action == "monitor.end" and open_by.get(entry.actor):
            session = open_by[entry.actor].pop(0)
            seconds = entry.details.get("seconds")
            session.update(ended_at=entry.at,
                           seconds=seconds if isinstance(seconds, int | float) else None)
    return sessions
