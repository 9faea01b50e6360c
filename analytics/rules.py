"""The escalation rules engine: rule definitions and their pure evaluation.

A rule keeps a small state per conversation (``RuleState``). Evaluation takes one
final turn plus the conversation's rolling sentiment and returns the alerts to raise;
it does no I/O, so the pipeline, tests and a future stateful property test all drive
it directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from analytics.rolling import RollingSentiment
from analytics.scoring import Scores

Role = Literal["customer", "agent", "bot"]
Severity = Literal["low", "medium", "high"]


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    severity: Severity = "high"
    cooldown_seconds: float = Field(default=300.0, ge=0)
    enabled: bool = True


class SentimentRule(_RuleBase):
    """Fires when rolling customer sentiment stays below ``below`` for ``consecutive``
    customer turns; re-arms only once it climbs back to ``clear_above`` (hysteresis)."""

    kind: Literal["sentiment"] = "sentiment"
    metric: Literal["window", "ewma", "turn"] = "window"
    below: float = Field(default=-0.5, ge=-1, le=1)
    consecutive: int = Field(default=2, ge=1, le=100)
    clear_above: float = Field(default=-0.1, ge=-1, le=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> SentimentRule:
        if self.clear_above < self.below:
            raise ValueError("clear_above must be >= below")
        return self


class KeywordRule(_RuleBase):
    """Fires when a turn by one of ``roles`` contains one of ``phrases`` (whole words,
    case-insensitive)."""

    kind: Literal["keyword"] = "keyword"
    phrases: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)
    roles: list[Role] = Field(default=["customer"], min_length=1)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(
            r"\s+".join(re.escape(word) for word in p.split()) for p in self.phrases
        )
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


Rule = Annotated[SentimentRule | KeywordRule, Field(discriminator="kind")]


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return self


DEFAULT_RULES = RuleSet(
    rules=[
        # A sustained bad patch: the moving mean stays below -0.5 for two customer turns.
        SentimentRule(id="negative-sentiment", below=-0.5, consecutive=2, clear_above=-0.1,
                      cooldown_seconds=300, severity="high"),
        # One very negative customer turn; short chats rarely have a second one.
        SentimentRule(id="very-negative-turn", metric="turn", below=-0.75, consecutive=1,
                      clear_above=-0.25, cooldown_seconds=300, severity="medium"),
        KeywordRule(
            id="escalation-phrases",
            phrases=["cancel my account", "cancel my subscription", "close my account",
                     "supervisor", "manager", "lawyer", "attorney", "sue you", "complaint",
                     "refund", "report you"],
            cooldown_seconds=300,
            severity="medium",
        ),
    ]
)


@dataclass(frozen=True, slots=True)
class Turn:
    """A scored final segment, as rules see it."""

    segment_id: str
    role: Role
    participant_id: str
    text: str
    scores: Scores
    at: float

    def evidence(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "role": self.role,
            "participant_id": self.participant_id,
            "text": self.text,
            "scores": self.scores.as_dict(),
            "at": self.at,
        }


@dataclass(slots=True)
class RuleState:
    armed: bool = True
    breaches: list[Turn] = field(default_factory=list)
    last_fired_at: float | None = None

    def snapshot(self) -> dict[str, Any]:
        # Breach evidence holds text, so it stays in memory; after a restart a breach
        # streak starts again, which can only delay an alert, never duplicate one.
        return {"armed": self.armed, "last_fired_at": self.last_fired_at}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> RuleState:
        return cls(armed=data.get("armed", True), last_fired_at=data.get("last_fired_at"))


@dataclass(frozen=True, slots=True)
class Trigger:
    """A rule decided to raise an alert; the pipeline turns it into a stored alert."""

    rule: SentimentRule | KeywordRule
    reason: str
    turns: tuple[Turn, ...]
    metric: float | None = None
    matched: tuple[str, ...] = ()


def _cooling(state: RuleState, rule: _RuleBase, now: float) -> bool:
    return state.last_fired_at is not None and now - state.last_fired_at < rule.cooldown_seconds


def _sentiment(rule: SentimentRule, state: RuleState, turn: Turn,
               rolling: RollingSentiment) -> Trigger | None:
    if turn.role != "customer":
        return None
    value = rolling.value(rule.metric)
    if value is None:
        return None
    if not state.armed:
        if value >= rule.clear_above:
            state.armed = True
        return None
    if value >= rule.below:
        state.breaches.clear()
        return None
    state.breaches.append(turn)
    del state.breaches[: -rule.consecutive]
    if len(state.breaches) < rule.consecutive or _cooling(state, rule, turn.at):
        return None
    turns = tuple(state.breaches)
    state.breaches.clear()
    state.armed = False
    state.last_fired_at = turn.at
    return Trigger(
        rule=rule,
        reason=(f"customer sentiment ({rule.metric}) {value:.3f} below {rule.below} "
                f"for {rule.consecutive} consecutive customer turn(s)"),
        turns=turns,
        metric=value,
    )


def _keyword(rule: KeywordRule, state: RuleState, turn: Turn) -> Trigger | None:
    if turn.role not in rule.roles:
        return None
    found = tuple(dict.fromkeys(m.group(0).lower() for m in rule.pattern.finditer(turn.text)))
    if not found or _cooling(state, rule, turn.at):
        return None
    state.last_fired_at = turn.at
    return Trigger(rule=rule, reason=f"{turn.role} said: " + ", ".join(repr(p) for p in found),
                   turns=(turn,), matched=found)


def evaluate(rules: RuleSet, states: dict[str, RuleState], turn: Turn,
             rolling: RollingSentiment) -> list[Trigger]:
    """Run every enabled rule on one final turn (rolling already includes it)."""
    triggers = []
    for rule in rules.rules:
        if not rule.enabled:
            continue
        state = states.setdefault(rule.id, RuleState())
        if isinstance(rule, SentimentRule):
            fired = _sentiment(rule, state, turn, rolling)
        else:
            fired = _keyword(rule, state, turn)
        if fired is not None:
            triggers.append(fired)
    return triggers
