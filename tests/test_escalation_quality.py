"""Escalation quality on real conversations labelled by reading (tests/data): the default
rules must find the unhappy customers without crying wolf. The labels were made without
looking at any score; `docs/rules.md` reports these figures."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

from analytics import signals
from analytics.default_rules import DEFAULT_RULES
from analytics.quality import judge, load_corpus, load_labels
from tests.conftest import SHARED_DATA

LABELS = Path(__file__).parent / "data" / "twitter_care_labels.jsonl"
CORPUS = SHARED_DATA / "twitter-care" / "conversations.jsonl"
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(),
                                  reason="needs ../shared/data (the twitter-care corpus)")


@needs_corpus
def test_every_customer_turn_is_labelled() -> None:
    labels = load_labels(LABELS)
    turns = {(c["conversation_id"], t["seq"]) for c in load_corpus(CORPUS)
             for t in c["turns"] if t["speaker"] == "customer"}
    assert set(labels) == turns
    assert set(labels.values()) == {"escalate", "mild", "none"}


@needs_corpus
def test_default_rules_find_the_unhappy_customers() -> None:
    figures = judge(DEFAULT_RULES, load_corpus(CORPUS), load_labels(LABELS))
    print(json.dumps(figures.as_dict(), indent=1))  # shown with -s; docs/rules.md has them
    assert figures.escalate_conversations == 69
    # Few alerts on neutral turns: supervisors learn to trust them.
    assert figures.neutral_share <= 0.10
    # Most conversations with an "escalate" turn raise an alert.
    assert figures.escalate_recall >= 0.70
    # High severity means it: most high alerts land on "escalate" turns.
    assert figures.high_on_escalate >= 0.70


def _texts() -> list[str]:
    texts = [t["text"] for c in load_corpus(CORPUS) for t in c["turns"]]
    path = SHARED_DATA / "vader-groundtruth" / "amazonReviewSnippets_GroundTruth.tsv"
    with path.open(encoding="utf-8") as f:
        texts += [row[2] for row in itertools.islice(csv.reader(f, delimiter="\t"), 2000)]
    return texts


@needs_corpus
def test_fast_signal_detection_equals_the_plain_patterns() -> None:
    """`detect` skips patterns that cannot match; it must find what every pattern, run
    plainly over the whole text, finds (and may list overlapping matches the plain
    alternation consumed)."""
    plain = {name: signals._compile(patterns) for name, patterns in signals.PATTERNS.items()}
    for text in _texts():
        for negation_aware in (True, False):
            found = signals.detect(text, negation_aware)
            found.pop("intensity", None)
            expected = {name: hits for name, pattern in plain.items()
                        if (hits := signals.matches(
                            pattern, text, negation_aware and name in signals.NEGATABLE))}
            assert found.keys() == expected.keys(), text
            for name, hits in expected.items():
                assert set(hits) <= set(found[name]), text
