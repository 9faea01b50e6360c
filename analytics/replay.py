"""Replaying recorded turns through the rules engine, as the live pipeline would have.

The backtest and the labelled-corpus check use this; it calls the very evaluators the
pipeline calls, so a replay raises what live traffic would have raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from analytics.rolling import RollingConfig, RollingSentiment
from analytics.rules import (
    RuleSet,
    RuleState,
    Trigger,
    Turn,
    deadlines,
    due,
    evaluate,
    track_wait,
)


@dataclass(slots=True)
class Replayed:
    """A conversation as rules see it during a replay (a ``Subject``)."""

    id: str
    queue: str
    channel: str
    agent_id: str | None
    rolling: RollingSentiment
    customer_waiting_since: float | None = None
    start_sentiment: float | None = None
    states: dict[str, RuleState] = field(default_factory=dict)
    last_customer_turn: Turn | None = None


def replay(rules: RuleSet, conv: Replayed, turns: Iterable[Turn],
           ended_at: float | None = None) -> list[Trigger]:
    """Every alert ``rules`` raise on ``turns`` (in order), clock rules included."""
    raised: list[Trigger] = []
    for turn in turns:
        raised += _clock(rules, conv, turn.at)
        if turn.role == "customer":
            conv.rolling.add(turn.scores.compound)
            conv.last_customer_turn = turn
            if conv.start_sentiment is None:
                conv.start_sentiment = turn.scores.compound
        conv.customer_waiting_since = track_wait(conv.customer_waiting_since, turn.role,
                                                 turn.at)
        raised += evaluate(rules, conv.states, turn, conv)
    if ended_at is not None:
        raised += _clock(rules, conv, ended_at)
    return raised


def _clock(rules: RuleSet, conv: Replayed, until: float) -> list[Trigger]:
    """Clock rules that would have fired before ``until``."""
    raised: list[Trigger] = []
    for when in deadlines(rules, conv.states, conv):
        if when >= until:
            break
        raised += due(rules, conv.states, conv, when, conv.last_customer_turn)
    return raised


def fresh(conversation_id: str, queue: str, channel: str, agent_id: str | None,
          rolling: RollingConfig) -> Replayed:
    return Replayed(conversation_id, queue, channel, agent_id, RollingSentiment(rolling))
