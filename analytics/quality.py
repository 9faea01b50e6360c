"""How well a rule set finds the unhappy customers, judged against turns labelled by
reading (escalate / mild / none).

The figures: the share of alerts raised on neutral turns, the share of conversations with
an "escalate" turn that raise any alert, and the share of high-severity alerts that land
on "escalate" turns. Alerts that judge the agent (response time, agent conduct) are left
out: the labels are the customer's.

`cross_validated` judges fold by fold (folds by conversation): a change is judged on the
folds it was not made from, and the spread says how far a figure can be trusted.
"""

from __future__ import annotations

import json
import statistics
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics.replay import fresh, replay
from analytics.rolling import RollingConfig
from analytics.rules import RuleSet, Trigger, Turn
from analytics.scoring import Scorer, support_scorer

LABELS = ("escalate", "mild", "none")
TURN_SECONDS = 30.0  # the corpus lacks agent timestamps; turns are replayed this far apart


@dataclass(frozen=True, slots=True)
class Figures:
    alerts: int
    alerts_by_label: dict[str, int]
    neutral_share: float  # alerts on "none" turns / alerts
    escalate_conversations: int
    escalate_conversations_alerted: int
    escalate_recall: float  # share of conversations with an "escalate" turn that alerted
    high_alerts: int
    high_on_escalate: float  # share of high-severity alerts on "escalate" turns
    by_rule: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def load_labels(path: Path) -> dict[tuple[str, int], str]:
    labels = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        labels[(row["conversation_id"], row["seq"])] = row["label"]
    return labels


def load_corpus(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Conversations from a JSONL file in the shared twitter-care format."""
    conversations = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                conversations.append(json.loads(line))
                if limit is not None and len(conversations) >= limit:
                    break
    return conversations


def load_snippets(path: Path, labels_path: Path) -> tuple[list[dict[str, Any]],
                                                          dict[tuple[str, int], str]]:
    """Human-rated snippets (``id<TAB>rating<TAB>text``, the shared vader-groundtruth
    format) as one-turn customer conversations, each with its label. An id is
    ``review_sentence``: a review's sentences share a fold (`fold_of`)."""
    labels = {(row["id"], 1): row["label"] for row in map(
        json.loads, labels_path.read_text(encoding="utf-8").splitlines())}
    conversations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        snippet_id, _, text = line.split("\t", 2)
        conversations.append({"conversation_id": snippet_id, "queue": "reviews", "turns": [
            {"seq": 1, "speaker": "customer", "text": text}]})
    return conversations, labels


def fold_of(conversation_id: str, folds: int) -> int:
    """A conversation's fold: stable, and the same for a review's sentences."""
    return zlib.crc32(conversation_id.split("_")[0].encode()) % folds


def replay_corpus(rules: RuleSet, conversations: Iterable[dict[str, Any]],
                  scorer: Scorer | None = None, rolling: RollingConfig | None = None,
                  ) -> Iterator[tuple[dict[str, Any], Trigger]]:
    """Every alert ``rules`` raise on corpus conversations (the shared twitter-care
    format), each with its conversation."""
    scorer = scorer or support_scorer()
    rolling = rolling or RollingConfig()
    for c in conversations:
        texts = [t["text"] for t in c["turns"]]
        turns = [Turn(segment_id=str(t["seq"]), role="customer" if t["speaker"] == "customer"
                      else "agent", participant_id=t["speaker"], text=t["text"], scores=s,
                      at=i * TURN_SECONDS)
                 for i, (t, s) in enumerate(zip(c["turns"], scorer.score_many(texts),
                                                strict=True))]
        conv = fresh(c["conversation_id"], c["queue"], "chat", "agent", rolling)
        for trigger in replay(rules, conv, turns):
            yield c, trigger


def judge(rules: RuleSet, conversations: list[dict[str, Any]],
          labels: dict[tuple[str, int], str], scorer: Scorer | None = None,
          rolling: RollingConfig | None = None) -> Figures:
    by_label: Counter[str] = Counter()
    by_rule: dict[str, Counter[str]] = {}
    high: Counter[str] = Counter()
    wanted = {c["conversation_id"] for c in conversations for t in c["turns"]
              if labels.get((c["conversation_id"], t["seq"])) == "escalate"}
    alerted: set[str] = set()
    for c, trigger in replay_corpus(rules, conversations, scorer, rolling):
        cid = c["conversation_id"]
        last = trigger.turns[-1] if trigger.turns else None
        if trigger.rule.kind == "response_time" or last is None or last.role != "customer":
            continue  # judges the agent, not the customer's words
        label = labels[(cid, int(last.segment_id))]
        by_label[label] += 1
        by_rule.setdefault(trigger.rule.id, Counter())[label] += 1
        if trigger.rule.severity == "high":
            high[label] += 1
        alerted.add(cid)
    total = sum(by_label.values())
    high_total = sum(high.values())
    return Figures(
        alerts=total, alerts_by_label={k: by_label[k] for k in LABELS},
        neutral_share=by_label["none"] / total if total else 0.0,
        escalate_conversations=len(wanted),
        escalate_conversations_alerted=len(wanted & alerted),
        escalate_recall=len(wanted & alerted) / len(wanted) if wanted else 0.0,
        high_alerts=high_total,
        high_on_escalate=high["escalate"] / high_total if high_total else 0.0,
        by_rule={rule: {k: n[k] for k in LABELS} for rule, n in sorted(by_rule.items())})


@dataclass(frozen=True, slots=True)
class Spread:
    mean: float
    stdev: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.mean(values), statistics.stdev(values) if len(values) > 1
                   else 0.0, min(values), max(values))


@dataclass(frozen=True, slots=True)
class CrossValidated:
    """A rule set judged fold by fold: each fold's figures, their spread, and the figures
    of every fold's turns together."""

    folds: list[Figures]
    pooled: Figures
    spread: dict[str, Spread]


FIGURES = ("neutral_share", "escalate_recall", "high_on_escalate")


def cross_validated(rules: RuleSet, conversations: list[dict[str, Any]],
                    labels: dict[tuple[str, int], str], folds: int = 5,
                    scorer: Scorer | None = None) -> CrossValidated:
    """Judge ``rules`` on each of ``folds`` folds of ``conversations`` (by conversation).
    A fixed rule set learns nothing from the folds; what a fold adds is the spread, and
    the discipline that a change is made from some folds and judged on the others."""
    scorer = scorer or support_scorer()
    per_fold = [judge(rules, [c for c in conversations
                              if fold_of(c["conversation_id"], folds) == k], labels, scorer)
                for k in range(folds)]
    return CrossValidated(
        folds=per_fold, pooled=judge(rules, conversations, labels, scorer),
        spread={name: Spread.of([getattr(f, name) for f in per_fold]) for name in FIGURES})
