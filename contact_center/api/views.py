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


class Alert(Closed):
    id: str
    conversation_id: str
    rule_id: str
    rule_version: int
    rule_name: str
    kind: str = Field(description="The rule's kind, e.g. sentiment, keyword, signal.")
    severity: Severity
    reason: str
    raised_at: float = Field(description="Unix time.")
    agent_id: str | None
    queue: str
    evidence: dict[str, Any] = Field(description="Why it fired; see docs/protocol.md.")
    status: str = Field(description="open (the only state until the alert lifecycle "
                                    "arrives).")


class Alerts(Closed):
    alerts: list[Alert] = Field(description="Newest first.")


# -- live views ---------------------------------------------------------------------------


class LiveCustomer(Closed):
    id: str | None
    name: str | None


class LiveParticipant(Closed):
    id: str
    role: Role
    name: str | None


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
    partial: int


class LiveSummary(Closed):
    """A conversation as supervisors see it live (also each `conversation.updated`)."""

    id: str
    channel: Channel
    queue: str
    agent_id: str | None
    status: Literal["live", "ended"]
    recording: RecordingPolicy
    started_at: float
    ended_at: float | None
    customer: LiveCustomer
    participants: list[LiveParticipant]
    sentiment: LiveSentiment
    counts: Counts
    transfers: int
    customer_waiting_seconds: float | None = Field(
        description="Since the customer's oldest unanswered message; null: nobody waits.")
    alerts: int
    escalated: bool


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


class Transcript(Closed):
    """A recorded conversation: its metadata, every turn in spoken order, its alerts and
    events."""

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
    turns: list[Turn]
    alerts: list[Alert]
    events: list[StoredEvent]


class SearchHit(Turn):
    """One matching turn, with its conversation's queue, agent and channel."""

    conversation_id: str
    queue: str
    agent_id: str | None
    channel: Channel


class SearchResults(Closed):
    terms: list[str] = Field(description="The terms q was split into.")
    hits: list[SearchHit]


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
