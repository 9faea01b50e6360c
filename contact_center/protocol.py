"""The versioned wire protocol: ingest events, replies and error codes.

The same event models serve the ingest WebSocket and the REST routes; `docs/protocol.md`
documents them with examples.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from analytics.text import has_nul

PROTOCOL_VERSION = "cc.v1"

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@+-]+$")]
# A supervisor speaks in a conversation after barging in (docs/protocol.md#supervision).
Role = Literal["customer", "agent", "bot", "supervisor"]
Channel = Literal["chat", "voice"]
RecordingPolicy = Literal["none", "agent", "customer", "all"]
MAX_TEXT_CHARS = 8000


def _as_utc(value: datetime) -> datetime:
    """Timestamps without a zone are UTC; absurd years are refused, not crashed on."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 1970 <= value.year <= 9998:
        raise ValueError("timestamp must be between 1970 and 9998")
    return value


_NUMBER = re.compile(r"\s*[-+]?[0-9.]+\s*")


def _iso_8601(value: Any) -> Any:
    """Timestamps are ISO 8601 strings: a bare number is ambiguous (seconds or
    milliseconds?) and was once read as milliseconds past ~2e10 without a word. So is a
    number in a string (pydantic reads "1700000000" as Unix time), as a query's is."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("timestamps are ISO 8601 strings, e.g. \"2026-11-26T10:00:00Z\"")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_as_utc)]


MAX_ERROR_DETAILS = 20  # problems listed in an error's details, at most


class ErrorCode(StrEnum):
    """Stable machine-readable error codes; never renamed, only added to."""

    MALFORMED_JSON = "malformed_json"
    VALIDATION_ERROR = "validation_error"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNKNOWN_CONVERSATION = "unknown_conversation"
    CONVERSATION_ENDED = "conversation_ended"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"
    RATE_LIMITED = "rate_limited"
    VERSION_CONFLICT = "version_conflict"
    INVALID_TRANSITION = "invalid_transition"
    NOT_BARGED = "not_barged"
    NO_CONNECTOR = "no_connector"
    NO_AGENT = "no_agent"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="after")
    def _no_nul(self, info: ValidationInfo) -> Model:
        if info.context is _NUL_FREE:  # (see parse_event)
            return self
        for name, value in self.__dict__.items():
            if has_nul(value):
                raise ValueError(f"{name} must not contain NUL characters (\\u0000)")
        return self


class Customer(Model):
    id: Id | None = None
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class ConversationInfo(Model):
    id: Id = Field(default_factory=lambda: uuid.uuid4().hex)
    channel: Channel = "chat"
    queue: Id = "default"
    agent_id: Id | None = None
    customer: Customer = Field(default_factory=Customer)
    recording: RecordingPolicy | None = Field(default=None, description=(
        "Whose words may be kept; absent: the queue's policy (CC_RECORDING_BY_QUEUE), "
        "else CC_RECORDING (default all)."))
    recording_partials: bool | None = Field(default=None, description=(
        "Whether partial (interim) hypotheses are kept too, as `segment.partial` events, "
        "where the policy keeps their role's words; absent: the queue's "
        "(CC_RECORDING_PARTIALS_BY_QUEUE), else CC_RECORDING_PARTIALS (default false)."))
    attributes: dict[Annotated[str, Field(max_length=64)],
                     Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict,
                                                                     max_length=50)


def _type_required(schema: dict[str, Any]) -> None:
    """An event's ``type`` has a default in code, but on the wire it is what tells the
    events apart: the JSON schema requires it."""
    if "type" in schema.get("properties", {}) and "type" not in schema.get("required", []):
        schema["required"] = ["type", *schema.get("required", [])]


class _Event(Model):
    model_config = ConfigDict(json_schema_extra=_type_required)

    ref: str | None = Field(default=None, max_length=128,
                            description="Client correlation id, echoed in the reply.")


class ConversationStarted(_Event):
    type: Literal["conversation.started"] = "conversation.started"
    conversation: ConversationInfo
    started_at: Timestamp | None = None


class SegmentFields(_Event):
    segment_id: Id = Field(description="Unique within the conversation; the idempotency key.")
    role: Role
    participant_id: Id | None = None
    text: str = Field(max_length=MAX_TEXT_CHARS)
    final: bool = Field(default=True, description="False for a partial (interim) hypothesis.")
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None


class _InConversation(_Event):
    conversation_id: Id


class Segment(SegmentFields, _InConversation):
    type: Literal["segment"] = "segment"


class Participant(Model):
    id: Id
    role: Role
    name: str | None = Field(default=None, max_length=200)


class _Keyed(_InConversation):
    event_id: Id | None = Field(
        default=None, description="Idempotency key, unique within the conversation: an "
                                  "event resent with the same event_id is applied once and "
                                  "acknowledged as a duplicate.")


class ParticipantJoined(_Keyed):
    type: Literal["participant.joined"] = "participant.joined"
    participant: Participant


class ParticipantLeft(_Keyed):
    type: Literal["participant.left"] = "participant.left"
    participant_id: Id


class Transferred(_Keyed):
    """Moves the conversation to another agent and/or queue; its live state is kept."""

    type: Literal["conversation.transferred"] = "conversation.transferred"
    to_agent_id: Id | None = None
    to_queue: Id | None = None
    reason: str | None = Field(default=None, max_length=500)


class BotHandover(_Keyed):
    type: Literal["bot.handover"] = "bot.handover"
    agent_id: Id


class RecordingPaused(_Keyed):
    """Nothing said from now on is kept (like Amazon Connect's suspended recording), until
    `recording.resumed`: the words of its turns are neither stored nor put in alerts."""

    type: Literal["recording.paused"] = "recording.paused"
    reason: str | None = Field(default=None, max_length=500)


class RecordingResumed(_Keyed):
    type: Literal["recording.resumed"] = "recording.resumed"


class ConversationEnded(_InConversation):
    type: Literal["conversation.ended"] = "conversation.ended"
    reason: str | None = Field(default=None, max_length=500)


Event = Annotated[
    ConversationStarted | Segment | ParticipantJoined | ParticipantLeft | Transferred
    | BotHandover | RecordingPaused | RecordingResumed | ConversationEnded,
    Field(discriminator="type"),
]
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class AlertCommand(_InConversation):
    """A person's change to an alert (`monitoring.alerts.transition`), made by the alert
    routes and applied by the pipeline in turn with the conversation's events. Internal:
    never accepted from a connector."""

    type: Literal["alert.command"] = "alert.command"
    command_id: str = Field(max_length=300)  # the idempotency key: applied once
    alert_id: Id
    agent_id: Id | None = None  # applied only while the alert is this agent's
    action: Literal["acknowledge", "assign", "resolve", "reopen"]
    version: int
    by: str
    origin: str | None = None
    assignee: str | None = None
    note: str | None = None


SupervisorAction = Literal["whisper", "barge", "say", "leave"]


class SupervisorCommand(_InConversation):
    """A supervisor's act in a conversation (docs/protocol.md#supervision), made by the
    supervision routes and applied by the pipeline in turn with the conversation's
    events. Internal: never accepted from a connector."""

    type: Literal["supervisor.command"] = "supervisor.command"
    command_id: str = Field(max_length=300)  # the idempotency key: applied once
    action: SupervisorAction
    by: str  # the supervisor's username
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)  # whisper, say
    segment_id: str | None = None  # say: the turn's id


Submitted = Annotated[Event | AlertCommand | SupervisorCommand, Field(discriminator="type")]
"""What the bus carries: ingest events, and the API's own commands."""
_submitted_adapter: TypeAdapter[Submitted] = TypeAdapter(Submitted)


def parse_submitted(raw: str | bytes) -> Submitted:
    """Decode what the bus carried (written by this service: no NUL check)."""
    try:
        return _submitted_adapter.validate_json(raw, context=_NUL_FREE)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, _summary(
            exc.errors(include_url=False, include_input=False))) from None


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, ref: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.ref, self.details = code, message, ref, details


_NUL_FREE: dict[str, Any] = {}  # validation context: the JSON text holds no NUL escape


def parse_event(raw: str | bytes) -> Event:
    """Decode and validate one JSON event, or raise ProtocolError with a stable code."""
    # JSON text holds a NUL character only as the escape \u0000: without one, no string
    # in the event can hold one, and its models skip looking.
    escaped = (b"\\u0000" in raw) if isinstance(raw, bytes) else ("\\u0000" in raw)
    try:
        return _event_adapter.validate_json(raw, context=None if escaped else _NUL_FREE)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ProtocolError(ErrorCode.MALFORMED_JSON, "message is not valid JSON") from None
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, _summary(errors), ref_of(raw),
                            [_clean(e) for e in errors[:MAX_ERROR_DETAILS]]) from None


def _summary(errors: list[Any]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _clean(error: Any) -> dict[str, Any]:
    return {"loc": [str(p) for p in error["loc"]], "msg": error["msg"], "type": error["type"]}


def ref_of(raw: str | bytes) -> str | None:
    """Best effort: echo the client's ref even when the event is invalid."""
    try:
        ref = json.loads(raw).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) and len(ref) <= 128 else None


# Replies ----------------------------------------------------------------------------

AckStatus = Literal["accepted", "duplicate", "stale"]


class Ack(BaseModel):
    """An event was durably accepted (or recognised as already applied)."""

    type: Literal["ack"] = "ack"
    ref: str | None = None
    event: str
    status: AckStatus = "accepted"
    conversation_id: str | None = None
    segment_id: str | None = None
    late: bool | None = Field(default=None,
                              description="A final segment older than one already seen.")
    scores: dict[str, float] | None = None


class ErrorReply(BaseModel):
    type: Literal["error"] = "error"
    ref: str | None = None
    code: ErrorCode
    message: str
    conversation_id: str | None = None
    segment_id: str | None = None
    details: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, exc: ProtocolError) -> ErrorReply:
        return cls(ref=exc.ref, code=exc.code, message=exc.message, details=exc.details)


Reply = Ack | ErrorReply
