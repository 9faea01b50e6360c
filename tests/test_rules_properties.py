"""Properties of the sentiment rule over arbitrary customer-turn sequences (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.replay import fresh
from analytics.rolling import RollingConfig
from analytics.rules import RuleSet, SentimentRule, Turn, evaluate
from analytics.scoring import Scores

compounds = st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), max_size=60)
gaps = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def rules(draw: st.DrawFn) -> SentimentRule:
    below = draw(st.floats(min_value=-0.9, max_value=0.5))
    return SentimentRule(
        id="r", metric=draw(st.sampled_from(["window", "ewma", "turn"])), below=below,
        consecutive=draw(st.integers(min_value=1, max_value=4)),
        clear_above=draw(st.floats(min_value=below, max_value=0.9)),
        cooldown_seconds=draw(st.sampled_from([0.0, 30.0, 300.0])))


@settings(max_examples=300, deadline=None)
@given(rule=rules(), values=compounds, gap=gaps,
       window=st.integers(min_value=1, max_value=6))
def test_alerts_need_a_streak_a_recovery_and_the_cooldown(
        rule: SentimentRule, values: list[float], gap: float, window: int) -> None:
    conv = fresh("c", "q", "chat", "a", RollingConfig(window=window, ewma_alpha=0.5))
    rolling, states = conv.rolling, conv.states
    metric_trace: list[float] = []
    fired_at: list[int] = []
    for i, compound in enumerate(values):
        rolling.add(compound)
        metric = rolling.value(rule.metric)
        assert metric is not None
        metric_trace.append(metric)
        turn = Turn(f"s{i}", "customer", "c", "", Scores(0, 0, 0, compound), at=i * gap)
        triggers = evaluate(RuleSet(rules=[rule]), states, turn, conv)
        assert len(triggers) <= 1
        if triggers:
            fired_at.append(i)
            # Its evidence is the breaching streak that ends with this very turn.
            assert [t.segment_id for t in triggers[0].turns] == [
                f"s{j}" for j in range(i - rule.consecutive + 1, i + 1)]

    for n, i in enumerate(fired_at):
        # A streak of `consecutive` turns below the threshold ends at every alert.
        streak = metric_trace[i - rule.consecutive + 1 : i + 1]
        assert len(streak) == rule.consecutive and all(m < rule.below for m in streak)
        if n:
            previous = fired_at[n - 1]
            # Hysteresis: between two alerts the metric climbed back to clear_above.
            assert any(m >= rule.clear_above for m in metric_trace[previous + 1 : i])
            # Cooldown: alerts are at least cooldown_seconds apart.
            assert (i - previous) * gap >= rule.cooldown_seconds


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-1, max_value=-0.6), min_size=1, max_size=80))
def test_one_unbroken_bad_patch_raises_exactly_one_alert(values: list[float]) -> None:
    rule = SentimentRule(id="r", below=-0.5, consecutive=2, clear_above=-0.1,
                         cooldown_seconds=0)
    conv, alerts = fresh("c", "q", "chat", "a", RollingConfig(window=3)), 0
    for i, compound in enumerate(values):
        conv.rolling.add(compound)
        turn = Turn(f"s{i}", "customer", "c", "", Scores(0, 0, 0, compound), at=float(i))
        alerts += len(evaluate(RuleSet(rules=[rule]), conv.states, turn, conv))
    assert alerts == (1 if len(values) >= 2 else 0)
