"""Stores, side by side: the protocol (what the pipeline, the live views and the analyst
need to persist) here; `sqlite.SQLiteStore`, the embedded implementation, and
`postgres.PostgresStore`, the scale-out one, beside it; both pass the same tests.
`open_store` picks one from the ``--db`` / ``CC_DATABASE`` value: a ``postgresql://``
URL or a SQLite path. Only PostgreSQL is a `PartitionedStore`, the one several workers
can share.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from analytics.aggregates import Facts, GroupBy
from analytics.fulltext import Node
from analytics.history import History
from monitoring.alert_stream import AlertEvents as AlertEvents
from monitoring.audit import AuditEntry
from monitoring.credentials import Token, User
from monitoring.profiles import ProfileCheck, SecurityProfile
from monitoring.retention import Due
from monitoring.scope import Agent, Directory, Scope, Team, Within
from monitoring.sessions import Session, Ticket


@dataclass(slots=True)
class SegmentRow:
    conversation_id: str
    segment_id: str
    seq: int
    role: str
    participant_id: str
    text: str | None  # None when the recording policy does not keep this role's words
    scores: dict[str, float]
    started_at: float | None
    ended_at: float | None
    received_at: float
    late: bool = False


@dataclass(slots=True)
class EventRow:
    conversation_id: str
    type: str
    payload: dict[str, Any]
    at: float
    event_id: str | None = None  # the connector's idempotency key, if it gave one


@dataclass(slots=True, eq=False)
class AlertEventRow:
    """One change of an alert (`monitoring.alerts`), with who made it and from where;
    the store numbers it (``event_id``) as it commits, in commit order."""

    alert: dict[str, Any]  # the whole alert after the change (a snapshot)
    type: str
    at: float
    by: str | None = None  # a username; None: the pipeline itself
    origin: str | None = None  # the client address of the request that made it
    message: dict[str, Any] | None = None  # the pushed event, its event_id filled in
    event_id: int | None = None

    @property
    def conversation_id(self) -> str:
        return str(self.alert["conversation_id"])


@dataclass(slots=True)
class PartitionMark:
    """A scale-out worker's claim on a partition, checked in the batch's transaction:
    the batch commits only while ``token`` is the partition's newest (a worker that lost
    its lease is fenced out), and records how far the partition's stream is applied."""

    partition: int
    token: int
    applied_through: str | None = None  # "<stream epoch>/<entry id>", None: unchanged
    # The replies to the batch's entries (entry id -> reply), kept with the position, so
    # an entry delivered again gets the answer it got (or would have got) the first time.
    replies: dict[str, Any] | None = None


HISTORY_LIMIT = 1000  # an alert's history: its first changes, at most this many
SEARCH_SECONDS = 5.0  # a transcript search that runs longer is stopped
# An export that runs longer is stopped (its snapshot held no longer); each of its pages
# has SEARCH_SECONDS.
EXPORT_SECONDS = 300.0


class QueryTimeout(Exception):
    """A search ran past SEARCH_SECONDS and was stopped."""


class Fenced(Exception):
    """A newer owner claimed these partitions; the batch was not committed."""

    def __init__(self, partitions: set[int]) -> None:
        super().__init__(f"partitions {sorted(partitions)} were claimed by another worker")
        self.partitions = partitions


@dataclass(slots=True)
class PartitionClaim:
    token: int
    applied_through: str | None
    replies: dict[str, Any]  # to the entries of the batch that ends at applied_through


@dataclass(slots=True)
class WriteBatch:
    """Everything one pipeline batch changes, committed in one transaction."""

    conversations: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    segments: list[SegmentRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> newest state
    alert_events: list[AlertEventRow] = field(default_factory=list)
    marks: list[PartitionMark] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.conversations or self.segments or self.events or self.alerts
                    or self.marks)

    def drop(self, conversation_ids: set[str]) -> None:
        """Remove everything these conversations would have written."""
        for cid in conversation_ids:
            self.conversations.pop(cid, None)
        self.segments = [s for s in self.segments if s.conversation_id not in conversation_ids]
        self.events = [e for e in self.events if e.conversation_id not in conversation_ids]
        self.alerts = {k: a for k, a in self.alerts.items()
                       if a["conversation_id"] not in conversation_ids}
        self.alert_events = [e for e in self.alert_events
                             if e.conversation_id not in conversation_ids]


@dataclass(slots=True)
class StoredConversation:
    meta: dict[str, Any]
    state: dict[str, Any]
    applied: set[str]  # idempotency keys: segment ids, and event_key() of keyed events
    recent: list[dict[str, Any]]  # recorded transcript entries, for a monitor's catch-up
    alert: dict[str, Any] | None = None  # its newest alert (live conversations)


def event_key(event_id: str) -> str:
    """An event's idempotency key beside segment ids ('#' is never in an id)."""
    return "#" + event_id


@dataclass(slots=True)
class SearchQuery:
    terms: list[str]
    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent_id: str | None = None
    role: str | None = None
    limit: int = 50
    offset: int = 0
    within: Within | None = None  # None: everything


Range = tuple[float | None, float | None]  # (at least, at most); None: no bound


@dataclass(slots=True)
class FullTextFilters:
    """Conditions on a conversation, as it is now (after any transfer)."""

    queue: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    team: Within | None = None  # the agents of a team and its subteams
    # The customer's sentiment: "mean" of their turns, "start", "end", "change".
    sentiment: dict[str, Range] = field(default_factory=dict)
    handle_seconds: Range = (None, None)  # ended conversations: ended_at - started_at
    escalated: bool | None = None  # raised an alert (or none)
    rule_id: str | None = None  # an alert of theirs has a hit of this rule
    alert_status: str | None = None  # an alert of theirs is in this status
    within: Within | None = None  # the user's scope; None: everything


@dataclass(slots=True)
class FullTextQuery:
    """A full-text search (`analytics.fulltext`): turns, or conversations."""

    query: Node
    filters: FullTextFilters = field(default_factory=FullTextFilters)
    since: float | None = None  # turns: received at or after; conversations: started
    until: float | None = None  # ... before
    role: str | None = None  # only turns of this role match
    sort: str = "relevance"  # turns: "relevance" or "newest"; conversations: newest
    after: list[Any] | None = None  # the sort key of the last row of the previous page
    limit: int = 50


@dataclass(slots=True)
class AlertQuery:
    """Alerts newest first, filtered; ``before``: the cursor (an alert id)."""

    status: str | None = None
    severity: str | None = None
    rule_id: str | None = None  # any of its hits
    queue: str | None = None
    agent_id: str | None = None
    assignee: str | None = None
    conversation_id: str | None = None
    since: float | None = None  # first raised at or after
    until: float | None = None  # ... before
    before: str | None = None
    limit: int = 100
    within: Within | None = None  # None: everything


@dataclass(slots=True)
class AuditQuery:
    """Audit entries newest first, filtered; ``before``: the cursor (an entry id)."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: float | None = None  # at or after
    until: float | None = None  # ... before
    before: int | None = None
    result: str | None = None  # e.g. "ok"
    limit: int = 100


@dataclass(slots=True)
class DeliveryOutcome:
    """How one try of a webhook delivery went."""

    delivery_id: int
    webhook_id: str
    at: float
    status: int | None  # the HTTP status, None if no answer came
    error: str | None  # None: delivered
    retry_at: float | None  # when to try again; None after an error: given up
    disable_after: float  # an endpoint failing for this long (seconds) is disabled


AlertChange = Callable[[dict[str, Any], bool], str]
"""Applies a person's change to an alert (given whether it is its conversation's newest);
returns the event type or raises `monitoring.alerts.TransitionError`."""


@dataclass(slots=True)
class HistoryQuery:
    """Recorded conversations for a backtest: started in [since, until), in a queue."""

    since: float | None = None
    until: float | None = None
    queue: str | None = None
    with_text: bool = False
    with_agents: bool = False  # when each conversation got a human agent
    limit: int = 10_000  # conversations, oldest first
    within: Within | None = None  # None: everything


@dataclass(slots=True)
class AggregateQuery:
    """Recorded conversations to aggregate (`analytics.aggregates`): started in [since,
    until), filtered, each in its group (``group_by``)."""

    group_by: GroupBy = "queue"
    since: float | None = None
    until: float | None = None
    queue: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    limit: int = 1_000_000  # conversations at most; more: `Facts.truncated`
    within: Within | None = None  # None: everything


@dataclass(slots=True)
class Removed:
    """What retention or erasure removed: the conversations, and the rows of theirs it
    changed (retention) or deleted (erasure)."""

    conversations: list[str] = field(default_factory=list)
    turns: int = 0
    alerts: int = 0
    alert_events: int = 0
    events: int = 0
    webhook_deliveries: int = 0

    def add(self, more: Removed) -> None:
        self.conversations += more.conversations
        self.turns += more.turns
        self.alerts += more.alerts
        self.alert_events += more.alert_events
        self.events += more.events
        self.webhook_deliveries += more.webhook_deliveries

    def counts(self) -> dict[str, int]:
        return {"conversations": len(self.conversations), "turns": self.turns,
                "alerts": self.alerts, "alert_events": self.alert_events,
                "events": self.events, "webhook_deliveries": self.webhook_deliveries}


@dataclass(frozen=True, slots=True)
class CustomerKey:
    """A customer as conversations name them: by id, or by e-mail (ASCII letters' case
    aside, on every store)."""

    id: str | None = None
    email: str | None = None


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        ...
    async def claim_pipeline(self) -> None:
        """Claim the database for this process's pipeline until closed; RuntimeError if
        another process holds it (two pipelines would overwrite each other's state)."""
        ...

    # pipeline
    async def write(self, batch: WriteBatch) -> None: ...
    async def load_conversations(
        self, ids: Collection[str] | None = None
    ) -> list[StoredConversation]:
        """The given conversations (live or ended), or every live one when ids is None."""
        ...

    async def live_conversation_ids(self) -> list[str]: ...

    # rules
    async def load_rules(self) -> dict[str, Any] | None: ...
    async def save_rules(self, document: dict[str, Any]) -> None: ...

    # users and tokens
    async def create_user(self, user: User, check: ProfileCheck | None = None) -> None:
        """Raises `UnknownProfile` (monitoring.profiles) for a profile neither built-in nor
        stored, and what ``check`` raises, both checked in the transaction that adds it."""
        ...
    async def get_user(self, *, user_id: str | None = None,
                       username: str | None = None) -> User | None: ...
    async def list_users(self) -> list[User]: ...
    async def set_disabled(self, username: str, disabled: bool) -> bool: ...
    async def add_token(self, token: Token) -> None: ...
    async def find_token(self, prefix: str) -> Token | None: ...
    async def list_tokens(self, user_id: str) -> list[Token]: ...
    async def revoke_token(self, token_id: str) -> bool: ...
    async def set_profiles(self, username: str, profiles: list[str],
                           check: ProfileCheck | None = None) -> bool:
        """Give a user these profiles (counted in the access version); False if there is
        no such user; raises as `create_user`."""
        ...

    # passwords, browser sessions and socket tickets (contact_center.stores.sessions;
    # what they mean: monitoring.sessions)
    async def password_hash(self, user_id: str) -> str | None:
        """The user's password hash; None: no password (or no such user)."""
        ...
    async def set_password(self, username: str, password_hash: str) -> bool:
        """Set it and end the user's sessions (counted in the access version); False if
        there is no such user."""
        ...
    async def add_session(self, session: Session) -> None: ...
    async def find_session(self, digest: str) -> Session | None: ...
    async def touch_session(self, digest: str, at: float) -> None:
        """Record a use at ``at`` (never moving it back)."""
        ...
    async def end_session(self, digest: str) -> bool:
        """Delete it (counted in the access version); False if there is none."""
        ...
    async def prune_sessions(self, seen_before: float, created_before: float) -> int:
        """Delete the sessions unused since ``seen_before`` or begun before
        ``created_before``; how many."""
        ...
    async def add_ticket(self, ticket: Ticket) -> None:
        """Add it, deleting the tickets expired by the time it was issued."""
        ...
    async def take_ticket(self, digest: str, now: float) -> str | None:
        """Delete the ticket and return its session's digest, if it has not expired at
        ``now``; None otherwise (two takers at once: one gets it)."""
        ...

    # custom security profiles (contact_center.stores.profiles); creating, changing or
    # deleting one adds one to the access version
    async def list_profiles(self, names: Collection[str] | None = None
                            ) -> list[SecurityProfile]:
        """The stored custom profiles by name (of ``names`` only, when given)."""
        ...
    async def get_profile(self, name: str) -> SecurityProfile | None: ...
    async def create_profile(self, profile: SecurityProfile) -> None:
        """Raises `ProfileExists` when a stored profile has the name, case aside."""
        ...
    async def update_profile(self, name: str, change: Callable[[SecurityProfile],
                                                               SecurityProfile]
                             ) -> SecurityProfile | None:
        """Apply ``change`` to the profile as stored and save what it returns (its
        permissions, description and updated_at), in one transaction; None if there is no
        such profile; raises what ``change`` raises (nothing is saved then)."""
        ...
    async def delete_profile(self, name: str) -> bool:
        """False if there is no such profile; raises `ProfileInUse` while a user holds it
        (checked in the transaction that deletes it)."""
        ...

    # teams, the agent directory, scopes (contact_center.stores.directory); each change
    # (and disabling a user, revoking a token) adds one to the access version
    async def access_version(self) -> int: ...
    async def load_directory(self) -> Directory: ...
    async def save_team(self, team: Team, create: bool) -> bool:
        """False when updating a team that does not exist; raises `TeamExists`,
        `TreeError` (monitoring.scope)."""
        ...
    async def delete_team(self, team_id: str) -> bool:
        """False if there is no such team; raises `TreeError`, `TeamInUse`."""
        ...
    async def put_agent(self, agent: Agent) -> bool:
        """Add or change a directory entry; True if added; raises `UnknownTeam`."""
        ...
    async def set_scope(self, username: str, scope: Scope) -> bool:
        """False if there is no such user; raises `UnknownTeam`."""
        ...

    # analyst
    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None: ...
    async def list_alerts(self, query: AlertQuery) -> list[dict[str, Any]]: ...
    async def get_alert(self, alert_id: str) -> dict[str, Any] | None: ...
    async def alert_history(self, alert_id: str) -> list[dict[str, Any]]:
        """Its events, oldest first: event_id, type, at, by, from."""
        ...
    async def change_ended_alert(self, alert_id: str, change: AlertChange, by: str,
                                 origin: str | None, now: float) -> AlertEventRow | None:
        """Change an alert whose conversation has ended (the pipeline no longer touches
        it), committing its event (numbered); None while its conversation is live (the pipeline
        changes it); LookupError if there is no such alert."""
        ...
    async def alert_events_after(self, after: int, limit: int) -> AlertEvents: ...
    async def newest_alert_event(self) -> int:
        """The newest alert event's id (0: none yet)."""
        ...
    # webhooks (contact_center.stores.webhooks)
    async def add_webhook(self, hook: dict[str, Any]) -> dict[str, Any]:
        """Store a new endpoint; it gets the alert events after the newest one now."""
        ...
    async def list_webhooks(self) -> list[dict[str, Any]]: ...
    async def get_webhook(self, webhook_id: str) -> dict[str, Any] | None: ...
    async def update_webhook(self, webhook_id: str,
                             changes: dict[str, Any]) -> dict[str, Any] | None: ...
    async def delete_webhook(self, webhook_id: str) -> bool:
        """With its deliveries."""
        ...
    async def webhooks_fanned_out(self) -> int:
        """The newest alert event whose deliveries were added."""
        ...
    async def add_deliveries(self, deliveries: list[tuple[Any, ...]],
                             through: int) -> list[dict[str, Any]]:
        """Add deliveries (webhook id, event id, message id, type, payload, attempts,
        next attempt at, created at, leased until) once each, and mark the alert events
        through ``through`` fanned out, in one transaction; returns those added (not
        those another node added first)."""
        ...
    async def claim_deliveries(self, webhook_id: str, now: float, lease_until: float,
                               limit: int) -> list[dict[str, Any]]:
        """Due deliveries of an endpoint nobody holds, leased until ``lease_until``."""
        ...
    async def settle_deliveries(self, outcomes: list[DeliveryOutcome]) -> set[str]:
        """Record tries, in one transaction; the endpoints disabled for failing too
        long."""
        ...
    async def list_deliveries(self, webhook_id: str, status: str | None,
                              before: int | None, limit: int) -> list[dict[str, Any]]: ...
    async def redeliver(self, webhook_id: str, delivery_id: int,
                        now: float) -> dict[str, Any] | None:
        """Make a delivery due now, tried afresh; None if there is no such delivery or a
        try holds it now."""
        ...
    async def release_delivery_leases(self) -> None:
        """Free every lease (the embedded service at start: no other process holds one)."""
        ...

    # audit log (contact_center.stores.audit)
    async def append_audit(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        """Number and chain ``entries`` after the newest entry (`monitoring.audit_chain`)
        and add them, in one transaction; appends from any number of processes make one
        chain. Returns them as stored."""
        ...
    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]: ...
    async def audit_chain(self, after: int, limit: int) -> list[AuditEntry]:
        """Entries after id ``after``, in id order (to verify or export the chain)."""
        ...

    async def prune_alert_events(self, before: float) -> int:
        """Forget the alert carried by events older than ``before`` (their who, when and
        from where stay); returns how many."""
        ...
    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        """Stopped with `QueryTimeout` after SEARCH_SECONDS; analyst queries never delay
        the reads supervisors and the pipeline make."""
        ...
    async def search_turns(self, query: FullTextQuery) -> list[dict[str, Any]]:
        """Recorded turns matching ``query``, best first (or newest), each with its
        ``rank`` and ``key`` (the sort key a next page starts after); `QueryTimeout`
        after SEARCH_SECONDS."""
        ...
    async def search_conversations(self, query: FullTextQuery) -> list[dict[str, Any]]:
        """Conversations whose recorded turns together match ``query``, newest first:
        each conversation's metadata, ``matched_turns`` and its first three matching
        turns (``matches``), and ``key``; `QueryTimeout` after SEARCH_SECONDS."""
        ...
    async def count_found(self, query: FullTextQuery, mode: str) -> int:
        """How many turns (``mode`` "turns") or conversations ("conversations") ``query``
        finds; `QueryTimeout` after SEARCH_SECONDS."""
        ...
    def export_found(self, query: FullTextQuery,
                     mode: str) -> AsyncIterator[list[dict[str, Any]]]:
        """Everything ``query`` finds, in its order, from one statement (one snapshot), a
        page of `fulltext.EXPORT_PAGE` rows at a time (conversations with their
        ``matched_turns``): memory does not grow with the rows."""
        ...
    async def load_history(self, query: HistoryQuery) -> History: ...
    async def aggregate(self, query: AggregateQuery) -> Facts:
        """The columns `analytics.aggregates` groups, read in one snapshot; stopped with
        `QueryTimeout` after SEARCH_SECONDS, on the analysts' connection as `search`."""
        ...

    # retention and erasure (contact_center.stores.forgetting)
    async def remove_words(self, due: list[Due], now: float, limit: int) -> Removed:
        """In one transaction, remove the words of at most ``limit`` ended conversations
        ``due`` selects whose words are still there, oldest ended first, and mark them
        (``words_removed_at``); what it changed (no conversation: none was left)."""
        ...
    async def customer_conversations(self, customer: CustomerKey) -> list[tuple[str, str]]:
        """The customer's conversations: (id, status)."""
        ...
    async def erase_conversations(self, ids: list[str]) -> Removed:
        """Delete these conversations, if ended, with everything of theirs, in one
        transaction; what it deleted."""
        ...


class PartitionedStore(Store, Protocol):
    """A store scale-out workers can share (PostgreSQL): partitions claimed with fencing
    tokens, and batches that carry `PartitionMark`s."""

    async def claim_partition(self, partition: int) -> PartitionClaim:
        """Take the next fencing token of ``partition``: every batch marked with an older
        one fails with `Fenced` from now on."""
        ...

    async def join_workers(self) -> None:
        """Take part in the database's pipeline as one of several workers until closed;
        RuntimeError while an embedded service runs its pipeline on it."""
        ...


def is_postgres(database: str) -> bool:
    return database.lower().startswith(("postgresql://", "postgres://"))


def open_store(database: str, sqlite_synchronous: str = "FULL") -> Store:
    """The store for ``database`` (not opened yet); ValueError for a URL of another kind."""
    if "://" in database and not is_postgres(database):
        raise ValueError(f"unsupported database URL scheme in {database.split('://')[0]!r}"
                         "://…; give a SQLite file path or a postgresql:// URL")
    if is_postgres(database):
        from contact_center.stores.postgres import PostgresStore

        return PostgresStore(database)
    from contact_center.stores.sqlite import SQLiteStore

    return SQLiteStore(database, sqlite_synchronous)
