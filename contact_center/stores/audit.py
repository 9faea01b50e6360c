"""The audit log (docs/audit.md), in SQL both stores run: written with ``?`` placeholders
(PostgreSQL numbers them, `webhooks.numbered`). An append reads the newest entry's id and
hash and adds the batch chained after it, in one transaction that holds the table's
writers off meanwhile (SQLite: its one writer; PostgreSQL: an advisory lock), so appends
from every API node make one chain. Each store's schema refuses UPDATE and DELETE on the
table (triggers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contact_center.stores import AuditQuery
from monitoring.audit import AuditEntry

Row = Any

COLUMNS = ("id", "at", "actor", "action", "target_type", "target_id", "result", "source",
           "request_id", "details", "prev_hash", "hash")
INSERT = (f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES "
          f"({', '.join('?' * len(COLUMNS))})")
NEWEST = "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1"
CHAIN = "SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?"
REFUSED = "the audit log is append-only"  # the triggers' message


def listing(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT of a page, newest first (its LIMIT the last argument)."""
    where, args = ["1 = 1"], list[Any]()
    for clause, value in (("actor = ?", query.actor), ("action = ?", query.action),
                          ("target_type = ?", query.target_type),
                          ("target_id = ?", query.target_id), ("at >= ?", query.since),
                          ("at < ?", query.until), ("id < ?", query.before),
                          ("result = ?", query.result)):
        if value is not None:
            where.append(clause)
            args.append(value)
    return (f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC "
            "LIMIT ?"), [*args, query.limit]


def values(entry: AuditEntry, encode: Callable[[Any], Any]) -> tuple[Any, ...]:
    return (entry.id, entry.at, entry.actor, entry.action, entry.target_type,
            entry.target_id, entry.result, entry.source, entry.request_id,
            encode(entry.details), entry.prev_hash, entry.hash)


def as_entry(row: Row, decode: Callable[[Any], Any]) -> AuditEntry:
    return AuditEntry(at=row["at"], actor=row["actor"], action=row["action"],
                      target_type=row["target_type"], target_id=row["target_id"],
                      result=row["result"], source=row["source"],
                      request_id=row["request_id"], details=decode(row["details"]),
                      id=row["id"], prev_hash=row["prev_hash"], hash=row["hash"])
