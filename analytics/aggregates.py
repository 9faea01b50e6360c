"""Aggregates of recorded conversations for analysts (docs/analytics.md#aggregates), as
pure numpy over columns: per (group, time bucket), how many conversations, the
customer's sentiment, escalations, alerts per rule, and times (to acknowledge, to first
respond, to handle).

The stores fetch the columns (`Facts`: a row per conversation, per alert and per rule of
an alert); this groups them, so every store answers the same numbers by one definition.
Percentiles are nearest-rank: the p-th percentile of n values is the ⌈p·n/100⌉-th
smallest (PostgreSQL's ``percentile_disc``), always one of the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Interval = Literal["hour", "day", "week"]
GroupBy = Literal["queue", "agent", "team", "none"]
SECONDS: dict[str, int] = {"hour": 3_600, "day": 86_400, "week": 604_800}
# The epoch (1970-01-01) was a Thursday: weeks start on Mondays, 1970-01-05 the first.
MONDAY = 4 * 86_400
PERCENTILES = (50, 90)
MAX_ROWS = 10_000  # (group, bucket) rows one answer holds, at most
MAX_CONVERSATIONS = 1_000_000  # conversations one query aggregates, at most

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(slots=True)
class Facts:
    """What a store fetched: conversations in one order (each with its group, None for
    the null group); alerts and their rules name a conversation by its position."""

    group: list[str | None] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    ended_at: list[float | None] = field(default_factory=list)  # None: not ended
    first_compound: list[float | None] = field(default_factory=list)  # None: no customer turn
    last_compound: list[float | None] = field(default_factory=list)
    customer_total: list[float] = field(default_factory=list)  # sum of customer compounds
    customer_turns: list[int] = field(default_factory=list)
    first_response: list[float | None] = field(default_factory=list)  # None: no answer
    alert_of: list[int] = field(default_factory=list)  # per alert: its conversation
    time_to_acknowledge: list[float | None] = field(default_factory=list)  # per alert
    rule_of: list[int] = field(default_factory=list)  # per (alert, rule): the conversation
    rule_ids: list[str] = field(default_factory=list)
    truncated: bool = False  # more conversations matched than the store was to fetch


class TooManyRows(Exception):
    """The answer would hold more (group, bucket) rows than allowed."""

    def __init__(self, rows: int, limit: int) -> None:
        super().__init__(f"{rows} rows, more than {limit}")
        self.rows, self.limit = rows, limit


def bucket_starts(started_at: Floats, interval: Interval | None) -> Floats:
    """Each time's bucket, as the bucket's start (Unix time, UTC); 0 for all when there
    is no interval. Weeks start on Monday 00:00 UTC."""
    if interval is None:
        return np.zeros(len(started_at))
    width = SECONDS[interval]
    offset = MONDAY if interval == "week" else 0
    return np.floor((started_at - offset) / width) * width + offset


def buckets_spanned(since: float, until: float, interval: Interval) -> int:
    """How many buckets [since, until) touches (at least one)."""
    starts = bucket_starts(np.array([since, max(since, until - 1e-6)]), interval)
    return round(float(starts[1] - starts[0]) / SECONDS[interval]) + 1


def _floats(values: list[float | None] | list[float]) -> Floats:
    """A column, None as NaN."""
    return np.array(values, dtype=np.float64).reshape(-1)


def _distribution(values: Floats, row_of: Ints, rows: int) -> list[dict[str, Any]]:
    """Per row: how many values it has (NaN is none), their mean and nearest-rank
    percentiles; null where it has none."""
    present = ~np.isnan(values)
    v, r = values[present], row_of[present]
    counts = np.bincount(r, minlength=rows)
    means = np.bincount(r, weights=v, minlength=rows) / np.maximum(counts, 1)
    ordered = v[np.lexsort((v, r))]  # by row, then value
    starts = np.cumsum(counts) - counts
    ranks = {p: starts + np.maximum((p * counts + 99) // 100, 1) - 1 for p in PERCENTILES}
    out: list[dict[str, Any]] = []
    for i, n in enumerate(counts.tolist()):
        if n == 0:
            out.append({"n": 0, "mean": None, "p50": None, "p90": None})
        else:
            out.append({"n": n, "mean": float(means[i]),
                        **{f"p{p}": float(ordered[ranks[p][i]]) for p in PERCENTILES}})
    return out


def aggregate(facts: Facts, interval: Interval | None,
              max_rows: int = MAX_ROWS) -> list[dict[str, Any]]:
    """One row per (group, bucket) that has conversations: groups in code point order,
    the null group last; buckets oldest first. Raises `TooManyRows` past ``max_rows``
    before building any."""
    started = _floats(facts.started_at)
    if len(started) == 0:
        return []
    groups = np.array(facts.group, dtype=object).reshape(-1)
    missing = np.array([g is None for g in facts.group], dtype=bool)
    names, name_code = np.unique(np.where(missing, "", groups).astype(str),
                                 return_inverse=True)
    group_code = np.where(missing, len(names), name_code.reshape(-1))  # null last
    bucket_values, bucket_code = np.unique(bucket_starts(started, interval),
                                           return_inverse=True)
    cells, row_of = np.unique(group_code * len(bucket_values) + bucket_code.reshape(-1),
                              return_inverse=True)
    row_of = row_of.reshape(-1)
    rows = len(cells)
    if rows > max_rows:
        raise TooManyRows(rows, max_rows)

    conversations = np.bincount(row_of, minlength=rows)
    alert_row = row_of[np.array(facts.alert_of, dtype=np.int64)]
    alerts = np.bincount(alert_row, minlength=rows)
    escalated_conversation = np.bincount(np.array(facts.alert_of, dtype=np.int64),
                                         minlength=len(started)) > 0
    escalated = np.bincount(row_of, weights=escalated_conversation, minlength=rows)
    turns = np.bincount(row_of, weights=np.array(facts.customer_turns, dtype=np.float64),
                        minlength=rows)
    total = np.bincount(row_of, weights=_floats(facts.customer_total), minlength=rows)
    first, last = _floats(facts.first_compound), _floats(facts.last_compound)
    ended = _floats(facts.ended_at)
    figures = {
        "first_customer_compound": _distribution(first, row_of, rows),
        "last_customer_compound": _distribution(last, row_of, rows),
        "customer_compound_change": _distribution(last - first, row_of, rows),
        "time_to_acknowledge": _distribution(_floats(facts.time_to_acknowledge), alert_row,
                                             rows),
        "first_response": _distribution(_floats(facts.first_response), row_of, rows),
        "handle_time": _distribution(ended - started, row_of, rows),
    }
    by_rule = _alerts_by_rule(facts, row_of, rows)

    out = []
    for i, cell in enumerate(cells.tolist()):
        code, bucket = divmod(cell, len(bucket_values))
        n = int(conversations[i])
        out.append({
            "group": None if code == len(names) else str(names[code]),
            "bucket": None if interval is None else float(bucket_values[bucket]),
            "conversations": n,
            "customer_turns": int(turns[i]),
            "customer_compound_mean": float(total[i] / turns[i]) if turns[i] else None,
            "escalated": int(escalated[i]),
            "escalated_share": float(escalated[i] / n),
            "alerts": int(alerts[i]),
            "alerts_by_rule": by_rule[i],
            **{name: column[i] for name, column in figures.items()},
        })
    return out


def _alerts_by_rule(facts: Facts, row_of: Ints, rows: int) -> list[dict[str, int]]:
    """Per row: for each rule, how many alerts have a hit of it (an alert of several
    rules counts once for each)."""
    by_rule: list[dict[str, int]] = [{} for _ in range(rows)]
    if not facts.rule_ids:
        return by_rule
    rules, rule_code = np.unique(np.array(facts.rule_ids, dtype=str), return_inverse=True)
    pairs = row_of[np.array(facts.rule_of, dtype=np.int64)] * len(rules) + rule_code.reshape(-1)
    found, counts = np.unique(pairs, return_counts=True)
    for pair, count in zip(found.tolist(), counts.tolist(), strict=True):
        row, rule = divmod(pair, len(rules))
        by_rule[row][str(rules[rule])] = count
    return by_rule
