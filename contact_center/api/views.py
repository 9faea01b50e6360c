"""What the read routes answer (their response models): stored turns and alerts, the live
views, recorded conversations and search hits. The shapes are built as plain dicts
(`stores.rows`, `Conversation.summary`, `monitoring.metrics`); FastAPI checks each answer
against these, and the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from analytics.rules import Severity
from contact_center.api.openapi import Closed
from contact_center.protocol import Channel, RecordingPolicy, Role


class Scores(Closed):
    """VADER's sentiment scores of one turn."""

    neg: float
    neu: float
    pos: float
    compound: float = Field(description="-1 (most negative) to 1 (most positive).")


class Turn(Closed):
    """One recorded final segment."""

    type: Literal["segment"] = "segment"
    seq: int = Field(description="Arrival order within the conversation, from 1.")
    segment_id: str
    role: Role
    participant_id: str
    text: str | None = Field(description="null where the recording policy did not keep "
                                         "this role's words.")
    recorded: bool
    final: Literal[True] = True
    scores: Scores
    started_at: float | None = Field(description="As the connector gave it (Unix time).")
    ended_at: float | None
    at: float = Field(description="When the service received it (Unix time).")
    late: bool = Field(description="Arrived after a turn that started later.")


class Hit(Closed):
    """One rule firing on the conversation."""

    rule_id: str
    rule_version: int
    rule_name: str
    kind: str = Field(description="The rule's kind, e.g. sentiment, keyword, signal.")
    severity: Severity
    reason: str
    raised_at: float = Field(description="Unix time.")
    evidence: dict[str, Any] = Field(description="Why it fired; see docs/alerts.md. Words "
                                                 "of roles not recorded are left out.")


AlertStatus = Literal["open", "acknowledged", "resolved"]


class Alert(Closed):
    """One alert per conversation in trouble; see docs/alerts.md."""

    id: str = Field(description="Sortable by when it was raised.")
    conversation_id: str
    agent_id: str | None = Field(description="The conversation's agent (it follows "
                                             "transfers while the alert is unresolved).")
    queue: str
    status: AlertStatus
    severity: Severity = Field(description="The highest of its hits'.")
    version: int = Field(description="Grows with every change; a person's change names the "
                                     "version it was made against.")
    state_version: int = Field(description="The version of its last change of status, "
                                           "severity or assignee: a change made against an "
                                           "older version is answered 409 "
                                           "version_conflict.")
    first_raised_at: float
    last_hit_at: float
    hits: list[Hit] = Field(description="The first, then the newest (20 at most).")
    hit_count: int = Field(description="Every hit, kept or not.")
    rule_ids: list[str] = Field(description="Every rule that hit it, in the order they "
                                            "first did.")
    acknowledged_at: float | None
    acknowledged_by: str | None
    assignee: str | None
    assigned_at: float | None
    assigned_by: str | None
    resolved_at: float | None
    resolved_by: str | None = Field(description="null when resolved automatically.")
    resolution: Literal["manual", "conversation_ended", "recovered"] | None
    note: str | None = Field(description="The resolution's note.")
    notified_at: float = Field(description="When it last notified (raised, escalated, "
                                           "re-notified, reopened).")
    notifications: int
    # The lead hit (the first at the alert's severity), as alerts of one rule showed it.
    rule_id: str
    rule_version: int
    rule_name: str
    kind: str
    reason: str
    raised_at: float = Field(description="= first_raised_at.")
    evidence: dict[str, Any]


class Alerts(Closed):
    alerts: list[Alert] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null "
                                                "on the last.")


class AlertChange(Closed):
    """One event of an alert's history."""

    event_id: int
    type: str
    at: float
    by: str | None = Field(description="The user; null for the pipeline's own changes.")
    from_: str | None = Field(alias="from", description="The client address of the "
                                                        "request.")


class AlertWithHistory(Alert):
    history: list[AlertChange] = Field(description="Oldest first.")


# -- live views ---------------------------------------------------------------------------


class LiveCustomer(Closed):
    id: str | None
    name: str | None


class LiveParticipant(Closed):
    id: str
    role: Role
    name: str | None
    joined_at: float | None = Field(default=None, description="A supervisor who barged "
                                                              "in: when.")


class LastScores(Closed):
    role: Role
    scores: Scores
    at: float


class LiveSentiment(Closed):
    window: float | None = Field(description="Mean compound score of the customer's recent "
                                             "turns (the rolling window).")
    ewma: float | None
    start: float | None = Field(description="The customer's first turn's compound score.")
    change: float | None = Field(description="window minus start.")
    last: dict[str, LastScores] = Field(description="Per participant id: their last turn's "
                                                    "scores.")


class Counts(Closed):
    customer: int
    agent: int
    bot: int
    supervisor: int = 0
    partial: int


class Monitor(Closed):
    """A supervisor monitoring a live conversation."""

    username: str
    since: float = Field(description="Since when (Unix time): their first monitor socket "
                                     "on it, or their barging in.")
    mode: Literal["listening", "barged"] = Field(description=(
        "listening: a monitor socket open, silent; barged: a participant, whose words "
        "the customer gets."))


class Monitors(Closed):
    conversation_id: str
    monitors: list[Monitor] = Field(description="Earliest first.")


class Supervised(Closed):
    """A supervisor's act applied to a conversation (committed)."""

    conversation_id: str
    status: Literal["accepted", "duplicate"] = Field(description=(
        "duplicate: already done (a retry, or already barged in); nothing happened "
        "twice."))


class Whispered(Supervised):
    whisper_id: str = Field(description="The whisper's id, in its messages and the "
                                        "transcript's events.")


class Barged(Supervised):
    participant: LiveParticipant


class SupervisorTurn(Supervised):
    segment_id: str = Field(description="The turn's id (`supervisor.` then 24 hex digits).")
    scores: Scores | None = Field(description="Its sentiment scores; null for a duplicate.")


class AlertBrief(Closed):
    id: str
    status: AlertStatus
    severity: Severity
    version: int


class LiveSummary(Closed):
    """A conversation as supervisors see it live (also each `conversation.updated`)."""

    id: str
    channel: Channel
    queue: str
    agent_id: str | None
    status: Literal["live", "ended"]
    recording: RecordingPolicy
    recording_paused: bool = Field(description=(
        "The connector paused recording (`recording.paused`): the words said until it "
        "resumes are kept nowhere."))
    recording_partials: bool = Field(description=(
        "Its partial (interim) hypotheses are kept too, as `segment.partial` events, where "
        "the policy keeps their role's words."))
    started_at: float
    ended_at: float | None
    customer: LiveCustomer
    participants: list[LiveParticipant]
    sentiment: LiveSentiment
    counts: Counts
    transfers: int
    customer_waiting_seconds: float | None = Field(
        description="Since the customer's oldest unanswered message; null: nobody waits.")
    alerts: int = Field(description="Alerts raised on it so far.")
    escalated: bool = Field(description="Whether any alert was raised on it.")
    alert: AlertBrief | None = Field(description="Its newest alert; null: none yet.")
    monitors: list[Monitor] = Field(default_factory=list, description=(
        "Who monitors it (REST and snapshots; the live board is told of changes with "
        "`monitors.updated`)."))


class LiveConversations(Closed):
    conversations: list[LiveSummary] = Field(description="Worst rolling customer sentiment "
                                                         "first.")


class AgentMetrics(Closed):
    agent_id: str | None = Field(description="null: conversations without an agent.")
    conversations: int
    open_alerts: int
    escalated_conversations: int
    average_customer_sentiment: float | None


class LiveAgents(Closed):
    agents: list[AgentMetrics]


# -- recorded conversations -------------------------------------------------------------------


class StoredCustomer(Closed):
    id: str | None
    name: str | None
    email: str | None


class StoredEvent(BaseModel):
    """A stored event: its type, when it was applied, and its fields as the connector sent
    them (which vary by type, hence open)."""

    model_config = ConfigDict(extra="allow")

    type: str
    at: float = Field(description="When it was applied (Unix time).")


class ConversationRecord(Closed):
    """A recorded conversation's metadata, as it is now (after any transfer)."""

    id: str
    channel: Channel
    queue: str
    agent_id: str | None
    customer: StoredCustomer
    recording: RecordingPolicy
    attributes: dict[str, str]
    status: Literal["live", "ended"]
    started_at: float
    ended_at: float | None


class TimelinePoint(Closed):
    """The customer's sentiment after one of their turns."""

    seq: int
    at: float
    compound: float = Field(description="This turn's score.")
    window: float = Field(description="The moving mean the rules read (`CC_ROLLING_WINDOW`).")
    ewma: float = Field(description="The EWMA the rules read (`CC_EWMA_ALPHA`).")


class MonitoringSession(Closed):
    """A supervisor's silent monitoring of the conversation, from the audit log."""

    username: str | None
    started_at: float
    ended_at: float | None = Field(description="null while open (or never recorded).")
    seconds: float | None


class Transcript(ConversationRecord):
    """A recorded conversation: its metadata, every turn in spoken order, its alerts with
    their history, its events (transfers among them), who monitored it and the customer's
    sentiment timeline."""

    words_removed_at: float | None = Field(description=(
        "When retention removed its words (Unix time): every turn's text is null, alert "
        "evidence and event texts are empty, the customer's name and e-mail are null; "
        "scores, times and alerts stay. null: its words are kept."))
    turns: list[Turn]
    alerts: list[AlertWithHistory] = Field(description="Each with its first changes "
                                                       "(at most 1,000), oldest first.")
    events: list[StoredEvent]
    monitors: list[MonitoringSession] = Field(description=(
        "Who monitored it, oldest first (the newest 100 sessions)."))
    timeline: list[TimelinePoint] = Field(description="One point per customer turn, in "
                                                      "arrival order.")


class SearchHit(Turn):
    """One matching turn, with its conversation's queue, agent and channel."""

    conversation_id: str
    queue: str
    agent_id: str | None
    channel: Channel


class SearchResults(Closed):
    terms: list[str] = Field(description="The terms q was split into.")
    hits: list[SearchHit]


Span = tuple[int, int]


class Snippet(Closed):
    text: str = Field(description="At most about 160 characters of the turn around its "
                                  "first highlight, cut where words end, '…' where cut.")
    highlights: list[Span] = Field(description="[start, end) offsets into this text.")


class Highlighted(Closed):
    highlights: list[Span] = Field(description=(
        "Where the query's terms are in `text` (not the excluded ones): sorted, "
        "non-overlapping [start, end) character offsets (code points)."))
    snippet: Snippet


class FoundTurn(SearchHit, Highlighted):
    """A turn holding the query."""

    rank: float = Field(description=(
        "Relevance, higher is better; compare it within one search only (BM25 on "
        "SQLite, ts_rank_cd on PostgreSQL)."))


class TurnsFound(Closed):
    hits: list[FoundTurn]
    next: str | None = Field(description="The cursor of the next page; null on the last.")


class MatchedTurn(Turn, Highlighted):
    """One of a found conversation's turns holding a term of the query."""


class FoundConversation(ConversationRecord):
    """A conversation whose turns, together, hold the query."""

    matched_turns: int = Field(description="How many of its turns hold a term.")
    matches: list[MatchedTurn] = Field(description="The first three of them, in order.")


class ConversationsFound(Closed):
    conversations: list[FoundConversation]
    next: str | None = Field(description="The cursor of the next page; null on the last.")


class Health(BaseModel):
    """What /healthz and /readyz answer (200 when ``ok``, else 503). Fields marked
    scale-out are there on an API node; the pipeline's counts where this process runs
    one (embedded, or a node with ``--worker``)."""

    status: Literal["ok", "degraded", "pipeline stopped"]
    version: str
    dependencies: dict[str, Literal["ok", "unavailable"]] = Field(
        description="database, and (scale-out) redis: whether each answered within 2 s.")
    queue_depth: int = Field(description="Events accepted and not yet answered.")
    live_conversations: int | None = None
    events_processed: int | None = None
    batches_committed: int | None = None
    workers: int | None = Field(default=None, description="Scale-out: workers alive.")
    partitions: int | None = Field(default=None, description="Scale-out.")
    partitions_unowned: int | None = Field(default=None, description="Scale-out.")
    partitions_held: list[int] | None = Field(
        default=None, description="Scale-out, with --worker: this node's worker's.")


class Liveness(BaseModel):
    status: Literal["ok", "pipeline stopped"]


class Distribution(Closed):
    """Values of one figure in a row: how many there are, their mean and nearest-rank
    percentiles (the ⌈p·n/100⌉-th smallest; always one of the values); null when none."""

    n: int = Field(description="How many values (conversations or alerts that have one).")
    mean: float | None
    p50: float | None = Field(description="The median, nearest-rank.")
    p90: float | None = Field(description="The 90th percentile, nearest-rank.")


class AggregateRow(Closed):
    """One (group, bucket): see docs/analytics.md#aggregates for each field's definition."""

    group: str | None = Field(description="The queue, agent or team; null: no agent (agent), "
                                          "no agent or one without a team (team), or "
                                          "group_by=none.")
    bucket: float | None = Field(description="The bucket's start (Unix time, UTC); null "
                                             "without an interval.")
    conversations: int = Field(description="Conversations started in it.")
    first_customer_compound: Distribution = Field(
        description="The compound score of each conversation's first customer turn.")
    last_customer_compound: Distribution = Field(
        description="... of its last customer turn.")
    customer_compound_change: Distribution = Field(description="last minus first, per "
                                                               "conversation.")
    customer_turns: int = Field(description="Customer turns in its conversations.")
    customer_compound_mean: float | None = Field(
        description="The mean compound score of all those customer turns; null: none.")
    escalated: int = Field(description="Conversations with at least one alert.")
    escalated_share: float = Field(description="escalated / conversations.")
    alerts: int = Field(description="Alerts on its conversations.")
    alerts_by_rule: dict[str, int] = Field(description="Per rule id: the alerts that have "
                                                       "a hit of that rule.")
    time_to_acknowledge: Distribution = Field(
        description="Seconds from each alert's first raise to its first acknowledgement "
                    "(alerts never acknowledged are left out).")
    first_response: Distribution = Field(
        description="Seconds from each conversation's first customer turn to the first "
                    "agent turn received after it (conversations without one left out).")
    handle_time: Distribution = Field(description="ended_at - started_at, seconds, of each "
                                                  "ended conversation.")


class ConversationAggregates(Closed):
    group_by: Literal["queue", "agent", "team", "none"]
    interval: Literal["hour", "day", "week"] | None
    conversations: int = Field(description="Conversations aggregated, in all rows.")
    rows: list[AggregateRow] = Field(description="Groups in code point order (null last), "
                                                 "then buckets oldest first; only those "
                                                 "with conversations.")


class Erasure(Closed):
    """What an erasure deleted."""

    conversations: list[str] = Field(description="The customer's conversations erased.")
    turns: int
    alerts: int
    alert_events: int
    events: int = Field(description="Conversation events.")
    webhook_deliveries: int
