"""The pure stages: scoring, rolling sentiment and the rules engine."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
from pydantic import ValidationError
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from analytics.default_rules import DEFAULT_RULES
from analytics.replay import Replayed, fresh
from analytics.rolling import RollingConfig, RollingSentiment, timeline
from analytics.rules import (
    KeywordRule,
    RuleSet,
    RuleState,
    SentimentRule,
    Turn,
    evaluate,
)
from analytics.scoring import Scores, score_many
from tests.conftest import SHARED_DATA


def test_scores_are_vaders() -> None:
    reference = SentimentIntensityAnalyzer()
    path = SHARED_DATA / "vader-groundtruth" / "amazonReviewSnippets_GroundTruth.tsv"
    if path.is_file():
        with path.open(encoding="utf-8") as f:
            texts = [row[2] for row in itertools.islice(csv.reader(f, delimiter="\t"), 300)]
    else:  # a checkout without ../shared still checks a few texts
        texts = ["I love it!", "This is awful :(", "meh", ""]
    for text, ours in zip(texts, score_many(texts), strict=True):
        assert ours.as_dict() == reference.polarity_scores(text)


def test_compound_follows_human_ratings() -> None:
    """A sanity check on real data: VADER's compound tracks the human mean rating."""
    path = SHARED_DATA / "vader-groundtruth" / "nytEditorialSnippets_GroundTruth.tsv"
    if not path.is_file():
        pytest.skip("needs ../shared/data (the human-rated snippets)")
    with path.open(encoding="utf-8") as f:
        rows = [(float(r[1]), r[2]) for r in itertools.islice(csv.reader(f, delimiter="\t"),
                                                               2000)]
    human = np.array([h for h, _ in rows])
    ours = np.array([s.compound for s in score_many(t for _, t in rows)])
    assert np.corrcoef(human, ours)[0, 1] > 0.4


def test_rolling_window_and_ewma() -> None:
    r = RollingSentiment(RollingConfig(window=3, ewma_alpha=0.5))
    assert r.mean is None and r.ewma is None
    for v in (1.0, 0.0, -1.0, -1.0):
        r.add(v)
    assert list(r.values) == [0.0, -1.0, -1.0]
    assert r.mean == pytest.approx(-2 / 3)
    assert r.ewma == pytest.approx(((1.0 * 0.5 + 0.0 * 0.5) * 0.5 - 0.5) * 0.5 - 0.5)
    restored = RollingSentiment.restore(r.config, r.snapshot())
    assert restored.mean == r.mean and restored.ewma == r.ewma
    with pytest.raises(ValueError):
        RollingConfig(window=0)


def turn(i: int, compound: float, role: str = "customer", text: str = "", at: float = 0.0
         ) -> Turn:
    return Turn(segment_id=f"s{i}", role=role, participant_id=role, text=text,  # type: ignore[arg-type]
                scores=Scores(0, 0, 0, compound), at=at or float(i))


def subject(window: int = 5) -> Replayed:
    return fresh("c1", "billing", "chat", "agent-1", RollingConfig(window=window))


def run_rules(rules: RuleSet, compounds: list[float], window: int = 1,
              gap: float = 1.0) -> list[int]:
    """Feed customer turns; return the indexes of turns that raised an alert."""
    conv, fired = subject(window), []
    for i, c in enumerate(compounds):
        conv.rolling.add(c)
        if evaluate(rules, conv.states, turn(i, c, at=i * gap), conv):
            fired.append(i)
    return fired


def sentiment(**kw: float) -> RuleSet:
    return RuleSet(rules=[SentimentRule(id="neg", **kw)])


def test_threshold_needs_consecutive_turns() -> None:
    rules = sentiment(below=-0.5, consecutive=2, clear_above=-0.1, cooldown_seconds=0)
    assert run_rules(rules, [-0.9, 0.0, -0.9, 0.0]) == []
    assert run_rules(rules, [-0.9, -0.9]) == [1]


def test_hysteresis_one_alert_per_bad_patch() -> None:
    rules = sentiment(below=-0.5, consecutive=2, clear_above=-0.1, cooldown_seconds=0)
    # Hovering between -0.5 and -0.1 does not re-arm; only a climb past -0.1 does.
    patch = [-0.9] * 6 + [-0.3, -0.9, -0.9] + [0.2] + [-0.9, -0.9]
    assert run_rules(rules, patch) == [1, 11]


def test_cooldown_suppresses_a_quick_second_patch() -> None:
    rules = sentiment(below=-0.5, consecutive=2, clear_above=-0.1, cooldown_seconds=100)
    patch = [-0.9, -0.9, 0.5, -0.9, -0.9, -0.9]
    assert run_rules(rules, patch, gap=1.0) == [1]
    assert run_rules(rules, patch, gap=60.0) == [1, 4]  # 3*60 >= 100 s later


def test_agent_turns_do_not_count() -> None:
    rules = sentiment(below=-0.5, consecutive=2)
    conv = subject(window=1)
    conv.rolling.add(-0.9)
    assert evaluate(rules, conv.states, turn(0, -0.9), conv) == []
    assert evaluate(rules, conv.states, turn(1, -0.9, role="agent"), conv) == []
    assert len(evaluate(rules, conv.states, turn(2, -0.9), conv)) == 1


def test_keyword_rule_matches_whole_words_once_per_cooldown() -> None:
    rule = KeywordRule(id="kw", phrases=["cancel my account", "lawyer"], cooldown_seconds=60)
    rules = RuleSet(rules=[rule])
    conv = subject()

    def fire(text: str, at: float, role: str = "customer") -> list[str]:
        found = evaluate(rules, conv.states, turn(0, 0.0, role, text, at), conv)
        return [m for t in found for m in t.matched]

    assert fire("my lawyers are busy", 1) == []  # whole words only
    assert fire("I will CANCEL   my\naccount and call my Lawyer", 2) == [
        "cancel my account", "lawyer"]
    assert fire("lawyer again", 30) == []  # cooling down
    assert fire("cancel my account", 70, role="agent") == []  # customers only by default
    assert fire("lawyer!", 70) == ["lawyer"]


def test_disabled_rules_do_nothing() -> None:
    rules = RuleSet(rules=[SentimentRule(id="n", consecutive=1, enabled=False)])
    assert run_rules(rules, [-0.9, -0.9]) == []


def test_rule_validation() -> None:
    with pytest.raises(ValidationError):
        SentimentRule(id="x", below=-0.2, clear_above=-0.5)
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"rules": [{"id": "a", "kind": "keyword", "phrases": ["x"]},
                                          {"id": "a", "kind": "keyword", "phrases": ["y"]}]})
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"rules": [{"id": "a", "kind": "regex"}]})
    assert RuleSet.model_validate(DEFAULT_RULES.model_dump()) == DEFAULT_RULES


def test_rule_state_snapshot_keeps_no_text() -> None:
    state = RuleState(breaches=[turn(0, -0.9, text="secret words")], last_fired_at=5.0)
    assert "secret" not in repr(state.snapshot())
    assert RuleState.restore(state.snapshot()).last_fired_at == 5.0


def test_the_timeline_is_the_rolling_sentiment_after_each_customer_turn() -> None:
    turns = [{"seq": s, "at": float(s), "role": r, "scores": {"compound": c}}
             for s, r, c in ((3, "customer", 0.6), (1, "customer", -0.8), (2, "agent", 0.9),
                             (4, "customer", 0.0))]
    points = timeline(turns, RollingConfig(window=2, ewma_alpha=0.5))
    assert [(p["seq"], p["compound"]) for p in points] == [(1, -0.8), (3, 0.6), (4, 0.0)]
    assert [p["window"] for p in points] == pytest.approx([-0.8, -0.1, 0.3])
    assert [p["ewma"] for p in points] == pytest.approx([-0.8, -0.1, -0.05])
