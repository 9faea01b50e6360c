"""The SQL of the analysts' aggregates, shared by both stores: which conversations, and
the facts `analytics.aggregates` groups (docs/analytics.md#aggregates).

Three statements, each starting from the same ``picked`` conversations (numbered from 0
by start, then id, so the other two name a conversation by its number): a row per
conversation, per alert, and per rule of an alert. SQL does the joins, filters and
per-conversation facts; the grouping and percentiles are numpy's, the same on both stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from analytics.aggregates import Facts
from contact_center.stores import AggregateQuery
from contact_center.stores.rows import OneOf, within_clause

# The group of a conversation: its queue or agent now (after any transfer), its agent's
# direct team in the directory (no agent, or one not in it: the null group), or one group.
GROUPS = {"queue": "c.queue", "agent": "c.agent_id", "team": "a.team",
          "none": "CAST(NULL AS TEXT)"}


def picked(q: AggregateQuery, mark: Callable[[int], str],
           one_of: OneOf) -> tuple[str, list[Any]]:
    """The conversations aggregated, at most ``q.limit + 1`` (one more tells there were
    more): a CTE body of id, grp, started_at, ended_at and n; and its arguments
    (``mark(n)``: the driver's nth placeholder)."""
    clauses, args = ["1 = 1"], list[Any]()
    for clause, value in (("c.started_at >= {}", q.since), ("c.started_at < {}", q.until),
                          ("c.queue = {}", q.queue), ("c.agent_id = {}", q.agent_id),
                          ("c.channel = {}", q.channel)):
        if value is not None:
            args.append(value)
            clauses.append(clause.format(mark(len(args))))
    within, more = within_clause(q.within, "c.queue", "c.agent_id", one_of, len(args) + 1)
    clauses.append(within)
    args += more
    team = "LEFT JOIN agents a ON a.id = c.agent_id" if q.group_by == "team" else ""
    return (f"SELECT c.id, {GROUPS[q.group_by]} AS grp, c.started_at, c.ended_at, "
            f"row_number() OVER (ORDER BY c.started_at, c.id) - 1 AS n "
            f"FROM conversations c {team} WHERE {' AND '.join(clauses)} "
            f"ORDER BY c.started_at, c.id LIMIT {int(q.limit) + 1}"), args


def conversations(picked_sql: str) -> str:
    """A row per conversation, in its order: n, grp, started_at, ended_at, the compound
    of the customer's first and last turns (earliest and latest received, then by seq),
    the sum and count of all the customer's turns' compounds, and the seconds from the
    first customer turn to the first agent turn received after it."""
    return f"""
WITH picked AS ({picked_sql}),
customer AS (
    SELECT s.conversation_id, s.compound, s.received_at, s.seq,
           row_number() OVER (PARTITION BY s.conversation_id
                              ORDER BY s.received_at, s.seq) AS i,
           row_number() OVER (PARTITION BY s.conversation_id
                              ORDER BY s.received_at DESC, s.seq DESC) AS j
    FROM picked p JOIN segments s ON s.conversation_id = p.id
    WHERE s.role = 'customer'),
firsts AS (SELECT conversation_id, compound, received_at, seq FROM customer WHERE i = 1),
lasts AS (SELECT conversation_id, compound FROM customer WHERE j = 1),
totals AS (SELECT conversation_id, sum(compound) AS total, count(*) AS turns
           FROM customer GROUP BY conversation_id),
answers AS (
    SELECT f.conversation_id, min(s.received_at) - f.received_at AS first_response
    FROM firsts f JOIN segments s ON s.conversation_id = f.conversation_id
    WHERE s.role = 'agent' AND (s.received_at > f.received_at
                                OR (s.received_at = f.received_at AND s.seq > f.seq))
    GROUP BY f.conversation_id, f.received_at)
SELECT p.n, p.grp, p.started_at, p.ended_at, f.compound AS first_compound,
       l.compound AS last_compound, coalesce(t.total, 0) AS customer_total,
       coalesce(t.turns, 0) AS customer_turns, a.first_response
FROM picked p
LEFT JOIN firsts f ON f.conversation_id = p.id
LEFT JOIN lasts l ON l.conversation_id = p.id
LEFT JOIN totals t ON t.conversation_id = p.id
LEFT JOIN answers a ON a.conversation_id = p.id
ORDER BY p.n"""


def alerts(picked_sql: str) -> str:
    """A row per alert of the picked conversations: its conversation's n, and the seconds
    from its first raise to its first acknowledgement (null: never acknowledged), from
    its events: a later escalation or reopening clears the alert's own
    ``acknowledged_at``, not when it was first acknowledged."""
    return f"""
WITH picked AS ({picked_sql})
SELECT p.n, (SELECT min(e.at) FROM alert_events e
             WHERE e.alert_id = x.id AND e.type = 'alert.acknowledged') - x.raised_at
       AS time_to_acknowledge
FROM picked p JOIN alerts x ON x.conversation_id = p.id"""


def rules(picked_sql: str, each_rule: str) -> str:
    """A row per (alert, rule it has a hit of): its conversation's n and the rule id.
    ``each_rule``: the driver's join of ``r(value)``, each id of alert ``x``'s
    ``rule_ids`` (a legacy alert, without a document: its one ``rule_id``)."""
    return f"""
WITH picked AS ({picked_sql})
SELECT p.n, r.value AS rule_id
FROM picked p JOIN alerts x ON x.conversation_id = p.id {each_rule}"""


def facts(conversation_rows: Sequence[Any], alert_rows: Sequence[Any],
          rule_rows: Sequence[Any]) -> Facts:
    """The rows of the three statements as columns (either driver's rows, by position)."""
    c = conversation_rows
    return Facts(
        group=[r[1] for r in c], started_at=[r[2] for r in c], ended_at=[r[3] for r in c],
        first_compound=[r[4] for r in c], last_compound=[r[5] for r in c],
        customer_total=[r[6] for r in c], customer_turns=[r[7] for r in c],
        first_response=[r[8] for r in c],
        alert_of=[r[0] for r in alert_rows], time_to_acknowledge=[r[1] for r in alert_rows],
        rule_of=[r[0] for r in rule_rows], rule_ids=[r[1] for r in rule_rows])
