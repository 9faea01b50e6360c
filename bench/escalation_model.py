"""Would a small calibrated model escalate better than the rules? Judged out of fold.

A logistic regression (numpy, L2, Adam) over each customer turn's VADER scores, the
signals of `analytics.signals` and (optionally) its words and word pairs, trained on the
labelled twitter-care turns and review snippets together, five folds by conversation:
every turn is predicted by a model that never saw its conversation (the vocabulary too
comes from the training folds alone). Printed: the area under the ROC curve, the
figures of `docs/rules.md` at a few thresholds (neutral share of alerts, share of
escalate conversations alerted, share of "high" on escalate turns), what the model
adds to the default rules when it alerts on turns they leave alone, and what it takes
away from them as a veto (their hits on turns it puts below a threshold).

    python bench/escalation_model.py
"""

from __future__ import annotations

import collections
import itertools
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics import signals  # noqa: E402
from analytics.default_rules import DEFAULT_RULES  # noqa: E402
from analytics.quality import (  # noqa: E402
    fold_of,
    load_corpus,
    load_labels,
    load_snippets,
    replay_corpus,
)
from analytics.scoring import Scorer  # noqa: E402

FOLDS = 5
SHARED = ROOT.parent / "shared" / "data"
SIGNALS = ["churn", "cancellation", "threat", "insult", "contempt", "profanity",
           "repeated_contact", "exasperation", "intensity"]
_WORD = re.compile(r"[a-z']+|[!?]")


class Turns:
    """Every labelled customer turn: its source, conversation, features and label."""

    def __init__(self) -> None:
        self.corpora = {
            "twitter-care": (load_corpus(SHARED / "twitter-care" / "conversations.jsonl"),
                             load_labels(ROOT / "tests/data/twitter_care_labels.jsonl")),
            "review snippets": load_snippets(
                SHARED / "vader-groundtruth" / "amazonReviewSnippets_GroundTruth.tsv",
                ROOT / "tests/data/amazon_review_labels.jsonl")}
        scorer = Scorer()
        self.rows: list[tuple[str, str, int, str]] = []  # source, conversation, seq, label
        dense, self.words = [], []
        for source, (conversations, labels) in self.corpora.items():
            for c in conversations:
                for t in c["turns"]:
                    if t["speaker"] != "customer":
                        continue
                    text, scores = t["text"], scorer.score(t["text"])
                    found = signals.detect(text)
                    dense.append([scores.compound, scores.neg, scores.pos,
                                  scores.compound < -0.5, *(s in found for s in SIGNALS)])
                    words = _WORD.findall(text.lower().replace("\u2019", "'"))
                    self.words.append(set(words) | {f"{a} {b}" for a, b in
                                                     itertools.pairwise(words)})
                    self.rows.append((source, c["conversation_id"], t["seq"],
                                      labels[(c["conversation_id"], t["seq"])]))
        self.dense = np.array(dense, dtype=float)
        self.y = np.array([r[3] == "escalate" for r in self.rows], dtype=float)
        self.fold = np.array([fold_of(r[1], FOLDS) for r in self.rows])

    def design(self, idx: np.ndarray, vocab: dict[str, int]) -> tuple[Any, ...]:
        dense = np.c_[np.ones(len(idx)), self.dense[idx]]
        pairs = [(k, vocab[w]) for k, i in enumerate(idx) for w in self.words[i] if w in vocab]
        rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True)) \
            if pairs else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        return dense, rows, cols, len(vocab)


def _logits(x: tuple[Any, ...], wd: np.ndarray, ws: np.ndarray) -> np.ndarray:
    dense, rows, cols, _ = x
    return dense @ wd + np.bincount(rows, weights=ws[cols], minlength=len(dense))


def train(x: tuple[Any, ...], y: np.ndarray, lam: float, steps: int = 800,
          rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    dense, rows, cols, size = x
    wd, ws = np.zeros(dense.shape[1]), np.zeros(size)
    moments = [np.zeros_like(w) for w in (wd, wd, ws, ws)]
    penalised = np.r_[0.0, np.ones(dense.shape[1] - 1)]  # not the intercept
    n = len(y)
    for step in range(1, steps + 1):
        error = 1 / (1 + np.exp(-_logits(x, wd, ws))) - y
        grads = (dense.T @ error / n + lam / n * penalised * wd,
                 np.bincount(cols, weights=error[rows], minlength=size) / n + lam / n * ws)
        for k, (w, g) in enumerate(zip((wd, ws), grads, strict=True)):
            m, v = moments[2 * k], moments[2 * k + 1]
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g * g
            w -= rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return wd, ws


def out_of_fold(turns: Turns, lam: float, words: bool) -> np.ndarray:
    predicted = np.zeros(len(turns.rows))
    for k in range(FOLDS):
        train_idx, test_idx = np.where(turns.fold != k)[0], np.where(turns.fold == k)[0]
        vocab: dict[str, int] = {}
        if words:
            seen = collections.Counter(w for i in train_idx for w in turns.words[i])
            vocab = {w: j for j, w in enumerate(sorted(w for w, n in seen.items() if n >= 3))}
        wd, ws = train(turns.design(train_idx, vocab), turns.y[train_idx], lam)
        predicted[test_idx] = 1 / (1 + np.exp(-_logits(turns.design(test_idx, vocab),
                                                        wd, ws)))
    return predicted


def auc(p: np.ndarray, y: np.ndarray) -> float:
    ranks = np.empty(len(p))
    ranks[np.argsort(p)] = np.arange(len(p))
    positive = y == 1
    return float((ranks[positive].mean() - (positive.sum() - 1) / 2) / (~positive).sum())


def figures(turns: Turns, p: np.ndarray, source: str, alert_at: float,
            high_at: float) -> str:
    mine = np.array([r[0] == source for r in turns.rows])
    labels = np.array([r[3] for r in turns.rows])
    alert, high = (p >= alert_at) & mine, (p >= high_at) & mine
    wanted = {r[1] for r in turns.rows if r[0] == source and r[3] == "escalate"}
    alerted = {turns.rows[i][1] for i in np.where(alert)[0]}
    neutral = (labels[alert] == "none").mean() if alert.any() else 0.0
    precise = (labels[high] == "escalate").mean() if high.any() else 0.0
    return (f"neutral {neutral:.1%}, escalate alerted {len(wanted & alerted) / len(wanted):.1%}"
            f", high on escalate {precise:.1%}")


def rule_hits(turns: Turns, source: str) -> collections.Counter[tuple[str, int]]:
    """The default rules' hits on the customer's turns: (conversation, seq) -> how many."""
    hit: collections.Counter[tuple[str, int]] = collections.Counter()
    for c, trigger in replay_corpus(DEFAULT_RULES, turns.corpora[source][0]):
        last = trigger.turns[-1] if trigger.turns else None
        if trigger.rule.kind != "response_time" and last is not None \
                and last.role == "customer":
            hit[(c["conversation_id"], int(last.segment_id))] += 1
    return hit


def with_rules(turns: Turns, p: np.ndarray, source: str, at: float) -> str:
    """The default rules' hits, plus a model alert on a turn they left alone."""
    labels = turns.corpora[source][1]
    hit = rule_hits(turns, source)
    alerted = {cid for cid, _ in hit}
    by_label: collections.Counter[str] = collections.Counter()
    for key, label in labels.items():
        by_label[label] += hit[key]
    for i, (s, cid, seq, label) in enumerate(turns.rows):
        if s == source and p[i] >= at and (cid, seq) not in hit:
            by_label[label] += 1
            alerted.add(cid)
    wanted = {cid for (cid, _), label in labels.items() if label == "escalate"}
    return (f"neutral {by_label['none'] / sum(by_label.values()):.1%}, escalate alerted "
            f"{len(wanted & alerted) / len(wanted):.1%}")


def with_veto(turns: Turns, p: np.ndarray, source: str, below: float,
              folds: set[int]) -> str:
    """The default rules' hits, less those on turns the model puts below ``below``, on
    the conversations of ``folds``."""
    labels = turns.corpora[source][1]
    hit = rule_hits(turns, source)
    where = {(r[1], r[2]): i for i, r in enumerate(turns.rows) if r[0] == source}
    by_label: collections.Counter[str] = collections.Counter()
    alerted, wanted = set(), set()
    for (cid, seq), label in labels.items():
        if fold_of(cid, FOLDS) not in folds:
            continue
        if label == "escalate":
            wanted.add(cid)
        if hit[(cid, seq)] and p[where[(cid, seq)]] >= below:
            by_label[label] += hit[(cid, seq)]
            alerted.add(cid)
    total = sum(by_label.values())
    return (f"neutral {by_label['none']} of {total}, escalate alerted "
            f"{len(wanted & alerted)} of {len(wanted)}")


def main() -> None:
    turns = Turns()
    for name, lam, words in (("scores and signals", 1.0, False),
                             ("scores, signals and words", 3.0, True),
                             ("scores, signals and words, more regularised", 10.0, True)):
        p = out_of_fold(turns, lam, words)
        print(f"\n{name} (L2 {lam}):")
        for source in turns.corpora:
            mine = np.array([r[0] == source for r in turns.rows])
            print(f"  {source}: AUC {auc(p[mine], turns.y[mine]):.3f}")
            for alert_at, high_at in ((0.2, 0.5), (0.3, 0.6), (0.4, 0.6)):
                print(f"    alert at {alert_at}, high at {high_at}: "
                      f"{figures(turns, p, source, alert_at, high_at)}")
            print(f"    the default rules, plus the model at 0.5: "
                  f"{with_rules(turns, p, source, 0.5)}")
        print("  the default rules, less their hits the model puts below a threshold "
              "(a veto):")
        for below in (0.05, 0.1, 0.15, 0.2):
            print(f"    below {below}: twitter-care folds 0-2 "
                  f"{with_veto(turns, p, 'twitter-care', below, {0, 1, 2})}; folds 3-4 "
                  f"{with_veto(turns, p, 'twitter-care', below, {3, 4})}; review snippets "
                  f"{with_veto(turns, p, 'review snippets', below, set(range(FOLDS)))}")


if __name__ == "__main__":
    main()
