"""Aggregates for analysts (docs/analytics.md#aggregates): the pure numpy grouping."""

from __future__ import annotations

import math

import pytest

from analytics.aggregates import Facts, TooManyRows, aggregate, buckets_spanned


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]



# -- the numpy grouping on its own ----------------------------------------------------


def test_the_grouping_percentiles_nulls_and_empty_groups() -> None:
    day = 86_400.0
    facts = Facts(
        group=["b", "a", None, "a", "a", "a"],
        started_at=[0.0, 1.0, 2.0, 3.0, 4 * day + 5, 4 * day + 6],  # Thu 1 Jan, Mon 5 Jan
        ended_at=[10.0, None, 12.0, 13.0, 4 * day + 9, None],
        first_compound=[0.5, None, 0.1, -0.5, 0.2, 0.9],
        last_compound=[0.5, None, 0.3, 0.5, -0.2, 0.9],
        customer_total=[1.0, 0.0, 0.4, 0.0, 0.0, 0.9], customer_turns=[2, 0, 2, 2, 2, 1],
        first_response=[None, None, 4.0, 1.0, 3.0, 2.0],
        alert_of=[0, 0, 3], time_to_acknowledge=[5.0, None, 7.0],
        rule_of=[0, 0, 0, 3], rule_ids=["x", "y", "x", "x"])
    rows = aggregate(facts, None)
    assert [(r["group"], r["bucket"], r["conversations"]) for r in rows] == [
        ("a", None, 4), ("b", None, 1), (None, None, 1)]
    a, b, null = rows
    # Nearest rank: of three values the 2nd (p50) and the 3rd (p90); nulls left out.
    assert a["first_customer_compound"] == {"n": 3, "mean": pytest.approx(0.2),
                                            "p50": 0.2, "p90": 0.9}
    assert a["customer_compound_change"] == {"n": 3, "mean": pytest.approx(0.6 / 3),
                                             "p50": 0.0, "p90": 1.0}
    assert a["first_response"] == {"n": 3, "mean": 2.0, "p50": 2.0, "p90": 3.0}
    assert a["handle_time"] == {"n": 2, "mean": 7.0, "p50": 4.0, "p90": 10.0}
    assert a["customer_turns"] == 5 and a["customer_compound_mean"] == pytest.approx(0.9 / 5)
    assert (a["escalated"], a["escalated_share"], a["alerts"]) == (1, 0.25, 1)
    assert a["alerts_by_rule"] == {"x": 1}
    assert a["time_to_acknowledge"] == {"n": 1, "mean": 7.0, "p50": 7.0, "p90": 7.0}
    # An alert of two rules counts once for each; one never acknowledged is no time.
    assert b["alerts_by_rule"] == {"x": 2, "y": 1} and b["alerts"] == 2
    assert b["time_to_acknowledge"] == {"n": 1, "mean": 5.0, "p50": 5.0, "p90": 5.0}
    empty = {"n": 0, "mean": None, "p50": None, "p90": None}
    assert b["first_response"] == empty and null["time_to_acknowledge"] == empty
    assert null["alerts_by_rule"] == {} and null["escalated_share"] == 0.0
    # Weeks start on Monday 00:00 UTC: 1 Jan 1970 was a Thursday.
    weeks = aggregate(facts, "week")
    assert [(r["group"], r["bucket"], r["conversations"]) for r in weeks] == [
        ("a", -3 * day, 2), ("a", 4 * day, 2), ("b", -3 * day, 1), (None, -3 * day, 1)]
    assert [r["bucket"] for r in aggregate(facts, "day")][:2] == [0.0, 4 * day]
    assert aggregate(Facts(), "hour") == []
    assert aggregate(Facts(group=[None], started_at=[0.0], ended_at=[None],
                           first_compound=[None], last_compound=[None],
                           customer_total=[0.0], customer_turns=[0],
                           first_response=[None]), None)[0]["customer_compound_mean"] is None
    with pytest.raises(TooManyRows):
        aggregate(facts, "day", max_rows=3)


def test_ninety_percent_is_the_nearest_rank_of_ten_and_of_eleven() -> None:
    for n in (1, 2, 9, 10, 11, 19, 20, 21, 100):
        values = [float(v) for v in range(n, 0, -1)]
        facts = Facts(group=["g"] * n, started_at=[0.0] * n, ended_at=[None] * n,
                      first_compound=[None] * n, last_compound=[None] * n,
                      customer_total=[0.0] * n, customer_turns=[0] * n,
                      first_response=values)
        got = aggregate(facts, None)[0]["first_response"]
        assert (got["p50"], got["p90"]) == (nearest_rank(values, 50),
                                            nearest_rank(values, 90)), n
        assert got["p90"] == math.ceil(0.9 * n) and got["p50"] == math.ceil(0.5 * n)


def test_buckets_spanned_counts_the_buckets_a_range_touches() -> None:
    hour = 3_600.0
    assert buckets_spanned(0.0, hour, "hour") == 1
    assert buckets_spanned(0.0, hour + 1, "hour") == 2
    assert buckets_spanned(hour / 2, 2 * hour, "hour") == 2
    assert buckets_spanned(0.0, 366 * 86_400.0, "hour") == 366 * 24
    assert buckets_spanned(0.0, 86_400.0, "week") == 1  # Thursday, in one week
