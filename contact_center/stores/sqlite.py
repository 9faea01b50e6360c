"""The embedded store: SQLite in WAL mode, one writer connection with group commit.

Each connection lives on its own single thread, so sqlite3 calls never run on the
event loop; the pipeline hands over a whole batch and it is committed in one
transaction (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from analytics.aggregates import Facts
from analytics.fulltext import Node
from analytics.history import History, agent_assignments
from contact_center.stores import (
    EXPORT_SECONDS,
    HISTORY_LIMIT,
    SEARCH_SECONDS,
    AggregateQuery,
    AlertChange,
    AlertEventRow,
    AlertEvents,
    AlertQuery,
    AuditQuery,
    CustomerKey,
    DeliveryOutcome,
    FullTextQuery,
    HistoryQuery,
    QueryTimeout,
    Removed,
    SearchQuery,
    StoredConversation,
    WriteBatch,
    directory,
    event_key,
)
from contact_center.stores import aggregates as ag
from contact_center.stores import audit as au
from contact_center.stores import forgetting as fo
from contact_center.stores import fulltext as ft
from contact_center.stores import profiles as pr
from contact_center.stores import sessions as se
from contact_center.stores import webhooks as wh
from contact_center.stores.rows import (
    ALERT_COLUMNS,
    RESOLVE_LEGACY_ALERTS,
    alert_filters,
    alert_values,
    as_alert,
    as_alert_change,
    as_alert_event,
    as_hit,
    as_meta,
    as_token,
    as_transcript,
    as_turn,
    as_user,
    folded,
    like_pattern,
    within_clause,
)
from monitoring import codec
from monitoring.audit import AuditEntry
from monitoring.audit_chain import GENESIS, link
from monitoring.credentials import Token, User
from monitoring.messages import RECENT_LIMIT
from monitoring.permissions import Permission
from monitoring.profiles import (
    MAX_HOLDERS_NAMED,
    ProfileCheck,
    ProfileExists,
    ProfileInUse,
    SecurityProfile,
    check_known,
    custom_names,
)
from monitoring.retention import Due
from monitoring.scope import Agent, Directory, Scope, Team
from monitoring.sessions import TICKET_SECONDS, Session, Ticket

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    queue TEXT NOT NULL,
    agent_id TEXT,
    customer TEXT NOT NULL,
    recording TEXT NOT NULL,
    attributes TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_status ON conversations(status);
CREATE TABLE IF NOT EXISTS segments (
    conversation_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    text TEXT,
    neg REAL NOT NULL, neu REAL NOT NULL, pos REAL NOT NULL, compound REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    received_at REAL NOT NULL,
    late INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, segment_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS segments_received ON segments(received_at);
CREATE TABLE IF NOT EXISTS conversation_events (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    at REAL NOT NULL,
    event_id TEXT
);
CREATE INDEX IF NOT EXISTS events_conversation ON conversation_events(conversation_id);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    rule_version INTEGER NOT NULL DEFAULT 1,
    rule_name TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    raised_at REAL NOT NULL,
    agent_id TEXT,
    queue TEXT NOT NULL,
    evidence TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_conversation ON alerts(conversation_id);
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts(raised_at);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    type TEXT NOT NULL,
    at REAL NOT NULL,
    actor TEXT,
    origin TEXT,
    alert TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events(alert_id);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    min_severity TEXT NOT NULL,
    queues TEXT,
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    disabled_reason TEXT,
    failing_since REAL,
    after_event_id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries(webhook_id, status, next_attempt_at);
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    result TEXT NOT NULL,
    source TEXT,
    request_id TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log(actor, id);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action, id);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log(target_type, target_id, id);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    agent_id TEXT,
    profiles TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent TEXT REFERENCES teams(id)
);
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    team TEXT NOT NULL REFERENCES teams(id)
);
CREATE TABLE IF NOT EXISTS access_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO access_version (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS security_profiles (
    name TEXT PRIMARY KEY,
    permissions TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    created_by TEXT,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS security_profiles_folded ON security_profiles(lower(name));
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    prefix TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS socket_tickets (
    digest TEXT PRIMARY KEY,
    session_digest TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

@dataclass(frozen=True, slots=True)
class Rows:
    """``INSERT INTO table (columns) VALUES ...`` for any number of rows (see `_bulk`);
    ``then``: what follows the rows (an upsert's ON CONFLICT)."""

    table: str
    columns: str
    then: str = ""

    @property
    def width(self) -> int:
        return self.columns.count(",") + 1


@functools.lru_cache(maxsize=128)
def _statement(rows: Rows, count: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * rows.width) + ")"] * count)
    return f"INSERT INTO {rows.table} ({rows.columns}) VALUES {values} {rows.then}"


_CONVERSATION_COLUMNS = ("id, channel, queue, agent_id, customer, recording, attributes, "
                         "status, started_at, ended_at, state, updated_at")
_CONVERSATION_UPSERT = Rows("conversations", _CONVERSATION_COLUMNS, """
ON CONFLICT(id) DO UPDATE SET
    queue = excluded.queue, agent_id = excluded.agent_id, status = excluded.status,
    ended_at = excluded.ended_at, state = excluded.state, updated_at = excluded.updated_at
""")
_SEGMENT_INSERT = Rows("segments", "conversation_id, segment_id, seq, role, participant_id, "
                       "text, neg, neu, pos, compound, started_at, ended_at, received_at, late",
                       "ON CONFLICT DO NOTHING")
_EVENT_INSERT = Rows("conversation_events", "conversation_id, type, payload, at, event_id")
# Columns added after a table first shipped: (table, column, definition).
_ADDED_COLUMNS = [
    ("alerts", "rule_version", "INTEGER NOT NULL DEFAULT 1"),
    ("alerts", "rule_name", "TEXT NOT NULL DEFAULT ''"),
    ("conversation_events", "event_id", "TEXT"),
    ("alerts", "version", "INTEGER NOT NULL DEFAULT 1"),
    ("alerts", "last_hit_at", "REAL"),
    ("alerts", "assignee", "TEXT"),
    ("alerts", "rule_ids", "TEXT"),
    ("alerts", "document", "TEXT"),
    ("users", "scope", "TEXT"),  # JSON {"teams", "queues"}; NULL: everything
    ("segments", "text_id", "INTEGER"),  # the turn's row in segments_fts
    ("conversations", "words_removed_at", "REAL"),  # retention: when (NULL: kept)
    ("users", "password_hash", "TEXT"),  # Argon2id (monitoring/passwords.py); NULL: none
]
# The stored customer's id and folded e-mail (contact_center/stores/forgetting.py), indexed.
_CUSTOMER_ID = "json_extract(customer, '$.id')"
_CUSTOMER_EMAIL = "lower(json_extract(customer, '$.email'))"
# Indexes over added columns (created once they exist).
_ADDED_INDEXES = f"""
CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status, id);
CREATE INDEX IF NOT EXISTS conversations_words_kept ON conversations(ended_at, id)
    WHERE status = 'ended' AND words_removed_at IS NULL;
CREATE INDEX IF NOT EXISTS conversations_customer_id ON conversations({_CUSTOMER_ID});
CREATE INDEX IF NOT EXISTS conversations_customer_email ON conversations({_CUSTOMER_EMAIL});
CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries(event_id);
"""
# The full-text index (contact_center/stores/fulltext.py): a turn's recorded words, kept
# by triggers in the writer's own transaction, so every way a turn is added, changed or
# removed keeps the index true. It is contentless: the words are in ``segments`` alone
# (an index with its own copy of them made the database half as large again, and
# searches a quarter slower); ``text_id`` is a turn's row in the index, and its words,
# still in ``segments``, are what FTS5's 'delete' takes out of the index. A database made
# before 2026-12-07 keeps its index of the earlier kind until `reindex_text`.
_FULLTEXT_CONTENTLESS = "content = ''"
_FULLTEXT = (
    f"""CREATE VIRTUAL TABLE segments_fts USING fts5(
        text, {_FULLTEXT_CONTENTLESS}, tokenize = 'unicode61 remove_diacritics 0')""",
    # The turns recorded before the index existed, numbered in one pass.
    """CREATE TEMP TABLE text_ids AS SELECT conversation_id, segment_id,
        row_number() OVER (ORDER BY conversation_id, segment_id) AS id
        FROM segments WHERE text IS NOT NULL""",
    """INSERT INTO segments_fts (rowid, text)
        SELECT t.id, s.text FROM text_ids t JOIN segments s USING (conversation_id, segment_id)""",
    """UPDATE segments SET text_id = t.id FROM text_ids t
        WHERE t.conversation_id = segments.conversation_id
        AND t.segment_id = segments.segment_id""",
    "DROP TABLE text_ids",
    """CREATE TRIGGER segments_fts_added AFTER INSERT ON segments WHEN new.text IS NOT NULL
    BEGIN
        INSERT INTO segments_fts (text) VALUES (new.text);
        UPDATE segments SET text_id = last_insert_rowid()
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id;
    END""",
    """CREATE TRIGGER segments_fts_removed AFTER DELETE ON segments
    WHEN old.text_id IS NOT NULL
    BEGIN
        INSERT INTO segments_fts (segments_fts, rowid, text)
        VALUES ('delete', old.text_id, old.text);
    END""",
    """CREATE TRIGGER segments_fts_changed AFTER UPDATE OF text ON segments
    BEGIN
        INSERT INTO segments_fts (segments_fts, rowid, text)
        SELECT 'delete', old.text_id, old.text WHERE old.text_id IS NOT NULL;
        UPDATE segments SET text_id = NULL
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id;
        INSERT INTO segments_fts (text) SELECT new.text WHERE new.text IS NOT NULL;
        UPDATE segments SET text_id = last_insert_rowid()
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id
        AND new.text IS NOT NULL;
    END""",
)
# What an index of the earlier kind (with its own copy of the words) is dropped with.
_FULLTEXT_BEFORE = (
    "DROP TRIGGER segments_fts_added", "DROP TRIGGER segments_fts_removed",
    "DROP TRIGGER segments_fts_changed", "DROP TABLE segments_fts",
    "UPDATE segments SET text_id = NULL WHERE text_id IS NOT NULL",
)
_ALERT_UPSERT = Rows("alerts", ", ".join(ALERT_COLUMNS), f"""
ON CONFLICT(id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in ALERT_COLUMNS[2:])}
WHERE excluded.version >= alerts.version
""")
_ALERT_EVENT_INSERT = Rows("alert_events",
                           "alert_id, conversation_id, type, at, actor, origin, alert")
_KEPT_AFTER = "alert_events_kept_after"  # settings key: see AlertEvents.kept_after
_CHUNK = 500  # stays under SQLite's bound-parameter limit
_MOST_ROWS = 256  # a `_bulk` statement's rows, where SQLite's bound-parameter limit allows


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _decode_all(documents: list[str]) -> list[Any]:
    """Many JSON documents: the keys they share become one string each (orjson caches
    keys), which counts with every live conversation's state in memory."""
    return [codec.loads(d) for d in documents]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _one_of(column: str, n: int) -> str:
    return f"{column} IN (SELECT value FROM json_each(?))"


def _lists_as_json(args: list[Any]) -> list[Any]:
    """SQLite binds no list: `_one_of` reads one as a JSON array."""
    return [json.dumps(a) if isinstance(a, list) else a for a in args]


class _Connection:
    """One sqlite3 connection confined to one thread."""

    def __init__(self, path: str, name: str, synchronous: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._path, self._synchronous = path, synchronous
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> None:
        # (room for the writer's bulk statements, a table's 9 sizes, beside the rest)
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None,
                             cached_statements=256)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        # Deleted and replaced content is overwritten with zeros where that costs no more
        # I/O; retention and erasure zero every page they free (`_forgetting`).
        db.execute("PRAGMA secure_delete=FAST")
        db.create_function("holds_all", -1, _holds_all, deterministic=True)
        self._db = db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._connect()
        assert self._db is not None
        return fn(self._db)

    async def close(self) -> None:
        def _close(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            await self.run(_close)
            self._db = None
        self._executor.shutdown(wait=True)


class SQLiteStore:
    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        if str(path) == ":memory:":  # each connection would see its own empty database
            raise ValueError("SQLiteStore needs a file; use a temporary one for tests")
        self.path = str(path)
        self._writer = _Connection(self.path, "sqlite-writer", synchronous)
        self._reader = _Connection(self.path, "sqlite-reader", synchronous)
        # Token checks get their own connection: a long search never delays a login; and
        # analysts (search, backtest history) theirs, never delaying supervisors' reads.
        self._auth = _Connection(self.path, "sqlite-auth", synchronous)
        self._analyst = _Connection(self.path, "sqlite-analyst", synchronous)
        self._pipeline_lock: TextIO | None = None

    async def open(self) -> None:
        await asyncio.to_thread(_create_private, Path(self.path))
        await self._writer.run(_migrate)

    async def close(self) -> None:
        for connection in (self._writer, self._reader, self._auth, self._analyst):
            await connection.close()
        if self._pipeline_lock is not None:
            self._pipeline_lock.close()  # releases the lock
            self._pipeline_lock = None

    async def ping(self) -> None:
        # The auth connection: a long analyst query must not make the service look down.
        await self._auth.run(lambda db: db.execute("SELECT 1").fetchone())

    async def claim_pipeline(self) -> None:
        """Hold an exclusive lock on ``<database>.lock`` while open (see
        `Store.claim_pipeline`)."""
        self._pipeline_lock = await asyncio.to_thread(_exclusive_lock, self.path + ".lock")

    # -- pipeline ---------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        if batch.marks:
            raise ValueError("partition marks need the PostgreSQL store (scale-out)")
        if batch:
            await self._writer.run(lambda db: _write(db, batch))

    async def load_conversations(
        self, ids: Collection[str] | None = None
    ) -> list[StoredConversation]:
        return await self._writer.run(lambda db: _load_conversations(db, ids))

    async def live_conversation_ids(self) -> list[str]:
        return await self._writer.run(lambda db: [r[0] for r in db.execute(
            "SELECT id FROM conversations WHERE status = 'live'")])

    # -- rules ------------------------------------------------------------------------

    async def load_rules(self) -> dict[str, Any] | None:
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT value FROM settings WHERE key = 'rules'").fetchone()
            return None if row is None else json.loads(row[0])

        return await self._reader.run(q)

    async def save_rules(self, document: dict[str, Any]) -> None:
        value = json.dumps(document)
        await self._writer.run(lambda db: db.execute(
            "INSERT INTO settings (key, value) VALUES ('rules', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (value,)))

    # -- users and tokens ---------------------------------------------------------------

    async def create_user(self, user: User, check: ProfileCheck | None = None) -> None:
        row = asdict(user) | {"profiles": json.dumps(user.profiles)}

        def q(db: sqlite3.Connection) -> None:
            with _writing(db):
                _check_profiles(db, user.profiles, [], check)
                db.execute("INSERT INTO users (id, username, agent_id, profiles, disabled, "
                           "created_at) VALUES (:id, :username, :agent_id, :profiles, "
                           ":disabled, :created_at)", row)

        await self._writer.run(q)

    async def get_user(self, *, user_id: str | None = None,
                       username: str | None = None) -> User | None:
        column, value = ("id", user_id) if user_id is not None else ("username", username)

        def q(db: sqlite3.Connection) -> User | None:
            row = db.execute(f"SELECT * FROM users WHERE {column} = ?", (value,)).fetchone()
            return None if row is None else as_user(row, json.loads)

        return await self._auth.run(q)

    async def list_users(self) -> list[User]:
        return await self._reader.run(
            lambda db: [as_user(r, json.loads)
                        for r in db.execute("SELECT * FROM users ORDER BY username")])

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        return await self._writer.run(lambda db: _changing_access(
            db, "UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username)))

    async def add_token(self, token: Token) -> None:
        await self._writer.run(lambda db: db.execute(
            "INSERT INTO tokens (id, user_id, prefix, digest, label, created_at, revoked) "
            "VALUES (:id, :user_id, :prefix, :digest, :label, :created_at, :revoked)",
            asdict(token)))

    async def find_token(self, prefix: str) -> Token | None:
        def q(db: sqlite3.Connection) -> Token | None:
            row = db.execute("SELECT * FROM tokens WHERE prefix = ?", (prefix,)).fetchone()
            return None if row is None else as_token(row)

        return await self._auth.run(q)

    async def list_tokens(self, user_id: str) -> list[Token]:
        return await self._reader.run(lambda db: [as_token(r) for r in db.execute(
            "SELECT * FROM tokens WHERE user_id = ? ORDER BY created_at", (user_id,))])

    async def revoke_token(self, token_id: str) -> bool:
        return await self._writer.run(lambda db: _changing_access(
            db, "UPDATE tokens SET revoked = 1 WHERE id = ? AND revoked = 0", (token_id,)))

    # -- passwords, sessions, socket tickets (contact_center.stores.sessions) -----------
    # Read on the auth connection, as tokens are.

    async def password_hash(self, user_id: str) -> str | None:
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute(se.PASSWORD, (user_id,)).fetchone()
            return None if row is None else row[0]

        return await self._auth.run(q)

    async def set_password(self, username: str, password_hash: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                db.execute(se.END_USERS_SESSIONS, (username,))
                return _changing_access(db, se.SET_PASSWORD, (password_hash, username))

        return await self._writer.run(q)

    async def add_session(self, session: Session) -> None:
        await self._writer.run(lambda db: db.execute(se.ADD, (
            session.digest, session.user_id, session.created_at, session.seen_at)))

    async def find_session(self, digest: str) -> Session | None:
        def q(db: sqlite3.Connection) -> Session | None:
            row = db.execute(se.FIND, (digest,)).fetchone()
            return None if row is None else se.as_session(row)

        return await self._auth.run(q)

    async def touch_session(self, digest: str, at: float) -> None:
        await self._writer.run(lambda db: db.execute(se.TOUCH, (at, digest, at)))

    async def end_session(self, digest: str) -> bool:
        return await self._writer.run(lambda db: _changing_access(db, se.END, (digest,)))

    async def prune_sessions(self, seen_before: float, created_before: float) -> int:
        return await self._writer.run(
            lambda db: db.execute(se.PRUNE, (seen_before, created_before)).rowcount)

    async def add_ticket(self, ticket: Ticket) -> None:
        def q(db: sqlite3.Connection) -> None:
            with _writing(db):
                db.execute(se.PRUNE_TICKETS, (ticket.expires_at - TICKET_SECONDS,))
                db.execute(se.ADD_TICKET, (ticket.digest, ticket.session_digest,
                                           ticket.expires_at))

        await self._writer.run(q)

    async def take_ticket(self, digest: str, now: float) -> str | None:
        def q(db: sqlite3.Connection) -> str | None:
            rows = db.execute(se.TAKE_TICKET, (digest, now)).fetchall()  # (all: done)
            return str(rows[0][0]) if rows else None

        return await self._writer.run(q)

    async def set_profiles(self, username: str, profiles: list[str],
                           check: ProfileCheck | None = None) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                row = db.execute(pr.USERS_PROFILES, (username,)).fetchone()
                if row is None:
                    return False
                _check_profiles(db, profiles, json.loads(row[0]), check)
                return _changing_access(db, pr.SET_PROFILES, (json.dumps(profiles), username))

        return await self._writer.run(q)

    # -- custom security profiles (contact_center.stores.profiles) ----------------------
    # Read on the auth connection: a token check reads the custom profiles its user holds.

    async def list_profiles(self, names: Collection[str] | None = None
                            ) -> list[SecurityProfile]:
        return await self._auth.run(lambda db: _profiles(db, names))

    async def get_profile(self, name: str) -> SecurityProfile | None:
        def q(db: sqlite3.Connection) -> SecurityProfile | None:
            row = db.execute(pr.GET, (name,)).fetchone()
            return None if row is None else pr.as_profile(row, json.loads)

        return await self._auth.run(q)

    async def create_profile(self, profile: SecurityProfile) -> None:
        if not await self._writer.run(lambda db: _changing_access(
                db, pr.CREATE, pr.values(profile, json.dumps))):
            raise ProfileExists(f"a profile named {profile.name!r} exists (names are "
                                "compared case aside)")

    async def update_profile(self, name: str, change: Callable[[SecurityProfile],
                                                               SecurityProfile]
                             ) -> SecurityProfile | None:
        def q(db: sqlite3.Connection) -> SecurityProfile | None:
            with _writing(db):
                row = db.execute(pr.GET, (name,)).fetchone()
                if row is None:
                    return None
                changed = change(pr.as_profile(row, json.loads))
                _changing_access(db, pr.UPDATE, pr.changes(changed, json.dumps))
                return changed

        return await self._writer.run(q)

    async def delete_profile(self, name: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                held = db.execute(pr.holders("json_each(u.profiles) AS e", MAX_HOLDERS_NAMED),
                                  (name,)).fetchall()
                if held:
                    raise ProfileInUse(name, [r[0] for r in held], held[0][1])
                return _changing_access(db, pr.DELETE, (name,))

        return await self._writer.run(q)

    # -- teams, agents, scopes (contact_center.stores.directory) ----------------------------

    async def access_version(self) -> int:
        return await self._auth.run(lambda db: int(db.execute(directory.VERSION).fetchone()[0]))

    async def load_directory(self) -> Directory:
        def q(db: sqlite3.Connection) -> Directory:
            db.execute("BEGIN")  # one snapshot
            try:
                return _directory(db)
            finally:
                db.execute("COMMIT")

        return await self._auth.run(q)

    async def save_team(self, team: Team, create: bool) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                if not _directory(db).check_team(team, create):
                    return False
                db.execute(directory.PUT_TEAM, (team.id, team.name, team.parent))
                db.execute(directory.BUMP)
                return True

        return await self._writer.run(q)

    async def delete_team(self, team_id: str) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                scopes = directory.scopes(db.execute(directory.SCOPES).fetchall(), json.loads)
                if not _directory(db).check_removal(team_id, scopes):
                    return False
                db.execute(directory.DELETE_TEAM, (team_id,))
                db.execute(directory.BUMP)
                return True

        return await self._writer.run(q)

    async def put_agent(self, agent: Agent) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                known = _directory(db)
                known.check_teams_exist([agent.team])
                db.execute(directory.PUT_AGENT, (agent.id, agent.name, agent.team))
                db.execute(directory.BUMP)
                return agent.id not in known.agents

        return await self._writer.run(q)

    async def set_scope(self, username: str, scope: Scope) -> bool:
        document = scope.as_json()

        def q(db: sqlite3.Connection) -> bool:
            with _writing(db):
                _directory(db).check_teams_exist(scope.teams or ())
                return _changing_access(db, directory.SET_SCOPE, (
                    None if document is None else json.dumps(document), username))

        return await self._writer.run(q)

    # -- analyst --------------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return await self._reader.run(lambda db: _get_conversation(db, conversation_id))

    async def list_alerts(self, query: AlertQuery) -> list[dict[str, Any]]:
        where, args = alert_filters(query, lambda n: "?", "instr", _one_of)
        args = _lists_as_json(args)
        return await self._reader.run(lambda db: [as_alert(r, codec.loads) for r in db.execute(
            f"SELECT * FROM alerts WHERE {where} ORDER BY id DESC LIMIT ?",
            [*args, query.limit])])

    async def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            return None if row is None else as_alert(row, codec.loads)

        return await self._reader.run(q)

    async def alert_history(self, alert_id: str) -> list[dict[str, Any]]:
        return await self._reader.run(lambda db: [as_alert_change(r) for r in db.execute(
            "SELECT id, type, at, actor, origin FROM alert_events WHERE alert_id = ? "
            "ORDER BY id LIMIT ?", (alert_id, HISTORY_LIMIT))])

    async def change_ended_alert(self, alert_id: str, change: AlertChange, by: str,
                                 origin: str | None, now: float) -> AlertEventRow | None:
        return await self._writer.run(
            lambda db: _change_ended_alert(db, alert_id, change, by, origin, now))

    async def alert_events_after(self, after: int, limit: int) -> AlertEvents:
        def q(db: sqlite3.Connection) -> AlertEvents:
            db.execute("BEGIN")  # the events and the mark from one snapshot
            try:
                kept = db.execute("SELECT value FROM settings WHERE key = ?",
                                  (_KEPT_AFTER,)).fetchone()
                rows = db.execute("SELECT id, type, alert FROM alert_events WHERE id > ? "
                                  "AND alert IS NOT NULL ORDER BY id LIMIT ?",
                                  (after, limit)).fetchall()
            finally:
                db.execute("COMMIT")
            return AlertEvents([as_alert_event(r, codec.loads) for r in rows],
                               int(kept[0]) if kept else 0)

        return await self._reader.run(q)

    async def newest_alert_event(self) -> int:
        return await self._reader.run(lambda db: int(db.execute(
            "SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0]))

    async def prune_alert_events(self, before: float) -> int:
        return await self._writer.run(lambda db: _prune_alert_events(db, before))

    # -- webhooks ---------------------------------------------------------------------

    async def add_webhook(self, hook: dict[str, Any]) -> dict[str, Any]:
        def q(db: sqlite3.Connection) -> dict[str, Any]:
            with _writing(db):  # (no alert event between reading and adding)
                stored = hook | {"after_event_id": db.execute(wh.NEWEST_EVENT).fetchone()[0]}
                db.execute(wh.ADD_WEBHOOK, wh.webhook_values(stored, codec.dumps))
            return stored

        return await self._writer.run(q)

    async def list_webhooks(self) -> list[dict[str, Any]]:
        return await self._reader.run(lambda db: [wh.as_webhook(r, codec.loads) for r in
                                                  db.execute("SELECT * FROM webhooks "
                                                             "ORDER BY created_at, id")])

    async def get_webhook(self, webhook_id: str) -> dict[str, Any] | None:
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT * FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
            return None if row is None else wh.as_webhook(row, codec.loads)

        return await self._reader.run(q)

    async def update_webhook(self, webhook_id: str,
                             changes: dict[str, Any]) -> dict[str, Any] | None:
        values = [codec.dumps(v) if k in ("events", "queues") and v is not None else v
                  for k, v in changes.items()]

        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(wh.update_webhook(changes), [*values, webhook_id]).fetchone()
            return None if row is None else wh.as_webhook(row, codec.loads)

        return await self._writer.run(q)

    async def delete_webhook(self, webhook_id: str) -> bool:
        cursor = await self._writer.run(lambda db: db.execute(
            "DELETE FROM webhooks WHERE id = ?", (webhook_id,)))
        return cursor.rowcount > 0

    async def webhooks_fanned_out(self) -> int:
        return await self._reader.run(lambda db: int(db.execute(wh.FANNED_OUT).fetchone()[0]))

    async def add_deliveries(self, deliveries: list[tuple[Any, ...]],
                             through: int) -> list[dict[str, Any]]:
        def q(db: sqlite3.Connection) -> list[dict[str, Any]]:
            with _writing(db):
                added = [wh.as_delivery(row) for d in deliveries
                         for row in db.execute(wh.ADD_DELIVERY, d).fetchall()]
                db.execute(wh.ADVANCE, (through,))
            return added

        return await self._writer.run(q)

    async def claim_deliveries(self, webhook_id: str, now: float, lease_until: float,
                               limit: int) -> list[dict[str, Any]]:
        return await self._writer.run(lambda db: [wh.as_delivery(r) for r in db.execute(
            wh.CLAIM.format(lock=""), (lease_until, webhook_id, now, now, limit)).fetchall()])

    async def settle_deliveries(self, outcomes: list[DeliveryOutcome]) -> set[str]:
        def q(db: sqlite3.Connection) -> set[str]:
            with _writing(db):
                return {o.webhook_id for o in outcomes if _settle(db.execute, o)}

        return await self._writer.run(q)

    async def list_deliveries(self, webhook_id: str, status: str | None,
                              before: int | None, limit: int) -> list[dict[str, Any]]:
        sql, args = wh.list_deliveries(status, before)
        return await self._reader.run(lambda db: [wh.as_delivery(r) for r in db.execute(
            sql, [webhook_id, *args, limit])])

    async def redeliver(self, webhook_id: str, delivery_id: int,
                        now: float) -> dict[str, Any] | None:
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(wh.REDELIVER, (now, webhook_id, delivery_id, now)).fetchone()
            return None if row is None else wh.as_delivery(row)

        return await self._writer.run(q)

    async def release_delivery_leases(self) -> None:
        await self._writer.run(lambda db: db.execute(wh.RELEASE))

    # -- audit log --------------------------------------------------------------------

    async def append_audit(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        if not entries:
            return []
        return await self._writer.run(lambda db: _append_audit(db, entries))

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        sql, args = au.listing(query)
        return await self._reader.run(lambda db: [au.as_entry(r, codec.loads)
                                                  for r in db.execute(sql, args)])

    async def audit_chain(self, after: int, limit: int) -> list[AuditEntry]:
        return await self._reader.run(lambda db: [au.as_entry(r, codec.loads)
                                                  for r in db.execute(au.CHAIN,
                                                                      (after, limit))])

    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        return await self._analyst.run(lambda db: _search(db, query))

    async def search_turns(self, query: FullTextQuery) -> list[dict[str, Any]]:
        return await self._analyst.run(lambda db: _search_turns(db, query))

    async def search_conversations(self, query: FullTextQuery) -> list[dict[str, Any]]:
        return await self._analyst.run(lambda db: _search_conversations(db, query))

    async def count_found(self, query: FullTextQuery, mode: str) -> int:
        sql, args = ft.found(query, _FULLTEXT_SQL, mode, "count")
        return await self._analyst.run(lambda db: int(_limited(db, lambda: db.execute(
            sql, _lists_as_json(args)).fetchone()[0])))

    async def export_found(self, query: FullTextQuery,
                           mode: str) -> AsyncIterator[list[dict[str, Any]]]:
        sql, args = ft.found(query, _FULLTEXT_SQL, mode, "all")
        deadline = time.monotonic() + EXPORT_SECONDS
        # A connection of its own: its snapshot, held for the export, is nobody else's
        # (the analysts' connection stays current), and it is closed at the end.
        db = await asyncio.to_thread(_read_only, self.path)
        try:
            rows: sqlite3.Cursor = await asyncio.to_thread(
                _limited, db, lambda: db.execute(sql, _lists_as_json(args)))

            def next_page() -> list[dict[str, Any]]:
                return _exported(db, query, mode, _limited(
                    db, lambda: rows.fetchmany(ft.EXPORT_PAGE)))

            while page := await asyncio.to_thread(next_page):
                yield page
                if time.monotonic() > deadline:
                    raise QueryTimeout
        finally:
            await asyncio.to_thread(db.close)

    async def load_history(self, query: HistoryQuery) -> History:
        return await self._analyst.run(lambda db: _load_history(db, query))

    async def aggregate(self, query: AggregateQuery) -> Facts:
        return await self._analyst.run(lambda db: _aggregate(db, query))

    # -- retention and erasure (contact_center.stores.forgetting) -----------------------

    async def remove_words(self, due: list[Due], now: float, limit: int) -> Removed:
        if not due:
            return Removed()
        return await self._writer.run(lambda db: _remove_words(db, due, now, limit))

    async def customer_conversations(self, customer: CustomerKey) -> list[tuple[str, str]]:
        sql, args = fo.customer_match(customer, _CUSTOMER_ID, _CUSTOMER_EMAIL)
        return await self._reader.run(lambda db: [(r[0], r[1]) for r in db.execute(sql, args)])

    async def erase_conversations(self, ids: list[str]) -> Removed:
        erased = await self._writer.run(lambda db: _erase(db, ids))
        if erased.conversations:
            # FTS5 keeps a removed turn's words in its index pages until it merges them
            # away: merge the index whole, a step at a time (each some tens of ms, with
            # the pipeline's batches in between), then truncate the write-ahead log,
            # which holds the pages as they were.
            while await self._writer.run(_merge_step):
                pass
            await self._writer.run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return erased


# -- SQL run on the connection threads ----------------------------------------------------


def _create_private(path: Path) -> None:
    """Create the database file (and its directory) readable by this user alone: it
    holds transcripts, customer contacts and token digests. SQLite gives its -wal and
    -shm files the database file's permissions."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def _exclusive_lock(path: str) -> TextIO:
    lock = open(path, "a")  # noqa: SIM115 - held until the store closes
    os.chmod(path, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RuntimeError(f"another contact-center process runs a pipeline on "
                           f"{path.removesuffix('.lock')}; stop it first") from None
    return lock


def _directory(db: sqlite3.Connection) -> Directory:
    return directory.directory(db.execute(directory.TEAMS).fetchall(),
                               db.execute(directory.AGENTS).fetchall(),
                               int(db.execute(directory.VERSION).fetchone()[0]))


def _profiles(db: sqlite3.Connection, names: Collection[str] | None) -> list[SecurityProfile]:
    rows = db.execute(pr.LIST) if names is None else db.execute(
        pr.named(_one_of), (json.dumps(sorted(names)),))
    return [pr.as_profile(r, json.loads) for r in rows]


def _check_profiles(db: sqlite3.Connection, profiles: list[str], held: list[str],
                    check: ProfileCheck | None) -> None:
    """Inside a write transaction: every profile is known (and ``check`` passes)."""
    named = custom_names(profiles)
    stored: dict[str, frozenset[Permission]] = pr.permissions_by_name(
        _profiles(db, named)) if named else {}
    check_known(profiles, stored)
    if check is not None:
        check(held, stored)


def _changing_access(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> bool:
    """Run one change to who may do what, counting it in the access version (if it
    changed a row); whether it did."""
    def change() -> bool:
        if db.execute(sql, args).rowcount == 0:
            return False
        db.execute(directory.BUMP)
        return True

    if db.in_transaction:
        return change()
    with _writing(db):
        return change()


def _migrate(db: sqlite3.Connection) -> None:
    """Create what is missing; add columns that newer versions use (never drops)."""
    db.executescript(SCHEMA)
    for table, column, definition in _ADDED_COLUMNS:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if (table, column) == ("alerts", "document"):
                db.execute(RESOLVE_LEGACY_ALERTS)
    db.executescript(_ADDED_INDEXES)
    _index_text(db)


def _index_text(db: sqlite3.Connection) -> None:
    """Create the full-text index once, indexing the turns recorded before it existed.
    An index of the earlier kind (with its own copy of the words) is kept, so a version
    before 2026-12-07 still searches an upgraded database: `reindex_text` rebuilds it."""
    db.execute("CREATE INDEX IF NOT EXISTS segments_text_id ON segments(text_id) "
               "WHERE text_id IS NOT NULL")  # (searches join through it, either kind)
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'segments_fts'").fetchone():
        return
    with _writing(db):
        for statement in _FULLTEXT:
            db.execute(statement)


def reindex_text(database: Path, vacuum: bool = False, always: bool = False) -> bool:
    """Rebuild a full-text index of the earlier kind as a contentless one, its copy of the
    words zeroed (``always``: rebuild a contentless one too, from the words in
    ``segments``; ``vacuum``: then give the free pages back); whether it rebuilt.
    Refused while a service runs on the database (its lock). One way: versions before
    2026-12-07 cannot search the database after."""
    lock = _exclusive_lock(f"{database}.lock")
    try:
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=5000")
            found = db.execute("SELECT sql FROM sqlite_master "
                               "WHERE name = 'segments_fts'").fetchone()
            rebuilt = found is not None and (always or _FULLTEXT_CONTENTLESS not in found[0])
            if rebuilt:
                with _forgetting(db), _writing(db):
                    for statement in (*_FULLTEXT_BEFORE, *_FULLTEXT):
                        db.execute(statement)
            if vacuum:
                db.execute("VACUUM")
            return rebuilt
    finally:
        lock.close()


@contextlib.contextmanager
def _writing(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed if the block ends, else rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk does): a second ROLLBACK
        # would fail and hide the cause.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _bulk(db: sqlite3.Connection, statement: Rows, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` in their order; the connection's last inserted rowid after (the
    last row's only for a plain insert: a row that conflicts or updates adds none).

    A few multi-row statements, not one step per row (``executemany``): the writer thread
    gives up the interpreter lock for each step, and while the event loop is busy each
    taking-back waits for the loop's switch interval, which made a 200-row commit take
    0.5 s instead of 2 ms (bench/gil_convoy.py). The rows go in as chunks of a power of two
    (200 rows: 128, 64 and 8), so a table sees at most a handful of statements a batch
    and SQLite's statement cache holds them all. Values are bound as they are: nothing is
    encoded for SQLite to parse again (a JSON array of the rows did that, once per column:
    twice the writer's time for a conversation's state)."""
    most = max(1, min(_MOST_ROWS,
                      db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // statement.width))
    last, start = 0, 0
    while start < len(rows):
        count = 1 << (min(len(rows) - start, most).bit_length() - 1)
        chunk = rows[start:start + count]
        last = db.execute(_statement(statement, count),
                          [value for row in chunk for value in row]).lastrowid or last
        start += count
    return last


def _write(db: sqlite3.Connection, batch: WriteBatch) -> None:
    with _writing(db):
        _bulk(db, _CONVERSATION_UPSERT, [
            (meta["id"], meta["channel"], meta["queue"], meta["agent_id"],
             codec.dumps(meta["customer"]), meta["recording"], codec.dumps(meta["attributes"]),
             meta["status"], meta["started_at"], meta["ended_at"], codec.dumps(state),
             meta["updated_at"])
            for meta, state in batch.conversations.values()])
        _bulk(db, _SEGMENT_INSERT, [
            (s.conversation_id, s.segment_id, s.seq, s.role, s.participant_id, s.text,
             s.scores["neg"], s.scores["neu"], s.scores["pos"], s.scores["compound"],
             s.started_at, s.ended_at, s.received_at, int(s.late))
            for s in batch.segments])
        _bulk(db, _EVENT_INSERT, [(e.conversation_id, e.type, codec.dumps(e.payload), e.at,
                                   e.event_id) for e in batch.events])
        _bulk(db, _ALERT_UPSERT, [alert_values(a, codec.dumps) for a in batch.alerts.values()])
        _add_alert_events(db, batch.alert_events)


def _add_alert_events(db: sqlite3.Connection, events: list[AlertEventRow]) -> None:
    """Numbered in commit order: one writer, one transaction at a time, and plain inserts
    (no conflict clause) add them in order, so their ids are the last one's and those
    just before it."""
    last = _bulk(db, _ALERT_EVENT_INSERT, [
        (e.alert["id"], e.conversation_id, e.type, e.at, e.by, e.origin,
         codec.dumps(e.alert)) for e in events])
    for n, e in enumerate(events):
        e.event_id = last - len(events) + 1 + n


def _change_ended_alert(db: sqlite3.Connection, alert_id: str, change: AlertChange,
                        by: str, origin: str | None, now: float) -> AlertEventRow | None:
    with _writing(db):
        row = db.execute("SELECT a.*, c.status AS conversation_status, NOT EXISTS ("
                         "SELECT 1 FROM alerts b WHERE b.conversation_id = a.conversation_id "
                         "AND b.id > a.id) AS latest FROM alerts a LEFT JOIN conversations c "
                         "ON c.id = a.conversation_id WHERE a.id = ?", (alert_id,)).fetchone()
        if row is None:
            raise LookupError(alert_id)
        if row["conversation_status"] == "live":
            return None  # (nothing written)
        alert = as_alert(row, codec.loads)
        event = AlertEventRow(alert, change(alert, bool(row["latest"])), now, by, origin)
        _bulk(db, _ALERT_UPSERT, [alert_values(alert, codec.dumps)])
        _add_alert_events(db, [event])
        return event


def _append_audit(db: sqlite3.Connection, entries: list[AuditEntry]) -> list[AuditEntry]:
    """Chained after the newest entry: one writer, one transaction at a time."""
    with _writing(db):
        newest = db.execute(au.NEWEST).fetchone()
        linked = link(entries, *(tuple(newest) if newest else (0, GENESIS)))
        db.executemany(au.INSERT, [au.values(e, codec.dumps) for e in linked])
    return linked


def _settle(execute: Callable[..., Any], o: DeliveryOutcome) -> bool:
    """Record a try inside a transaction; whether the endpoint was disabled."""
    for sql, args in wh.settling(o):
        row = execute(sql, args).fetchone()
    reason = wh.disabling(o, row)
    if reason is not None:
        execute(wh.DISABLE, (False, reason, o.webhook_id))
    return reason is not None


def _prune_alert_events(db: sqlite3.Connection, before: float) -> int:
    with _writing(db):
        newest = db.execute("SELECT max(id) FROM alert_events WHERE at < ? AND alert IS NOT "
                            "NULL", (before,)).fetchone()[0]
        if newest is None:
            return 0
        count = db.execute("UPDATE alert_events SET alert = NULL WHERE id <= ? AND alert IS "
                           "NOT NULL", (newest,)).rowcount
        db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                   "UPDATE SET value = excluded.value", (_KEPT_AFTER, str(newest)))
        return int(count)


def _load_conversations(db: sqlite3.Connection,
                        ids: Collection[str] | None) -> list[StoredConversation]:
    if ids is None:
        rows = db.execute("SELECT * FROM conversations WHERE status = 'live'").fetchall()
    else:
        rows = []
        for chunk in _chunks(list(ids)):
            rows += db.execute(f"SELECT * FROM conversations WHERE id IN ({_marks(len(chunk))})",
                               chunk).fetchall()
    loaded: dict[str, StoredConversation] = {}
    for part in _chunks(rows):
        for r, state in zip(part, _decode_all([r["state"] for r in part]), strict=True):
            loaded[r["id"]] = StoredConversation(as_meta(r, codec.loads), state, set(), [])
    for chunk in _chunks(list(loaded)):
        marks = _marks(len(chunk))
        for r in db.execute(
                f"SELECT conversation_id, segment_id FROM segments "
                f"WHERE conversation_id IN ({marks})", chunk):
            loaded[r[0]].applied.add(r[1])
        for r in db.execute(
                f"SELECT conversation_id, event_id FROM conversation_events "
                f"WHERE conversation_id IN ({marks}) AND event_id IS NOT NULL", chunk):
            loaded[r[0]].applied.add(event_key(r[1]))
        live = [c for c in chunk if loaded[c].meta["status"] == "live"]
        if live:  # each one's newest turns, in one query per chunk (not one per conversation)
            for r in db.execute(
                    f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY "
                    f"conversation_id ORDER BY seq DESC) AS newest FROM segments "
                    f"WHERE conversation_id IN ({_marks(len(live))}) AND text IS NOT NULL) "
                    f"WHERE newest <= ? ORDER BY conversation_id, seq",
                    [*live, RECENT_LIMIT]):
                loaded[r["conversation_id"]].recent.append(as_turn(r))
            for r in db.execute(
                    f"SELECT * FROM alerts WHERE id IN (SELECT max(id) FROM alerts WHERE "
                    f"conversation_id IN ({_marks(len(live))}) GROUP BY conversation_id)",
                    live):
                loaded[r["conversation_id"]].alert = as_alert(r, codec.loads)
    return list(loaded.values())


_FORGETTING = fo.statements(lambda column: _one_of(column, 0))


@contextlib.contextmanager
def _forgetting(db: sqlite3.Connection) -> Iterator[None]:
    """Removed words leave the file: every page freed meanwhile is overwritten with zeros
    (an I/O the pipeline's own writes are spared)."""
    db.execute("PRAGMA secure_delete=ON")
    try:
        yield
    finally:
        db.execute("PRAGMA secure_delete=FAST")


def _remove_words(db: sqlite3.Connection, due: list[Due], now: float,
                  limit: int) -> Removed:
    with _forgetting(db), _writing(db):
        sql, args = fo.picking_due(due, lambda column: _one_of(column, 0), limit)
        removed = Removed([r[0] for r in db.execute(sql, _lists_as_json(args))])
        if not removed.conversations:
            return removed
        chosen = json.dumps(removed.conversations)
        for rewrite in _FORGETTING.rewrites:
            changes = fo.rewritten(rewrite, db.execute(rewrite.select, (chosen,)).fetchall(),
                                   json.loads, codec.dumps)
            db.executemany(rewrite.update, changes)
            fo.count(removed, rewrite.counted, len(changes))
        # (The full-text index follows: segments_fts_changed.)
        removed.turns = db.execute(_FORGETTING.clear_turns, (chosen,)).rowcount
        db.execute(_FORGETTING.mark, (now, chosen))
    return removed


def _erase(db: sqlite3.Connection, ids: list[str]) -> Removed:
    with _forgetting(db):
        return _erased(db, ids)


def _erased(db: sqlite3.Connection, ids: list[str]) -> Removed:
    with _writing(db):
        ended = [r[0] for r in db.execute(_FORGETTING.ended, (json.dumps(ids),))]
        erased = Removed(ended)
        chosen = json.dumps(ended)
        for counted, sql in _FORGETTING.erasing:  # (the full-text rows: segments_fts_removed)
            fo.count(erased, counted, db.execute(sql, (chosen,)).rowcount)
    return erased


MERGE_PAGES = 200  # index pages one merge step works on (about 50 ms, 1M turns indexed)


def _merge_step(db: sqlite3.Connection) -> bool:
    """Merge the full-text index toward one segment, freed pages zeroed; whether there
    was work (FTS5's 'merge' made two or more changes)."""
    with _forgetting(db), _writing(db):
        before = db.total_changes
        db.execute("INSERT INTO segments_fts (segments_fts, rank) VALUES ('merge', ?)",
                    (-MERGE_PAGES,))
        return db.total_changes - before >= 2


def _get_conversation(db: sqlite3.Connection, conversation_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        return None
    turns = db.execute("SELECT * FROM segments WHERE conversation_id = ? "
                       "ORDER BY coalesce(started_at, received_at), seq",
                       (conversation_id,)).fetchall()
    alerts = db.execute("SELECT * FROM alerts WHERE conversation_id = ? ORDER BY id",
                        (conversation_id,)).fetchall()
    events = db.execute("SELECT type, payload, at FROM conversation_events "
                        "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
    return as_transcript(row, turns, alerts, events, json.loads)


def _load_history(db: sqlite3.Connection, q: HistoryQuery) -> History:
    """Three reads in one transaction, so they see the same conversations."""
    db.execute("BEGIN")
    try:
        return _read_history(db, q)
    finally:
        db.execute("COMMIT")


def _read_history(db: sqlite3.Connection, q: HistoryQuery) -> History:
    where, args = ["1"], []
    for clause, value in (("started_at >= ?", q.since), ("started_at < ?", q.until),
                          ("queue = ?", q.queue)):
        if value is not None:
            where.append(clause)
            args.append(value)
    within, more = within_clause(q.within, "queue", "agent_id", _one_of, 0)
    where.append(within)
    args += _lists_as_json(more)
    picked = (f"SELECT id, queue, channel, agent_id, recording, started_at, ended_at "
              f"FROM conversations WHERE {' AND '.join(where)} "
              f"ORDER BY started_at, id LIMIT ?")
    rows = db.execute(picked, [*args, q.limit + 1]).fetchall()
    truncated = len(rows) > q.limit
    conversations = [dict(r) for r in rows[: q.limit]]
    index = {c["id"]: i for i, c in enumerate(conversations)}
    text = ", s.text" if q.with_text else ""
    segments = db.execute(
        f"WITH picked AS ({picked}) SELECT s.conversation_id, s.segment_id, s.role, s.neg, "
        f"s.neu, s.pos, s.compound, s.received_at, s.participant_id{text} FROM picked p "
        f"JOIN segments s ON s.conversation_id = p.id ORDER BY p.started_at, p.id, s.seq",
        [*args, q.limit]).fetchall()
    agents_from: list[float | None] | None = None
    if q.with_agents:
        events = db.execute(
            f"WITH picked AS ({picked}) SELECT e.conversation_id, e.type, e.payload, e.at "
            f"FROM picked p JOIN conversation_events e ON e.conversation_id = p.id "
            f"WHERE e.type IN ('conversation.started', 'bot.handover', "
            f"'conversation.transferred') ORDER BY e.id", [*args, q.limit]).fetchall()
        agents_from = agent_assignments(conversations, index,
                                        ((r[0], r[1], json.loads(r[2]), r[3]) for r in events))
    return History(
        conversations=conversations, group=[index[r[0]] for r in segments],
        segment_ids=[r[1] for r in segments], roles=[r[2] for r in segments],
        participants=[r[8] for r in segments],
        scores=[(r[3], r[4], r[5], r[6]) for r in segments], at=[r[7] for r in segments],
        texts=[r[9] for r in segments] if q.with_text else None, truncated=truncated,
        agents_from=agents_from)



PROGRESS_EVERY = 10_000  # SQLite VM steps between checks of a search's time limit


# The only characters outside ASCII whose lowercase holds an ASCII letter (İ, the Kelvin
# sign): a text without them can hold an ASCII term, case aside, only where LIKE finds it.
_FOLDS_TO_ASCII = ["%\u0130%", "%\u212a%"]


def _holds_all(text: str | None, *terms: str) -> bool:
    """Whether ``text`` holds every (already folded) term once folded."""
    if text is None:
        return False
    text = folded(text)
    return all(term in text for term in terms)


def _search(db: sqlite3.Connection, q: SearchQuery) -> list[dict[str, Any]]:
    where: list[str] = ["s.text IS NOT NULL"]
    args: list[Any] = []
    # SQLite's LIKE folds the case of ASCII letters only, so `holds_all` decides. For
    # ASCII terms LIKE first rules out most turns natively: a Python call on every turn
    # made a search that finds little 2 to 4 times slower.
    ascii_terms = [like_pattern(term) for term in q.terms if term.isascii()]
    if ascii_terms:
        likes = " AND ".join(["s.text LIKE ? ESCAPE '\\'"] * len(ascii_terms))
        where.append(f"(({likes}) OR s.text LIKE ? OR s.text LIKE ?)")
        args += [*ascii_terms, *_FOLDS_TO_ASCII]
    for clause, value in (("s.received_at >= ?", q.since), ("s.received_at < ?", q.until),
                          ("c.queue = ?", q.queue), ("c.agent_id = ?", q.agent_id),
                          ("s.role = ?", q.role)):
        if value is not None:
            where.append(clause)
            args.append(value)
    within, more = within_clause(q.within, "c.queue", "c.agent_id", _one_of, 0)
    where.append(within)
    args += _lists_as_json(more)
    where.append(f"holds_all(s.text, {_marks(len(q.terms))})")
    args += [folded(term) for term in q.terms]
    rows = _limited(db, lambda: db.execute(
        "SELECT s.*, c.queue, c.agent_id, c.channel FROM segments s "
        "JOIN conversations c ON c.id = s.conversation_id "
        f"WHERE {' AND '.join(where)} ORDER BY s.received_at DESC, s.seq DESC, "
        f"s.conversation_id, s.segment_id LIMIT ? OFFSET ?",
        [*args, q.limit, q.offset]).fetchall())
    return [as_hit(r) for r in rows]


def _limited(db: sqlite3.Connection, run: Callable[[], T]) -> T:
    """``run`` stopped with `QueryTimeout` after SEARCH_SECONDS."""
    deadline = time.monotonic() + SEARCH_SECONDS
    db.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_EVERY)
    try:
        return run()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryTimeout from None
        raise
    finally:
        db.set_progress_handler(None, 0)


def _fts_matching(node: Node, args: list[Any]) -> tuple[str, str, str]:
    args.append(ft.fts5_match(node))
    return ("segments_fts JOIN segments s ON s.text_id = segments_fts.rowid",
            "segments_fts MATCH ?", "-bm25(segments_fts)")


_FULLTEXT_SQL = ft.Dialect(mark=lambda n: "?", one_of=_one_of, position="instr", collate="",
                           matching=_fts_matching)


def _search_turns(db: sqlite3.Connection, q: FullTextQuery) -> list[dict[str, Any]]:
    sql, args = ft.turns(q, _FULLTEXT_SQL)
    rows = _limited(db, lambda: db.execute(sql, _lists_as_json(args)).fetchall())
    return [as_hit(r) | {"rank": r["rank"], "key": ft.turn_key(r, q.sort)} for r in rows]


def _read_only(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                         check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


def _exported(db: sqlite3.Connection, q: FullTextQuery, mode: str,
              rows: list[Any]) -> list[dict[str, Any]]:
    if mode == "turns" or not rows:
        return [as_hit(r) for r in rows]
    found = [as_meta(r, json.loads) for r in rows]
    sql, args = ft.matches(q, [c["id"] for c in found], _FULLTEXT_SQL)
    ft.attach_matches(found, db.execute(sql, _lists_as_json(args)).fetchall())
    return found


def _search_conversations(db: sqlite3.Connection,
                          q: FullTextQuery) -> list[dict[str, Any]]:
    def run() -> list[dict[str, Any]]:
        sql, args = ft.conversations(q, _FULLTEXT_SQL)
        found = [as_meta(r, json.loads) | {"key": [r["started_at"], r["id"]]}
                 for r in db.execute(sql, _lists_as_json(args))]
        if found:
            sql, args = ft.matches(q, [c["id"] for c in found], _FULLTEXT_SQL)
            ft.attach_matches(found, db.execute(sql, _lists_as_json(args)).fetchall())
        return found

    return _limited(db, run)


def backup(database: Path, target: Path) -> None:
    """Copy a SQLite database to ``target`` (created 0600) while the service runs: SQLite's
    online backup copies a consistent snapshot, between the writer's commits."""
    if target.exists():
        raise FileExistsError(f"{target} exists; back up to a new file")
    _create_private(target)
    try:
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy, pages=1024)  # a step at a time: the writer goes on
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise sqlite3.DatabaseError(f"the backup does not check out: {check}")
            finally:
                copy.close()
        finally:
            source.close()
    except BaseException:
        target.unlink(missing_ok=True)  # no half copy left to mistake for a backup
        raise


# Each rule id of alert x (a legacy alert, without a document: its one rule_id).
_EACH_RULE = ("JOIN json_each(CASE WHEN x.document IS NULL THEN json_array(x.rule_id) "
              "ELSE json_extract(x.document, '$.rule_ids') END) r")


def _aggregate(db: sqlite3.Connection, q: AggregateQuery) -> Facts:
    """The three reads in one transaction (they see the same conversations), stopped
    after SEARCH_SECONDS in all, as a search is."""
    picked, args = ag.picked(q, lambda n: "?", _one_of)
    args = _lists_as_json(args)
    deadline = time.monotonic() + SEARCH_SECONDS
    db.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_EVERY)
    try:
        db.execute("BEGIN")
        rows = db.execute(ag.conversations(picked), args).fetchall()
        if len(rows) > q.limit:
            return Facts(truncated=True)
        alerts = db.execute(ag.alerts(picked), args).fetchall()
        rules = db.execute(ag.rules(picked, _EACH_RULE), args).fetchall()
        return ag.facts(rows, alerts, rules)
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryTimeout from None
        raise
    finally:
        db.set_progress_handler(None, 0)  # (first: ending the transaction is never stopped)
        if db.in_transaction:
            db.execute("COMMIT")
