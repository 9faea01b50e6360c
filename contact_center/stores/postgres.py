"""The scale-out store: PostgreSQL through asyncpg and a connection pool.

Same tables and semantics as the SQLite store; a pipeline batch is one transaction
(pipelined ``executemany``). The schema is versioned (`MIGRATIONS`) and applied by
`migrate`, which `open` runs too; migrations only ever add.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import asyncpg

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
    Fenced,
    FullTextQuery,
    HistoryQuery,
    PartitionClaim,
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

# The stored customer's id and folded e-mail (contact_center/stores/forgetting.py), indexed.
_CUSTOMER_ID = "customer->>'id'"
_CUSTOMER_EMAIL = "lower((customer->>'email') COLLATE \"C\")"  # (ASCII letters, as SQLite)

# Each entry upgrades the schema by one version; never edit a shipped one, add another.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id text COLLATE "C" PRIMARY KEY,
        channel text NOT NULL,
        queue text NOT NULL,
        agent_id text,
        customer json NOT NULL,
        recording text NOT NULL,
        attributes json NOT NULL,
        status text NOT NULL,
        started_at double precision NOT NULL,
        ended_at double precision,
        state json NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX conversations_live ON conversations (id) WHERE status = 'live';
    CREATE INDEX conversations_started ON conversations (started_at, id);
    CREATE TABLE segments (
        conversation_id text COLLATE "C" NOT NULL,
        segment_id text COLLATE "C" NOT NULL,
        seq integer NOT NULL,
        role text NOT NULL,
        participant_id text NOT NULL,
        text text,
        neg double precision NOT NULL, neu double precision NOT NULL,
        pos double precision NOT NULL, compound double precision NOT NULL,
        started_at double precision,
        ended_at double precision,
        received_at double precision NOT NULL,
        late boolean NOT NULL DEFAULT false,
        PRIMARY KEY (conversation_id, segment_id)
    );
    CREATE INDEX segments_seq ON segments (conversation_id, seq);
    CREATE INDEX segments_received ON segments (received_at);
    CREATE TABLE conversation_events (
        id bigserial PRIMARY KEY,
        conversation_id text NOT NULL,
        type text NOT NULL,
        payload json NOT NULL,
        at double precision NOT NULL
    );
    CREATE INDEX events_conversation ON conversation_events (conversation_id);
    CREATE TABLE alerts (
        id text COLLATE "C" PRIMARY KEY,
        conversation_id text NOT NULL,
        rule_id text NOT NULL,
        rule_version integer NOT NULL,
        rule_name text NOT NULL,
        kind text NOT NULL,
        severity text NOT NULL,
        reason text NOT NULL,
        raised_at double precision NOT NULL,
        agent_id text,
        queue text NOT NULL,
        evidence json NOT NULL,
        status text NOT NULL
    );
    CREATE INDEX alerts_conversation ON alerts (conversation_id);
    CREATE INDEX alerts_agent ON alerts (agent_id, id);
    CREATE TABLE settings (key text PRIMARY KEY, value json NOT NULL);
    CREATE TABLE users (
        id text PRIMARY KEY,
        username text COLLATE "C" NOT NULL UNIQUE,
        agent_id text,
        profiles json NOT NULL,
        disabled boolean NOT NULL DEFAULT false,
        created_at double precision NOT NULL
    );
    CREATE TABLE tokens (
        id text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id),
        prefix text NOT NULL UNIQUE,
        digest text NOT NULL,
        label text NOT NULL,
        created_at double precision NOT NULL,
        revoked boolean NOT NULL DEFAULT false
    );
    """,
    """
    ALTER TABLE conversation_events ADD COLUMN event_id text;
    CREATE INDEX events_keyed ON conversation_events (conversation_id)
        WHERE event_id IS NOT NULL;
    """,
    """
    CREATE TABLE partitions (
        partition integer PRIMARY KEY,
        token bigint NOT NULL,
        applied_through text,
        replies json
    );
    """,
    f"""
    ALTER TABLE alerts ADD COLUMN version integer NOT NULL DEFAULT 1,
        ADD COLUMN last_hit_at double precision, ADD COLUMN assignee text,
        ADD COLUMN rule_ids text, ADD COLUMN document json;
    CREATE INDEX alerts_status ON alerts (status, id);
    {RESOLVE_LEGACY_ALERTS};
    CREATE TABLE alert_events (
        id bigserial PRIMARY KEY,
        alert_id text NOT NULL,
        conversation_id text NOT NULL,
        type text NOT NULL,
        at double precision NOT NULL,
        actor text,
        origin text,
        alert json
    );
    CREATE INDEX alert_events_alert ON alert_events (alert_id);
    CREATE TABLE webhooks (
        id text PRIMARY KEY,
        url text NOT NULL,
        events json NOT NULL,
        min_severity text NOT NULL,
        queues json,
        secret text NOT NULL,
        enabled boolean NOT NULL,
        disabled_reason text,
        failing_since double precision,
        after_event_id bigint NOT NULL,
        created_at double precision NOT NULL,
        created_by text
    );
    CREATE TABLE webhook_deliveries (
        id bigserial PRIMARY KEY,
        webhook_id text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_id bigint NOT NULL,
        message_id text NOT NULL,
        type text NOT NULL,
        payload text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL,
        next_attempt_at double precision NOT NULL,
        lease_until double precision,
        last_status integer,
        last_error text,
        created_at double precision NOT NULL,
        delivered_at double precision,
        UNIQUE (webhook_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due
        ON webhook_deliveries (webhook_id, status, next_attempt_at);
    CREATE TABLE webhook_cursor (
        id integer PRIMARY KEY CHECK (id = 1),
        through bigint NOT NULL
    );
    """,
    """
    CREATE TABLE teams (
        id text COLLATE "C" PRIMARY KEY,
        name text NOT NULL,
        parent text REFERENCES teams (id)
    );
    CREATE TABLE agents (
        id text COLLATE "C" PRIMARY KEY,
        name text NOT NULL,
        team text NOT NULL REFERENCES teams (id)
    );
    CREATE TABLE access_version (
        id integer PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL
    );
    INSERT INTO access_version VALUES (1, 0);
    ALTER TABLE users ADD COLUMN scope json;  -- {"teams", "queues"}; NULL: everything
    """,
    """
    CREATE TABLE security_profiles (
        name text COLLATE "C" PRIMARY KEY,
        permissions json NOT NULL,
        description text NOT NULL DEFAULT '',
        created_at double precision NOT NULL,
        created_by text,
        updated_at double precision NOT NULL
    );
    CREATE UNIQUE INDEX security_profiles_folded ON security_profiles (lower(name));
    """,
    f"""
    CREATE TABLE audit_log (
        id bigint PRIMARY KEY,
        at double precision NOT NULL,
        actor text,
        action text NOT NULL,
        target_type text,
        target_id text,
        result text NOT NULL,
        source text,
        request_id text,
        details json NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX audit_log_actor ON audit_log (actor, id);
    CREATE INDEX audit_log_action ON audit_log (action, id);
    CREATE INDEX audit_log_target ON audit_log (target_type, target_id, id);
    CREATE INDEX audit_log_at ON audit_log (at);
    CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{au.REFUSED}: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$;
    -- Per statement: refused even when no row matches.
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();
    """,
    # The full-text index (contact_center/stores/fulltext.py): the words SQLite's FTS5
    # reads, every run of what is neither a letter nor a digit made a space.
    """
    ALTER TABLE segments ADD COLUMN text_search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
                    regexp_replace(coalesce(text, ''), '[^[:alnum:]]+', ' ', 'g'))) STORED;
    CREATE INDEX segments_text_search ON segments USING gin (text_search);
    """,
    # Retention and erasure (contact_center/stores/forgetting.py).
    f"""
    ALTER TABLE conversations ADD COLUMN words_removed_at double precision;
    CREATE INDEX conversations_words_kept ON conversations (ended_at, id)
        WHERE status = 'ended' AND words_removed_at IS NULL;
    CREATE INDEX conversations_customer_id ON conversations (({_CUSTOMER_ID}));
    CREATE INDEX conversations_customer_email ON conversations (({_CUSTOMER_EMAIL}));
    CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
    """,
    # Passwords, browser sessions, socket tickets (contact_center/stores/sessions.py).
    """
    ALTER TABLE users ADD COLUMN password_hash text;  -- Argon2id; NULL: none
    CREATE TABLE sessions (
        digest text PRIMARY KEY,
        user_id text NOT NULL REFERENCES users (id),
        created_at double precision NOT NULL,
        seen_at double precision NOT NULL
    );
    CREATE INDEX sessions_user ON sessions (user_id);
    CREATE TABLE socket_tickets (
        digest text PRIMARY KEY,
        session_digest text NOT NULL,
        expires_at double precision NOT NULL
    );
    """,
]
IDLE_IN_TRANSACTION_MS = 5000
CLAIM_WAIT_MS = 2000
_MIGRATION_LOCK = 7_303_001  # advisory lock id: one migrator at a time
_PIPELINE_LOCK = 7_303_002  # advisory lock id: one pipeline per database
# Advisory lock id, held from numbering alert events to commit: their ids are then in
# commit order, so a reader that saw id n has seen every id below it.
_ALERT_EVENTS_LOCK = 7_303_003
# advisory lock id: changes to teams, agents, scopes, users' profiles and custom profiles,
# one by one
_ACCESS_LOCK = 7_303_004
_ALERT_UPSERT = (
    f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, len(ALERT_COLUMNS) + 1))}) ON CONFLICT (id) DO "
    f"UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in ALERT_COLUMNS[2:])} "
    "WHERE excluded.version >= alerts.version")
_KEPT_AFTER = "alert_events_kept_after"  # settings key: see AlertEvents.kept_after
# Advisory lock id, held from reading the newest audit entry to commit: appends from every
# API node make one chain.
_AUDIT_LOCK = 7_303_005


async def migrate(connection: asyncpg.Connection) -> tuple[int, int]:
    """Bring the schema to the latest version; returns (before, after)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        before = await connection.fetchval("SELECT max(version) FROM schema_version") or 0
        if before > len(MIGRATIONS):
            raise RuntimeError(f"the database's schema is at version {before}, newer than "
                               f"this contact-center knows ({len(MIGRATIONS)}); upgrade it")
        for version, sql in enumerate(MIGRATIONS[before:], before + 1):
            await connection.execute(sql)
            await connection.execute("INSERT INTO schema_version VALUES ($1)", version)
    return before, len(MIGRATIONS)


async def _init(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(name, encoder=codec.dumps, decoder=codec.loads,
                                        schema="pg_catalog")


async def _released(connection: asyncpg.Connection) -> None:
    """What a connection needs going back to the pool: nothing more than asyncpg's own
    (an open transaction rolled back). Everything this store runs on a pooled connection
    ends with its transaction (``SET LOCAL``, transaction-level advisory locks, cursors);
    a session lock holds a connection of its own. So no ``RESET ALL``, ``UNLISTEN *``
    and ``pg_advisory_unlock_all()``: one round trip fewer for every use of the pool."""


_CONVERSATION_UPSERT = """
INSERT INTO conversations (id, channel, queue, agent_id, customer, recording, attributes,
                           status, started_at, ended_at, state, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    queue = excluded.queue, agent_id = excluded.agent_id, status = excluded.status,
    ended_at = excluded.ended_at, state = excluded.state, updated_at = excluded.updated_at
"""
_SEGMENT_INSERT = """
INSERT INTO segments (conversation_id, segment_id, seq, role, participant_id, text,
                      neg, neu, pos, compound, started_at, ended_at, received_at, late)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT DO NOTHING
"""


class PostgresStore:
    def __init__(self, dsn: str, min_size: int = 2, max_size: int = 10,
                 schema: str | None = None) -> None:
        """``schema``: keep the tables in this schema (created if missing) instead of the
        user's default, e.g. to run several deployments or test runs in one database."""
        self.dsn = dsn
        self._sizes = (min_size, max_size)
        self.schema = schema
        self._pool: asyncpg.Pool | None = None
        self._pipeline_lock: asyncpg.Connection | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def open(self) -> None:
        # A process frozen inside a transaction (a GC pause, a stopped VM) would hold its
        # row locks, and with them a new owner's partition claim, for as long as it
        # sleeps: PostgreSQL ends such a session instead.
        settings = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)}
        if self.schema is not None:
            quoted = '"' + self.schema.replace('"', '""') + '"'
            connection = await asyncpg.connect(self.dsn)
            try:
                async with connection.transaction():  # concurrent opens: one creates it
                    await connection.execute("SELECT pg_advisory_xact_lock($1)",
                                             _MIGRATION_LOCK)
                    await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            finally:
                await connection.close()
            settings["search_path"] = quoted
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=self._sizes[0], max_size=self._sizes[1], init=_init,
            reset=_released, server_settings=settings)
        async with self.pool.acquire() as connection:
            await migrate(connection)

    async def close(self) -> None:
        if self._pipeline_lock is not None:
            await self._pipeline_lock.close()  # a session lock ends with its session
            self._pipeline_lock = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def claim_pipeline(self) -> None:
        """Hold this database's pipeline lock while open (see `Store.claim_pipeline`)."""
        await self._lock_pipeline(shared=False)

    async def join_workers(self) -> None:
        """Share the pipeline lock with the other scale-out workers while open: they may
        run together, but not beside an embedded service on the same database."""
        await self._lock_pipeline(shared=True)

    async def _lock_pipeline(self, shared: bool) -> None:
        if self._pipeline_lock is not None:
            return
        connection = await asyncpg.connect(self.dsn)
        # Per schema, so deployments (and test runs) sharing a database do not collide.
        key = _PIPELINE_LOCK ^ zlib.crc32((self.schema or "").encode())
        lock = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        if not await connection.fetchval(f"SELECT {lock}($1)", key):
            await connection.close()
            raise RuntimeError(
                "an embedded contact-center service runs its pipeline on this database; "
                "stop it before starting scale-out workers" if shared else
                "another contact-center process runs a pipeline on this database (an "
                "embedded service or scale-out workers); stop it first")
        self._pipeline_lock = connection

    # -- pipeline ---------------------------------------------------------------------

    async def claim_partition(self, partition: int) -> PartitionClaim:
        async with self.pool.acquire() as db, db.transaction():
            # Waits at most this long for a batch in flight (then the take is retried).
            await db.execute(f"SET LOCAL lock_timeout = {CLAIM_WAIT_MS}")
            row = await db.fetchrow(
                "INSERT INTO partitions (partition, token) VALUES ($1, 1) ON CONFLICT "
                "(partition) DO UPDATE SET token = partitions.token + 1 "
                "RETURNING token, applied_through, replies", partition)
        return PartitionClaim(row["token"], row["applied_through"], row["replies"] or {})

    async def live_conversation_ids(self) -> list[str]:
        return [r[0] for r in await self.pool.fetch(
            "SELECT id FROM conversations WHERE status = 'live'")]

    async def write(self, batch: WriteBatch) -> None:
        if not batch:
            return
        async with self.pool.acquire() as db, db.transaction():
            fenced = set()
            # First, in one order (no deadlock between two workers): the row lock orders
            # this batch before a new claim.
            for mark in sorted(batch.marks, key=lambda m: m.partition):
                status = await db.execute(
                    "UPDATE partitions SET applied_through = coalesce($3, applied_through), "
                    "replies = CASE WHEN $3::text IS NULL THEN replies ELSE $4 END "
                    "WHERE partition = $1 AND token = $2",
                    mark.partition, mark.token, mark.applied_through, mark.replies)
                if status == "UPDATE 0":
                    fenced.add(mark.partition)
            if fenced:
                raise Fenced(fenced)
            if batch.conversations:
                await db.executemany(_CONVERSATION_UPSERT, [
                    (m["id"], m["channel"], m["queue"], m["agent_id"], m["customer"],
                     m["recording"], m["attributes"], m["status"], m["started_at"],
                     m["ended_at"], state, m["updated_at"])
                    for m, state in batch.conversations.values()])
            if batch.segments:
                await db.executemany(_SEGMENT_INSERT, [
                    (s.conversation_id, s.segment_id, s.seq, s.role, s.participant_id, s.text,
                     s.scores["neg"], s.scores["neu"], s.scores["pos"], s.scores["compound"],
                     s.started_at, s.ended_at, s.received_at, s.late)
                    for s in batch.segments])
            if batch.events:
                await db.executemany(
                    "INSERT INTO conversation_events (conversation_id, type, payload, at, "
                    "event_id) VALUES ($1, $2, $3, $4, $5)",
                    [(e.conversation_id, e.type, e.payload, e.at, e.event_id)
                     for e in batch.events])
            if batch.alerts:
                await db.executemany(_ALERT_UPSERT, [alert_values(a, _as_is)
                                                     for a in batch.alerts.values()])
            await _add_alert_events(db, batch.alert_events)  # last: it holds a lock

    async def load_conversations(
        self, ids: Collection[str] | None = None
    ) -> list[StoredConversation]:
        async with self.pool.acquire() as db:
            if ids is None:
                rows = await db.fetch("SELECT * FROM conversations WHERE status = 'live'")
            else:
                rows = await db.fetch("SELECT * FROM conversations WHERE id = ANY($1)",
                                      list(ids))
            loaded = {r["id"]: StoredConversation(as_meta(r, _as_is), r["state"], set(), [])
                      for r in rows}
            if not loaded:
                return []
            for r in await db.fetch("SELECT conversation_id, segment_id FROM segments "
                                    "WHERE conversation_id = ANY($1)", list(loaded)):
                loaded[r[0]].applied.add(r[1])
            for r in await db.fetch("SELECT conversation_id, event_id FROM conversation_events "
                                    "WHERE conversation_id = ANY($1) AND event_id IS NOT NULL",
                                    list(loaded)):
                loaded[r[0]].applied.add(event_key(r[1]))
            live = [cid for cid, c in loaded.items() if c.meta["status"] == "live"]
            recent = await db.fetch(
                "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY conversation_id "
                "ORDER BY seq DESC) AS newest FROM segments WHERE conversation_id = ANY($1) "
                "AND text IS NOT NULL) s WHERE newest <= $2 ORDER BY conversation_id, seq",
                live, RECENT_LIMIT)
            for r in recent:
                loaded[r["conversation_id"]].recent.append(as_turn(r))
            for r in await db.fetch(
                    "SELECT DISTINCT ON (conversation_id) * FROM alerts WHERE conversation_id "
                    "= ANY($1) ORDER BY conversation_id, id COLLATE \"C\" DESC", live):
                loaded[r["conversation_id"]].alert = as_alert(r, _as_is)
        return list(loaded.values())

    # -- rules ------------------------------------------------------------------------

    async def load_rules(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = await self.pool.fetchval(
            "SELECT value FROM settings WHERE key = 'rules'")
        return value

    async def save_rules(self, document: dict[str, Any]) -> None:
        await self.pool.execute(
            "INSERT INTO settings (key, value) VALUES ('rules', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", document)

    # -- users and tokens ---------------------------------------------------------------

    async def create_user(self, user: User, check: ProfileCheck | None = None) -> None:
        # Under the access lock, as deleting a profile: never a user holding a deleted one.
        async with self._changing_access() as db:
            await _check_profiles(db, user.profiles, [], check)
            await db.execute(
                "INSERT INTO users (id, username, agent_id, profiles, disabled, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)", user.id, user.username, user.agent_id,
                user.profiles, user.disabled, user.created_at)

    async def get_user(self, *, user_id: str | None = None,
                       username: str | None = None) -> User | None:
        column, value = ("id", user_id) if user_id is not None else ("username", username)
        row = await self.pool.fetchrow(f"SELECT * FROM users WHERE {column} = $1", value)
        return None if row is None else as_user(row, _as_is)

    async def list_users(self) -> list[User]:
        users = await self.pool.fetch("SELECT * FROM users ORDER BY username")
        return [as_user(r, _as_is) for r in users]

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        async with self._changing_access() as db:
            return await _changed(db, "UPDATE users SET disabled = $1 WHERE username = $2",
                                  disabled, username)

    async def add_token(self, token: Token) -> None:
        await self.pool.execute(
            "INSERT INTO tokens (id, user_id, prefix, digest, label, created_at, revoked) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)", token.id, token.user_id, token.prefix,
            token.digest, token.label, token.created_at, token.revoked)

    async def find_token(self, prefix: str) -> Token | None:
        row = await self.pool.fetchrow("SELECT * FROM tokens WHERE prefix = $1", prefix)
        return None if row is None else as_token(row)

    async def list_tokens(self, user_id: str) -> list[Token]:
        return [as_token(r) for r in await self.pool.fetch(
            "SELECT * FROM tokens WHERE user_id = $1 ORDER BY created_at", user_id)]

    async def revoke_token(self, token_id: str) -> bool:
        async with self._changing_access() as db:
            return await _changed(
                db, "UPDATE tokens SET revoked = true WHERE id = $1 AND NOT revoked", token_id)

    # -- passwords, sessions, socket tickets (contact_center.stores.sessions) -----------

    async def password_hash(self, user_id: str) -> str | None:
        found: str | None = await self.pool.fetchval(wh.numbered(se.PASSWORD), user_id)
        return found

    async def set_password(self, username: str, password_hash: str) -> bool:
        async with self._changing_access() as db:
            await db.execute(wh.numbered(se.END_USERS_SESSIONS), username)
            return await _changed(db, wh.numbered(se.SET_PASSWORD), password_hash, username)

    async def add_session(self, session: Session) -> None:
        await self.pool.execute(wh.numbered(se.ADD), session.digest, session.user_id,
                                session.created_at, session.seen_at)

    async def find_session(self, digest: str) -> Session | None:
        row = await self.pool.fetchrow(wh.numbered(se.FIND), digest)
        return None if row is None else se.as_session(row)

    async def touch_session(self, digest: str, at: float) -> None:
        await self.pool.execute(wh.numbered(se.TOUCH), at, digest, at)

    async def end_session(self, digest: str) -> bool:
        async with self._changing_access() as db:
            return await _changed(db, wh.numbered(se.END), digest)

    async def prune_sessions(self, seen_before: float, created_before: float) -> int:
        return _count(await self.pool.execute(wh.numbered(se.PRUNE), seen_before,
                                              created_before))

    async def add_ticket(self, ticket: Ticket) -> None:
        async with self.pool.acquire() as db, db.transaction():
            await db.execute(wh.numbered(se.PRUNE_TICKETS),
                             ticket.expires_at - TICKET_SECONDS)
            await db.execute(wh.numbered(se.ADD_TICKET), ticket.digest,
                             ticket.session_digest, ticket.expires_at)

    async def take_ticket(self, digest: str, now: float) -> str | None:
        found: str | None = await self.pool.fetchval(wh.numbered(se.TAKE_TICKET), digest, now)
        return found

    async def set_profiles(self, username: str, profiles: list[str],
                           check: ProfileCheck | None = None) -> bool:
        async with self._changing_access() as db:
            held = await db.fetchval(wh.numbered(pr.USERS_PROFILES), username)
            if held is None:
                return False
            await _check_profiles(db, profiles, held, check)
            return await _changed(db, wh.numbered(pr.SET_PROFILES), profiles, username)

    # -- custom security profiles (contact_center.stores.profiles) ----------------------

    async def list_profiles(self, names: Collection[str] | None = None
                            ) -> list[SecurityProfile]:
        return await _profiles(self.pool, names)

    async def get_profile(self, name: str) -> SecurityProfile | None:
        row = await self.pool.fetchrow(wh.numbered(pr.GET), name)
        return None if row is None else pr.as_profile(row, _as_is)

    async def create_profile(self, profile: SecurityProfile) -> None:
        async with self._changing_access() as db:
            if not await _changed(db, wh.numbered(pr.CREATE), *pr.values(profile, _as_is)):
                raise ProfileExists(f"a profile named {profile.name!r} exists (names are "
                                    "compared case aside)")

    async def update_profile(self, name: str, change: Callable[[SecurityProfile],
                                                               SecurityProfile]
                             ) -> SecurityProfile | None:
        async with self._changing_access() as db:
            row = await db.fetchrow(wh.numbered(pr.GET), name)
            if row is None:
                return None
            changed = change(pr.as_profile(row, _as_is))
            await _changed(db, wh.numbered(pr.UPDATE), *pr.changes(changed, _as_is))
            return changed

    async def delete_profile(self, name: str) -> bool:
        async with self._changing_access() as db:
            held = await db.fetch(wh.numbered(pr.holders(
                "json_array_elements_text(u.profiles) AS e(value)", MAX_HOLDERS_NAMED)), name)
            if held:
                raise ProfileInUse(name, [r[0] for r in held], held[0][1])
            return await _changed(db, wh.numbered(pr.DELETE), name)

    # -- teams, agents, scopes (contact_center.stores.directory) ----------------------------

    async def access_version(self) -> int:
        return int(await self.pool.fetchval(directory.VERSION))

    async def load_directory(self) -> Directory:
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read",
                                                             readonly=True):
            return await _directory(db)

    async def save_team(self, team: Team, create: bool) -> bool:
        async with self._changing_access() as db:
            if not (await _directory(db)).check_team(team, create):
                return False
            await db.execute(wh.numbered(directory.PUT_TEAM), team.id, team.name, team.parent)
            await db.execute(directory.BUMP)
            return True

    async def delete_team(self, team_id: str) -> bool:
        async with self._changing_access() as db:
            scopes = directory.scopes(await db.fetch(directory.SCOPES), _as_is)
            if not (await _directory(db)).check_removal(team_id, scopes):
                return False
            await db.execute(wh.numbered(directory.DELETE_TEAM), team_id)
            await db.execute(directory.BUMP)
            return True

    async def put_agent(self, agent: Agent) -> bool:
        async with self._changing_access() as db:
            known = await _directory(db)
            known.check_teams_exist([agent.team])
            await db.execute(wh.numbered(directory.PUT_AGENT), agent.id, agent.name, agent.team)
            await db.execute(directory.BUMP)
            return agent.id not in known.agents

    async def set_scope(self, username: str, scope: Scope) -> bool:
        async with self._changing_access() as db:
            (await _directory(db)).check_teams_exist(scope.teams or ())
            return await _changed(db, wh.numbered(directory.SET_SCOPE), scope.as_json(), username)

    @contextlib.asynccontextmanager
    async def _changing_access(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction changing who may do what, one at a time (`_changed` counts it in
        the access version)."""
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", _ACCESS_LOCK)
            yield db

    # -- analyst --------------------------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as db:
            row = await db.fetchrow("SELECT * FROM conversations WHERE id = $1",
                                    conversation_id)
            if row is None:
                return None
            turns = await db.fetch("SELECT * FROM segments WHERE conversation_id = $1 "
                                   "ORDER BY coalesce(started_at, received_at), seq",
                                   conversation_id)
            alerts = await db.fetch("SELECT * FROM alerts WHERE conversation_id = $1 "
                                    "ORDER BY id", conversation_id)
            events = await db.fetch("SELECT type, payload, at FROM conversation_events "
                                    "WHERE conversation_id = $1 ORDER BY id", conversation_id)
        return as_transcript(row, turns, alerts, events, _as_is)

    async def list_alerts(self, query: AlertQuery) -> list[dict[str, Any]]:
        where, args = alert_filters(query, lambda n: f"${n}", "strpos", _one_of)
        rows = await self.pool.fetch(f"SELECT * FROM alerts WHERE {where} ORDER BY id DESC "
                                     f"LIMIT ${len(args) + 1}", *args, query.limit)
        return [as_alert(r, _as_is) for r in rows]

    async def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
        return None if row is None else as_alert(row, _as_is)

    async def alert_history(self, alert_id: str) -> list[dict[str, Any]]:
        return [as_alert_change(r) for r in await self.pool.fetch(
            "SELECT id, type, at, actor, origin FROM alert_events WHERE alert_id = $1 "
            "ORDER BY id LIMIT $2", alert_id, HISTORY_LIMIT)]

    async def change_ended_alert(self, alert_id: str, change: AlertChange, by: str,
                                 origin: str | None, now: float) -> AlertEventRow | None:
        async with self.pool.acquire() as db, db.transaction():
            row = await db.fetchrow(
                "SELECT a.*, c.status AS conversation_status, NOT EXISTS (SELECT 1 FROM "
                "alerts b WHERE b.conversation_id = a.conversation_id AND b.id > a.id) AS "
                "latest FROM alerts a LEFT JOIN conversations c ON c.id = a.conversation_id "
                "WHERE a.id = $1 FOR UPDATE OF a", alert_id)
            if row is None:
                raise LookupError(alert_id)
            if row["conversation_status"] == "live":
                return None
            alert = as_alert(row, _as_is)
            event = AlertEventRow(alert, change(alert, row["latest"]), now, by, origin)
            await db.execute(_ALERT_UPSERT, *alert_values(alert, _as_is))
            await _add_alert_events(db, [event])
        return event

    async def alert_events_after(self, after: int, limit: int) -> AlertEvents:
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read",
                                                             readonly=True):
            kept = await db.fetchval("SELECT value FROM settings WHERE key = $1", _KEPT_AFTER)
            rows = await db.fetch("SELECT id, type, alert FROM alert_events WHERE id > $1 "
                                  "AND alert IS NOT NULL ORDER BY id LIMIT $2", after, limit)
        return AlertEvents([as_alert_event(r, _as_is) for r in rows], int(kept or 0))

    async def newest_alert_event(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM alert_events"))

    # -- webhooks ---------------------------------------------------------------------

    async def add_webhook(self, hook: dict[str, Any]) -> dict[str, Any]:
        async with self.pool.acquire() as db, db.transaction():
            # Numbering alert events waits for this: none falls between read and add.
            await db.execute("SELECT pg_advisory_xact_lock($1)", _ALERT_EVENTS_LOCK)
            stored = hook | {"after_event_id": await db.fetchval(wh.NEWEST_EVENT)}
            await db.execute(wh.numbered(wh.ADD_WEBHOOK), *wh.webhook_values(stored, _as_is))
        return stored

    async def list_webhooks(self) -> list[dict[str, Any]]:
        return [wh.as_webhook(r, _as_is) for r in await self.pool.fetch(
            "SELECT * FROM webhooks ORDER BY created_at, id")]

    async def get_webhook(self, webhook_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM webhooks WHERE id = $1", webhook_id)
        return None if row is None else wh.as_webhook(row, _as_is)

    async def update_webhook(self, webhook_id: str,
                             changes: dict[str, Any]) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(wh.numbered(wh.update_webhook(changes)),
                                       *changes.values(), webhook_id)
        return None if row is None else wh.as_webhook(row, _as_is)

    async def delete_webhook(self, webhook_id: str) -> bool:
        return _count(await self.pool.execute("DELETE FROM webhooks WHERE id = $1",
                                              webhook_id)) > 0

    async def webhooks_fanned_out(self) -> int:
        return int(await self.pool.fetchval(wh.FANNED_OUT))

    async def add_deliveries(self, deliveries: list[tuple[Any, ...]],
                             through: int) -> list[dict[str, Any]]:
        added = []
        async with self.pool.acquire() as db, db.transaction():
            insert = wh.numbered(wh.ADD_DELIVERY)
            for d in deliveries:
                row = await db.fetchrow(insert, *d)
                if row is not None:
                    added.append(wh.as_delivery(row))
            await db.execute(wh.numbered(wh.ADVANCE), through)
        return added

    async def claim_deliveries(self, webhook_id: str, now: float, lease_until: float,
                               limit: int) -> list[dict[str, Any]]:
        return [wh.as_delivery(r) for r in await self.pool.fetch(
            wh.numbered(wh.CLAIM.format(lock="FOR UPDATE SKIP LOCKED")),
            lease_until, webhook_id, now, now, limit)]

    async def settle_deliveries(self, outcomes: list[DeliveryOutcome]) -> set[str]:
        disabled = set()
        async with self.pool.acquire() as db, db.transaction():
            for outcome in outcomes:
                for sql, args in wh.settling(outcome):
                    row = await db.fetchrow(wh.numbered(sql), *args)
                reason = wh.disabling(outcome, row)
                if reason is not None:
                    await db.execute(wh.numbered(wh.DISABLE), False, reason,
                                     outcome.webhook_id)
                    disabled.add(outcome.webhook_id)
        return disabled

    async def list_deliveries(self, webhook_id: str, status: str | None,
                              before: int | None, limit: int) -> list[dict[str, Any]]:
        sql, args = wh.list_deliveries(status, before)
        return [wh.as_delivery(r) for r in await self.pool.fetch(
            wh.numbered(sql), webhook_id, *args, limit)]

    async def redeliver(self, webhook_id: str, delivery_id: int,
                        now: float) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(wh.numbered(wh.REDELIVER), now, webhook_id,
                                       delivery_id, now)
        return None if row is None else wh.as_delivery(row)

    async def release_delivery_leases(self) -> None:
        await self.pool.execute(wh.RELEASE)

    async def prune_alert_events(self, before: float) -> int:
        async with self.pool.acquire() as db, db.transaction():
            newest = await db.fetchval("SELECT max(id) FROM alert_events WHERE at < $1 AND "
                                       "alert IS NOT NULL", before)
            if newest is None:
                return 0
            status = await db.execute("UPDATE alert_events SET alert = NULL WHERE id <= $1 "
                                      "AND alert IS NOT NULL", newest)
            await db.execute("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT "
                             "(key) DO UPDATE SET value = excluded.value", _KEPT_AFTER, newest)
        return _count(status)

    # -- audit log --------------------------------------------------------------------

    async def append_audit(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        if not entries:
            return []
        async with self.pool.acquire() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
            newest = await db.fetchrow(au.NEWEST)  # (after the lock: the committed newest)
            linked = link(entries, *(tuple(newest) if newest else (0, GENESIS)))
            await db.executemany(wh.numbered(au.INSERT),
                                 [au.values(e, _as_is) for e in linked])
        return linked

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        sql, args = au.listing(query)
        return [au.as_entry(r, _as_is) for r in await self.pool.fetch(wh.numbered(sql),
                                                                       *args)]

    async def audit_chain(self, after: int, limit: int) -> list[AuditEntry]:
        return [au.as_entry(r, _as_is) for r in await self.pool.fetch(
            wh.numbered(au.CHAIN), after, limit)]

    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        where, args = ["s.text IS NOT NULL"], list[Any]()
        for term in query.terms:  # ILIKE lowercases each character, as `folded` does
            args.append(like_pattern(term))
            where.append(f"s.text ILIKE ${len(args)}")
        for clause, value in (("s.received_at >= {}", query.since),
                              ("s.received_at < {}", query.until),
                              ("c.queue = {}", query.queue), ("c.agent_id = {}", query.agent_id),
                              ("s.role = {}", query.role)):
            if value is not None:
                args.append(value)
                where.append(clause.format(f"${len(args)}"))
        within, more = within_clause(query.within, "c.queue", "c.agent_id", _one_of,
                                     len(args) + 1)
        where.append(within)
        args += more
        rows = await self._limited(
            "SELECT s.*, c.queue, c.agent_id, c.channel FROM segments s "
            "JOIN conversations c ON c.id = s.conversation_id "
            f"WHERE {' AND '.join(where)} ORDER BY s.received_at DESC, s.seq DESC, "
            # Ties in code point order, as SQLite orders them, whatever the database's
            # collation.
            's.conversation_id COLLATE "C", s.segment_id COLLATE "C" '
            f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            [*args, query.limit, query.offset])
        return [as_hit(r) for r in rows]

    async def search_turns(self, query: FullTextQuery) -> list[dict[str, Any]]:
        rows = await self._limited(*ft.turns(query, _FULLTEXT_SQL))
        return [as_hit(r) | {"rank": r["rank"], "key": ft.turn_key(r, query.sort)}
                for r in rows]

    async def search_conversations(self, query: FullTextQuery) -> list[dict[str, Any]]:
        found = [as_meta(r, _as_is) | {"key": [r["started_at"], r["id"]]}
                 for r in await self._limited(*ft.conversations(query, _FULLTEXT_SQL))]
        if found:
            ft.attach_matches(found, await self._limited(
                *ft.matches(query, [c["id"] for c in found], _FULLTEXT_SQL)))
        return found

    async def count_found(self, query: FullTextQuery, mode: str) -> int:
        [row] = await self._limited(*ft.found(query, _FULLTEXT_SQL, mode, "count"))
        return int(row["n"])

    async def export_found(self, query: FullTextQuery,
                           mode: str) -> AsyncIterator[list[dict[str, Any]]]:
        sql, args = ft.found(query, _FULLTEXT_SQL, mode, "all")
        # A server-side cursor in one read-only snapshot: a page per FETCH, each with the
        # search's time limit.
        deadline = time.monotonic() + EXPORT_SECONDS
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read",
                                                             readonly=True):
            # Idle while the client reads a page: allowed up to the export's own limit.
            await db.execute(f"SET LOCAL statement_timeout = {_search_ms()}; "
                             "SET LOCAL idle_in_transaction_session_timeout = "
                             f"{int(EXPORT_SECONDS * 1000)}")
            try:
                rows = await db.cursor(sql, *args)
                while page := await rows.fetch(ft.EXPORT_PAGE):
                    if mode == "turns":
                        yield [as_hit(r) for r in page]
                    else:
                        found = [as_meta(r, _as_is) for r in page]
                        ft.attach_matches(found, await db.fetch(*_args_flat(
                            ft.matches(query, [c["id"] for c in found], _FULLTEXT_SQL))))
                        yield found
                    if time.monotonic() > deadline:
                        raise QueryTimeout
            except asyncpg.QueryCanceledError:
                raise QueryTimeout from None

    async def _limited(self, sql: str, args: list[Any]) -> list[asyncpg.Record]:
        """An analyst's query, stopped with `QueryTimeout` after SEARCH_SECONDS."""
        async with self.pool.acquire() as db, db.transaction():
            await db.execute(f"SET LOCAL statement_timeout = {_search_ms()}")
            try:
                return await db.fetch(sql, *args)
            except asyncpg.QueryCanceledError:
                raise QueryTimeout from None

    async def load_history(self, query: HistoryQuery) -> History:
        where, args = _where((("queue", query.queue),), ranges=(
            ("started_at >=", query.since), ("started_at <", query.until)))
        within, more = within_clause(query.within, "queue", "agent_id", _one_of,
                                     len(args) + 1)
        where, args = f"{where} AND {within}", [*args, *more]
        picked = (f"SELECT id, queue, channel, agent_id, recording, started_at, ended_at "
                  f"FROM conversations WHERE {where} ORDER BY started_at, id "
                  f"LIMIT ${len(args) + 1}")
        text = ", s.text" if query.with_text else ""
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read",
                                                             readonly=True):
            rows = await db.fetch(picked, *args, query.limit + 1)
            conversations = [dict(r) for r in rows[: query.limit]]
            index = {c["id"]: i for i, c in enumerate(conversations)}
            segments = await db.fetch(
                f"WITH picked AS ({picked}) SELECT s.conversation_id, s.segment_id, s.role, "
                f"s.neg, s.neu, s.pos, s.compound, s.received_at, s.participant_id{text} "
                f"FROM picked p JOIN segments s ON s.conversation_id = p.id "
                f"ORDER BY p.started_at, p.id, s.seq", *args, query.limit)
            agents_from = None
            if query.with_agents:
                events = await db.fetch(
                    f"WITH picked AS ({picked}) SELECT e.conversation_id, e.type, e.payload, "
                    f"e.at FROM picked p JOIN conversation_events e ON "
                    f"e.conversation_id = p.id WHERE e.type IN ('conversation.started', "
                    f"'bot.handover', 'conversation.transferred') ORDER BY e.id",
                    *args, query.limit)
                agents_from = agent_assignments(conversations, index,
                                                (tuple(r) for r in events))
        return History(
            conversations=conversations, group=[index[r[0]] for r in segments],
            segment_ids=[r[1] for r in segments], roles=[r[2] for r in segments],
            participants=[r[8] for r in segments],
            scores=[(r[3], r[4], r[5], r[6]) for r in segments], at=[r[7] for r in segments],
            texts=[r[9] for r in segments] if query.with_text else None,
            truncated=len(rows) > query.limit, agents_from=agents_from)

    async def aggregate(self, query: AggregateQuery) -> Facts:
        """The three reads in one snapshot, stopped after SEARCH_SECONDS in all (each
        statement gets the time left), as a search is."""
        picked, args = ag.picked(query, lambda n: f"${n}", _one_of)
        deadline = time.monotonic() + SEARCH_SECONDS
        fetched: list[list[asyncpg.Record]] = []
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read",
                                                             readonly=True):
            for sql in (ag.conversations(picked), ag.alerts(picked),
                        ag.rules(picked, _EACH_RULE)):
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms < 1:  # (and 0 would mean no limit)
                    raise QueryTimeout
                await db.execute(f"SET LOCAL statement_timeout = {left_ms}")
                try:
                    fetched.append(await db.fetch(sql, *args))
                except asyncpg.QueryCanceledError:
                    raise QueryTimeout from None
                if len(fetched[0]) > query.limit:
                    return Facts(truncated=True)
        # Rows to columns is a loop per row: off the event loop, as SQLite's is.
        return await asyncio.to_thread(ag.facts, *fetched)


    # -- retention and erasure (contact_center.stores.forgetting) -----------------------

    async def remove_words(self, due: list[Due], now: float, limit: int) -> Removed:
        if not due:
            return Removed()
        sql, args = fo.picking_due(due, _in_list, limit, " FOR UPDATE SKIP LOCKED")
        async with self.pool.acquire() as db, db.transaction():
            removed = Removed([r[0] for r in await db.fetch(wh.numbered(sql), *args)])
            if not removed.conversations:
                return removed
            chosen = removed.conversations
            for rewrite in _FORGETTING.rewrites:
                changes = fo.rewritten(rewrite, await db.fetch(rewrite.select, chosen),
                                       _as_is, _as_is)
                if changes:
                    await db.executemany(rewrite.update, changes)
                fo.count(removed, rewrite.counted, len(changes))
            removed.turns = _count(await db.execute(_FORGETTING.clear_turns, chosen))
            await db.execute(_FORGETTING.mark, now, chosen)
        return removed

    async def customer_conversations(self, customer: CustomerKey) -> list[tuple[str, str]]:
        sql, args = fo.customer_match(customer, f"({_CUSTOMER_ID})", _CUSTOMER_EMAIL)
        return [(r[0], r[1]) for r in await self.pool.fetch(wh.numbered(sql), *args)]

    async def erase_conversations(self, ids: list[str]) -> Removed:
        async with self.pool.acquire() as db, db.transaction():
            erased = Removed([r[0] for r in await db.fetch(_FORGETTING.ended, ids)])
            for counted, sql in _FORGETTING.erasing:
                fo.count(erased, counted, _count(await db.execute(sql, erased.conversations)))
        return erased


def _in_list(column: str) -> str:
    return f"{column} = ANY(?::text[])"


_FORGETTING = fo.statements(_in_list, wh.numbered, " FOR UPDATE")


async def _add_alert_events(db: asyncpg.Connection, events: list[AlertEventRow]) -> None:
    """Numbered under a lock held to commit (see _ALERT_EVENTS_LOCK)."""
    if not events:
        return
    await db.execute("SELECT pg_advisory_xact_lock($1)", _ALERT_EVENTS_LOCK)
    for e in events:
        e.event_id = await db.fetchval(
            "INSERT INTO alert_events (alert_id, conversation_id, type, at, actor, origin, "
            "alert) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            e.alert["id"], e.conversation_id, e.type, e.at, e.by, e.origin, e.alert)


def _search_ms() -> int:
    """An analyst's statement's time limit (0 would mean none)."""
    return max(1, int(SEARCH_SECONDS * 1000))


def _one_of(column: str, n: int) -> str:
    return f"{column} = ANY(${n}::text[])"


def _tsquery_matching(node: Node, args: list[Any]) -> tuple[str, str, str]:
    found = ft.tsquery(node, args, lambda n: f"${n}")
    return ("segments s", f"s.text_search @@ {found}",
            f"ts_rank_cd(s.text_search, {found})::float8")


_FULLTEXT_SQL = ft.Dialect(mark=lambda n: f"${n}", one_of=_one_of, position="strpos",
                           collate=' COLLATE "C"', matching=_tsquery_matching)


async def _directory(db: asyncpg.Connection) -> Directory:
    return directory.directory(await db.fetch(directory.TEAMS), await db.fetch(directory.AGENTS),
                               int(await db.fetchval(directory.VERSION)))


async def _profiles(db: asyncpg.Connection | asyncpg.Pool,
                    names: Collection[str] | None) -> list[SecurityProfile]:
    rows = await (db.fetch(pr.LIST) if names is None else
                  db.fetch(pr.named(_one_of), sorted(names)))
    return [pr.as_profile(r, _as_is) for r in rows]


async def _check_profiles(db: asyncpg.Connection, profiles: list[str], held: list[str],
                          check: ProfileCheck | None) -> None:
    """Inside a transaction under the access lock: every profile is known (and ``check``
    passes)."""
    named = custom_names(profiles)
    stored: dict[str, frozenset[Permission]] = pr.permissions_by_name(
        await _profiles(db, named)) if named else {}
    check_known(profiles, stored)
    if check is not None:
        check(held, stored)


async def _changed(db: asyncpg.Connection, sql: str, *args: Any) -> bool:
    """Run a change to who may do what; count it in the access version if it changed a
    row. Whether it did."""
    if _count(await db.execute(sql, *args)) == 0:
        return False
    await db.execute(directory.BUMP)
    return True


def _as_is(value: Any) -> Any:
    """JSON columns arrive decoded (the pool's type codec)."""
    return value


def _where(equal: tuple[tuple[str, Any], ...],
           ranges: tuple[tuple[str, Any], ...] = ()) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = $n`` (and ``column op $n``) for the values given."""
    clauses, args = ["true"], []
    for column, value in equal:
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    for prefix, value in ranges:
        if value is not None:
            args.append(value)
            clauses.append(f"{prefix} ${len(args)}")
    return " AND ".join(clauses), args


def _count(status: str) -> int:
    """Rows affected, from a command status such as 'UPDATE 1'."""
    return int(status.rsplit(" ", 1)[-1])


# Each rule id of alert x (a legacy alert, without a document: its one rule_id).
_EACH_RULE = ("CROSS JOIN LATERAL json_array_elements_text(CASE WHEN x.document IS NULL "
              "THEN json_build_array(x.rule_id) ELSE x.document -> 'rule_ids' END) AS r(value)")


def _args_flat(query: tuple[str, Sequence[Any]]) -> list[Any]:
    """``(sql, args)`` as ``fetch``'s arguments."""
    return [query[0], *query[1]]
