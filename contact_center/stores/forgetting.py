"""Retention and erasure in SQL both stores run (docs/security.md#retention-and-erasure),
written with ``?`` placeholders (PostgreSQL numbers them). Retention picks the ended
conversations a `monitoring.retention.Due` selects and rewrites each row of theirs that
holds words without them (`monitoring.words`): the turns' text, alerts (and the alert
events and webhook deliveries that carry them), conversation events, the customer's
contact. Erasure deletes a customer's conversations with every row of theirs.

A list of conversation ids is bound as one parameter: ``in_list(column)`` is the
driver's condition that ``column`` is one of the list a ``?`` holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contact_center.stores import CustomerKey, Removed
from contact_center.stores.rows import as_alert
from monitoring.retention import Due
from monitoring.words import (
    alert_without_words,
    customer_without_contact,
    event_without_words,
    state_without_names,
    webhook_payload_without_words,
)

Row = Mapping[str, Any]
Codec = Callable[[Any], Any]
InList = Callable[[str], str]

# A conversation's alerts, and their events (which webhook deliveries name): through the
# alerts, since alerts are indexed by conversation and alert events by alert.
_ALERTS = "SELECT id FROM alerts WHERE {conversation}"
_ALERT_EVENTS = f"SELECT e.id FROM alert_events e WHERE e.alert_id IN ({_ALERTS})"


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One kind of row of the chosen conversations, rewritten without words."""

    counted: str | None  # the `Removed` field counting the rows changed
    select: str  # the key, then what `change` reads; ``?``: the conversations
    update: str  # sets what `change` returns, then ``WHERE key = ?``
    change: Callable[[Row, Codec, Codec], tuple[Any, ...] | None]  # None: nothing to remove


def _alert(row: Row, decode: Codec, encode: Codec) -> tuple[Any, ...] | None:
    alert = as_alert(row, decode)
    kept = alert_without_words(alert)
    # (``evidence`` is emptied: the document holds it; a row from before the alert
    # workflow gets its document, as one written now would.)
    return None if kept == alert and row["document"] is not None else (
        kept["reason"], encode({}), encode(kept))


def _alert_event(row: Row, decode: Codec, encode: Codec) -> tuple[Any, ...] | None:
    alert = decode(row["alert"])
    kept = alert_without_words(alert)
    return None if kept == alert else (encode(kept),)


def _delivery(row: Row, decode: Codec, encode: Codec) -> tuple[Any, ...] | None:
    kept = webhook_payload_without_words(row["payload"])  # (text in both stores)
    return None if kept == row["payload"] else (kept,)


def _event(row: Row, decode: Codec, encode: Codec) -> tuple[Any, ...] | None:
    payload = decode(row["payload"])
    kept = event_without_words(payload)
    return None if kept == payload else (encode(kept),)


def _conversation(row: Row, decode: Codec, encode: Codec) -> tuple[Any, ...] | None:
    customer, state = decode(row["customer"]), decode(row["state"])
    return (encode(customer_without_contact(customer)), encode(state_without_names(state)))


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL of retention and erasure in one driver's dialect."""

    rewrites: list[Rewrite]
    clear_turns: str  # ``?``: the conversations
    mark: str  # ``?``: when, the conversations
    ended: str  # which of the conversations (``?``) have ended
    erasing: list[tuple[str | None, str]]  # (the `Removed` field counting it, DELETE)


def statements(in_list: InList, numbered: Callable[[str], str] = lambda sql: sql,
               lock: str = "") -> Statements:
    """The statements with ``in_list`` filled in, placeholders ``numbered``; ``lock``:
    what locks the rows a SELECT reads until commit (PostgreSQL's ``FOR UPDATE``: a
    person's change to an ended alert waits, or is waited for; SQLite has one writer)."""
    def of(sql: str) -> str:
        return numbered(sql.format(conversation=in_list("conversation_id"),
                                   id=in_list("id"), lock=lock))

    alerts, alert_events = _ALERTS, _ALERT_EVENTS
    return Statements(
        rewrites=[
            Rewrite("alerts", of("SELECT * FROM alerts WHERE {conversation}{lock}"),
                    of("UPDATE alerts SET reason = ?, evidence = ?, document = ? WHERE id = ?"),
                    _alert),
            Rewrite("alert_events", of(f"SELECT id, alert FROM alert_events WHERE alert IS "
                                       f"NOT NULL AND alert_id IN ({alerts}){{lock}}"),
                    # (not one pruned meanwhile: AlertEvents.kept_after)
                    of("UPDATE alert_events SET alert = ? WHERE id = ? AND alert IS NOT "
                       "NULL"), _alert_event),
            Rewrite("webhook_deliveries", of(f"SELECT id, payload FROM webhook_deliveries "
                                             f"WHERE event_id IN ({alert_events}){{lock}}"),
                    of("UPDATE webhook_deliveries SET payload = ? WHERE id = ?"), _delivery),
            Rewrite("events", of("SELECT id, payload FROM conversation_events WHERE "
                                 "{conversation}{lock}"),
                    of("UPDATE conversation_events SET payload = ? WHERE id = ?"), _event),
            Rewrite(None, of("SELECT id, customer, state FROM conversations WHERE {id}{lock}"),
                    of("UPDATE conversations SET customer = ?, state = ? WHERE id = ?"),
                    _conversation),
        ],
        clear_turns=of("UPDATE segments SET text = NULL WHERE {conversation} AND text IS "
                       "NOT NULL"),
        mark=of("UPDATE conversations SET words_removed_at = ? WHERE {id}"),
        ended=of("SELECT id FROM conversations WHERE {id} AND status = 'ended'{lock}"),
        # Rows that name others first, the conversation last.
        erasing=[
            ("webhook_deliveries", of(f"DELETE FROM webhook_deliveries WHERE event_id IN "
                                      f"({alert_events})")),
            ("alert_events", of(f"DELETE FROM alert_events WHERE alert_id IN "
                                f"({alerts})")),
            ("alerts", of("DELETE FROM alerts WHERE {conversation}")),
            ("events", of("DELETE FROM conversation_events WHERE {conversation}")),
            ("turns", of("DELETE FROM segments WHERE {conversation}")),
            (None, of("DELETE FROM conversations WHERE {id}")),
        ])


def picking_due(due: list[Due], in_list: InList, limit: int,
                lock: str = "") -> tuple[str, list[Any]]:
    """The SELECT of the ids of at most ``limit`` conversations ``due`` selects whose
    words are still there, oldest ended first (``due`` must not be empty); ``lock``:
    PostgreSQL's ``FOR UPDATE SKIP LOCKED``, so that nodes running retention at once each
    take other conversations."""
    selections, args = [], list[Any]()
    for d in due:
        selections.append(f"(ended_at < ? AND {'NOT ' if d.others else ''}"
                          f"({in_list('queue')}))")
        args += [d.ended_before, list(d.queues)]
    # (The bound on ended_at keeps the scan of the index to conversations old enough.)
    return (f"SELECT id FROM conversations WHERE status = 'ended' AND words_removed_at IS "
            f"NULL AND ended_at < ? AND ({' OR '.join(selections)}) ORDER BY ended_at, id "
            f"LIMIT ?{lock}", [max(d.ended_before for d in due), *args, limit])


def rewritten(rewrite: Rewrite, rows: list[Any], decode: Codec,
              encode: Codec) -> list[tuple[Any, ...]]:
    """The UPDATE arguments of the rows that held words."""
    changes = []
    for row in rows:
        values = rewrite.change(row, decode, encode)
        if values is not None:
            changes.append((*values, row["id"]))
    return changes


def count(removed: Removed, field: str | None, n: int) -> None:
    if field is not None:
        setattr(removed, field, getattr(removed, field) + n)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def folded_email(email: str) -> str:
    """An e-mail address as conversations are matched on it: ASCII letters lowercased
    (as both stores' ``lower`` of the stored one, see `customer_match`)."""
    return email.translate(_ASCII_LOWER)


def customer_match(customer: CustomerKey, id_of: str, email_of: str) -> tuple[str, list[Any]]:
    """The SELECT of (id, status) of the customer's conversations; ``id_of`` and
    ``email_of``: the driver's expressions of the stored customer's id and folded e-mail
    (indexed)."""
    if customer.id is not None:
        return f"SELECT id, status FROM conversations WHERE {id_of} = ? ORDER BY id", [
            customer.id]
    assert customer.email is not None
    return f"SELECT id, status FROM conversations WHERE {email_of} = ? ORDER BY id", [
        folded_email(customer.email)]
