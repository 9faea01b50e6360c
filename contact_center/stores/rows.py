"""Stored rows as the service shows them, shared by the stores.

Both drivers' rows are read by column name; a JSON column comes back as text from SQLite
and already decoded from PostgreSQL, so each store passes its ``decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monitoring.credentials import Token, User

Row = Mapping[str, Any]
Decode = Callable[[Any], Any]


def as_meta(row: Row, decode: Decode) -> dict[str, Any]:
    return {
        "id": row["id"], "channel": row["channel"], "queue": row["queue"],
        "agent_id": row["agent_id"], "customer": decode(row["customer"]),
        "recording": row["recording"], "attributes": decode(row["attributes"]),
        "status": row["status"], "started_at": row["started_at"], "ended_at": row["ended_at"],
    }


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
    return {
        "id": row["id"], "conversation_id": row["conversation_id"], "rule_id": row["rule_id"],
        "rule_version": row["rule_version"], "rule_name": row["rule_name"], "kind": row["kind"],
        "severity": row["severity"], "reason": row["reason"],
        "raised_at": row["raised_at"], "agent_id": row["agent_id"], "queue": row["queue"],
        "evidence": decode(row["evidence"]), "status": row["status"],
    }


def as_user(row: Row, decode: Decode) -> User:
    return User(id=row["id"], username=row["username"], agent_id=row["agent_id"],
                profiles=decode(row["profiles"]), disabled=bool(row["disabled"]),
                created_at=row["created_at"])


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
