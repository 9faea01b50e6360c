"""Backtest: what a rule would have raised on recorded conversations.

Rules that read only scores (sentiment, sentiment drop, an agent-conduct rule without
words) are first narrowed with numpy over the stored scores of every conversation: a
conversation whose customer scores never go below a threshold (or never spread by more
than a drop) cannot fire, and is not replayed. The rest are replayed turn by turn through
the very evaluators the live pipeline runs (`analytics.replay`), so a backtest raises
exactly what live traffic would have. Rules that read words run over recorded text; a
conversation whose words for the roles a rule reads were not recorded is counted as not
judged, never guessed at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analytics.history import History
from analytics.replay import Replayed, fresh, replay
from analytics.rolling import RollingConfig
from analytics.rules import (
    AgentConductRule,
    AnyRule,
    HumanRequestedRule,
    KeywordRule,
    RuleSet,
    SentimentDropRule,
    SentimentRule,
    SignalRule,
    Trigger,
    Turn,
)
from analytics.scoring import Scores

COMPOUND = 3  # column of the compound score in History.scores


def reads_words(rule: AnyRule) -> bool:
    if isinstance(rule, AgentConductRule):
        return rule.profanity or bool(rule.phrases)
    return isinstance(rule, KeywordRule | SignalRule | HumanRequestedRule)


def roles_read(rule: AnyRule) -> frozenset[str]:
    if isinstance(rule, KeywordRule | SignalRule | AgentConductRule):
        return frozenset(rule.roles)
    if isinstance(rule, HumanRequestedRule):
        return frozenset({"customer", "bot"})
    return frozenset({"customer"})


@dataclass(slots=True)
class Outcome:
    """What one rule raised over the history."""

    rule: AnyRule
    judged: int = 0
    not_judged: int = 0
    replayed: int = 0
    alerts: int = 0
    per_conversation: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        alerted = len(self.per_conversation)
        spread = Counter(min(n, 3) for n in self.per_conversation.values())
        return {
            "rule": self.rule.model_dump(mode="json"),
            "conversations_judged": self.judged,
            "conversations_not_judged": self.not_judged,
            "conversations_replayed": self.replayed,
            "alerts": self.alerts,
            "conversations_with_alerts": alerted,
            "alerts_per_conversation": {
                "mean": self.alerts / alerted if alerted else 0.0,
                "one": spread[1], "two": spread[2], "three_or_more": spread[3]},
            "samples": self.samples,
        }


class _Groups:
    """Segment index ranges of each conversation in a History."""

    def __init__(self, history: History) -> None:
        group = np.asarray(history.group, dtype=np.int64)
        self.count = len(history.conversations)
        bounds = np.searchsorted(group, np.arange(self.count + 1))
        self.starts, self.ends = bounds[:-1], bounds[1:]
        self.compound = (np.asarray(history.scores, dtype=np.float64)[:, COMPOUND]
                         if history.scores else np.zeros(0))
        self.roles = np.asarray(history.roles, dtype=object)

    def reduce(self, role: str, fn: Any, empty: float) -> np.ndarray:
        """Per conversation, ``fn`` (np.minimum / np.maximum) over one role's compounds."""
        values = np.where(self.roles == role, self.compound, empty)
        out = np.full(self.count, empty)
        present = self.ends > self.starts
        if len(values):
            out[present] = fn.reduceat(values, self.starts[present])
        return out


def candidates(rule: AnyRule, groups: _Groups) -> np.ndarray:
    """Conversations that could fire ``rule`` at all (a vectorised necessary condition)."""
    if isinstance(rule, SentimentRule):
        # Window means and EWMAs are weighted means of customer scores: below the
        # threshold only if some customer score is.
        return groups.reduce("customer", np.minimum, np.inf) < rule.below
    if isinstance(rule, SentimentDropRule):
        # Any fall of the metric is within the spread of the customer scores.
        low = groups.reduce("customer", np.minimum, np.inf)
        high = groups.reduce("customer", np.maximum, -np.inf)
        return high - low > rule.drop
    if isinstance(rule, AgentConductRule) and not reads_words(rule):
        if rule.below is None:
            return np.zeros(groups.count, dtype=bool)
        below = np.zeros(groups.count, dtype=bool)
        for role in rule.roles:
            below |= groups.reduce(role, np.minimum, np.inf) < rule.below
        return below
    return groups.ends > groups.starts


def _turns(history: History, start: int, end: int) -> Iterator[Turn]:
    texts = history.texts
    for i in range(start, end):
        yield Turn(segment_id=history.segment_ids[i], role=history.roles[i],  # type: ignore[arg-type]
                   participant_id=history.participants[i], text=texts[i] if texts else None,
                   scores=Scores(*history.scores[i]), at=history.at[i])


def _unrecorded(history: History, start: int, end: int, roles: frozenset[str]) -> bool:
    texts = history.texts
    return texts is None or any(
        texts[i] is None for i in range(start, end) if history.roles[i] in roles)


def _sample(conversation_id: str, trigger: Trigger) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "reason": trigger.reason,
            "raised_at": trigger.at,
            "metric": trigger.metric, "matched": list(trigger.matched),
            "segments": [t.evidence() for t in trigger.turns]}


def run(rule: AnyRule, history: History, rolling: RollingConfig, samples: int = 5,
        groups: _Groups | None = None, narrow: bool = True) -> Outcome:
    """Replay ``rule`` over ``history`` (``narrow=False`` replays every conversation, for
    checking and measuring the numpy narrowing)."""
    groups = groups or _Groups(history)
    outcome = Outcome(rule)
    rules = RuleSet(rules=[rule.model_copy(update={"enabled": True})])
    words, roles = reads_words(rule), roles_read(rule)
    possible = candidates(rule, groups) if narrow else np.ones(groups.count, dtype=bool)
    for i, conv_meta in enumerate(history.conversations):
        if not rule.scope.covers(conv_meta["queue"], conv_meta["channel"]):
            continue
        start, end = int(groups.starts[i]), int(groups.ends[i])
        if words and _unrecorded(history, start, end, roles):
            outcome.not_judged += 1
            continue
        outcome.judged += 1
        if not possible[i]:
            continue
        outcome.replayed += 1
        conv = fresh(conv_meta["id"], conv_meta["queue"], conv_meta["channel"],
                     conv_meta["agent_id"], rolling)
        turns = list(_turns(history, start, end))
        if history.agents_from is not None:
            raised = list(_replay_with_agent(rules, conv, turns, conv_meta["ended_at"],
                                             history.agents_from[i]))
        else:
            raised = replay(rules, conv, turns, conv_meta["ended_at"])
        if raised:
            outcome.alerts += len(raised)
            outcome.per_conversation[conv_meta["id"]] += len(raised)
            for trigger in raised:
                if len(outcome.samples) < samples:
                    outcome.samples.append(_sample(conv_meta["id"], trigger))
    return outcome


def _replay_with_agent(rules: RuleSet, conv: Replayed, turns: list[Turn],
                       ended_at: float | None, agent_from: float | None) -> Iterator[Trigger]:
    """Replay with no agent until one was assigned, as a bot-handled conversation was."""
    if agent_from == float("-inf"):
        yield from replay(rules, conv, turns, ended_at)
        return
    agent, conv.agent_id = conv.agent_id, None
    before = [t for t in turns if agent_from is None or t.at < agent_from]
    yield from replay(rules, conv, before)
    conv.agent_id = agent
    yield from replay(rules, conv, turns[len(before):], ended_at)


def backtest(rule: AnyRule, history: History, rolling: RollingConfig,
             current: AnyRule | None = None, samples: int = 5) -> dict[str, Any]:
    """What ``rule`` would have raised on ``history``, and how that differs from
    ``current`` (the rule in force), if given."""
    groups = _Groups(history)
    draft = run(rule, history, rolling, samples, groups)
    result: dict[str, Any] = {
        "conversations": len(history.conversations), "truncated": history.truncated,
        **draft.summary(), "current": None, "difference": None,
    }
    if current is not None:
        now = run(current, history, rolling, samples, groups)
        new, old = set(draft.per_conversation), set(now.per_conversation)
        result["current"] = now.summary()
        result["difference"] = {
            "alerts": draft.alerts - now.alerts,
            "conversations_only_draft": len(new - old),
            "conversations_only_current": len(old - new),
            "conversations_both": len(new & old),
            "examples_only_draft": sorted(new - old)[:samples],
            "examples_only_current": sorted(old - new)[:samples],
        }
    return result

