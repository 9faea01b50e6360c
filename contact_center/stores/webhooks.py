"""Webhook endpoints and their deliveries (the outbox), in SQL both stores run: written
with ``?`` placeholders (PostgreSQL numbers them, `numbered`). A delivery row per alert
event and endpoint is added from the alert events (committed with the change they record)
as they come (`add_deliveries`, which moves the cursor `FANNED_OUT` in the same
transaction), then claimed with a lease, tried, and settled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from contact_center.stores import DeliveryOutcome

Row = Any

WEBHOOK_COLUMNS = ("id", "url", "events", "min_severity", "queues", "secret", "enabled",
                   "disabled_reason", "failing_since", "after_event_id", "created_at",
                   "created_by")
EDITABLE = ("url", "events", "min_severity", "queues", "enabled", "disabled_reason",
            "failing_since")

ADD_WEBHOOK = (f"INSERT INTO webhooks ({', '.join(WEBHOOK_COLUMNS)}) VALUES "
               f"({', '.join('?' * len(WEBHOOK_COLUMNS))})")
NEWEST_EVENT = "SELECT coalesce(max(id), 0) FROM alert_events"
FANNED_OUT = "SELECT coalesce(max(through), 0) FROM webhook_cursor"
ADVANCE = ("INSERT INTO webhook_cursor (id, through) VALUES (1, ?) ON CONFLICT (id) DO "
           "UPDATE SET through = CASE WHEN webhook_cursor.through < excluded.through THEN "
           "excluded.through ELSE webhook_cursor.through END")
# A new delivery may come leased to the node that adds it (attempts 1): it tries it at once.
ADD_DELIVERY = ("INSERT INTO webhook_deliveries (webhook_id, event_id, message_id, type, "
                "payload, status, attempts, next_attempt_at, created_at, lease_until) VALUES "
                "(?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT (webhook_id, event_id) "
                "DO NOTHING RETURNING *")
# {lock}: PostgreSQL's FOR UPDATE SKIP LOCKED (SQLite has one writer at a time).
CLAIM = ("UPDATE webhook_deliveries SET lease_until = ?, attempts = attempts + 1 WHERE id IN "
         "(SELECT id FROM webhook_deliveries WHERE webhook_id = ? AND status = 'pending' AND "
         "next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?) ORDER BY id "
         "LIMIT ? {lock}) RETURNING *")
DELIVERED = ("UPDATE webhook_deliveries SET status = 'delivered', delivered_at = ?, "
             "lease_until = NULL, last_status = ?, last_error = NULL WHERE id = ?")
FAILED = ("UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, lease_until = NULL, "
          "last_status = ?, last_error = ? WHERE id = ?")
HEALTHY = "UPDATE webhooks SET failing_since = NULL WHERE id = ? RETURNING failing_since"
FAILING = ("UPDATE webhooks SET failing_since = coalesce(failing_since, ?) WHERE id = ? "
           "RETURNING failing_since")
DISABLE = ("UPDATE webhooks SET enabled = ?, disabled_reason = ? WHERE id = ?")
# Not while a try holds it (its lease runs): that would send it twice at once.
REDELIVER = ("UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, "
             "lease_until = NULL, attempts = 0 WHERE webhook_id = ? AND id = ? AND "
             "(lease_until IS NULL OR lease_until < ?) RETURNING *")
RELEASE = "UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL"


def settling(o: DeliveryOutcome) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that record a try; the last one's row is what `disabling` reads."""
    if o.error is None:
        return [(DELIVERED, (o.at, o.status, o.delivery_id)), (HEALTHY, (o.webhook_id,))]
    status = "pending" if o.retry_at is not None else "failed"
    return [(FAILED, (status, o.retry_at or o.at, o.status, o.error, o.delivery_id)),
            (FAILING, (o.at, o.webhook_id))]


def disabling(o: DeliveryOutcome, failing: Row) -> str | None:
    """Why the endpoint is now disabled (None: it is not): failing for too long."""
    if o.error is None or failing is None or o.at - failing[0] < o.disable_after:
        return None
    return (f"failing since {failing[0]:.0f} (Unix time): disabled after "
            f"{o.disable_after:.0f} s of failures")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, …"""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def update_webhook(changes: dict[str, Any]) -> str:
    """The UPDATE of the given editable columns (RETURNING the row). Enabling a disabled
    endpoint moves its mark to the newest alert event, as adding one sets it: what was
    raised while it was disabled is not its, however far the fan-out has got."""
    sets = [f"{column} = ?" for column in changes]
    if changes.get("enabled"):  # (the CASE reads the row as it was)
        sets.append(f"after_event_id = CASE WHEN enabled THEN after_event_id "
                    f"ELSE ({NEWEST_EVENT}) END")
    return f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ? RETURNING *"


def list_deliveries(status: str | None, before: int | None) -> tuple[str, list[Any]]:
    where, args = ["webhook_id = ?"], []
    for clause, value in (("status = ?", status), ("id < ?", before)):
        if value is not None:
            where.append(clause)
            args.append(value)
    return (f"SELECT * FROM webhook_deliveries WHERE {' AND '.join(where)} ORDER BY id DESC "
            "LIMIT ?"), args


def webhook_values(hook: dict[str, Any], encode: Callable[[Any], Any]) -> tuple[Any, ...]:
    return tuple(encode(hook[c]) if c in ("events", "queues") and hook[c] is not None
                 else hook[c] for c in WEBHOOK_COLUMNS)


def as_webhook(row: Row, decode: Callable[[Any], Any]) -> dict[str, Any]:
    """A webhook row, its secret included (the routes leave it out)."""
    hook = {c: row[c] for c in WEBHOOK_COLUMNS}
    hook["events"] = decode(hook["events"])
    hook["queues"] = None if hook["queues"] is None else decode(hook["queues"])
    hook["enabled"] = bool(hook["enabled"])
    return hook


def as_delivery(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "webhook_id": row["webhook_id"], "event_id": row["event_id"],
            "message_id": row["message_id"], "type": row["type"], "payload": row["payload"],
            "status": row["status"], "attempts": row["attempts"],
            "next_attempt_at": row["next_attempt_at"], "last_status": row["last_status"],
            "last_error": row["last_error"], "created_at": row["created_at"],
            "delivered_at": row["delivered_at"]}
