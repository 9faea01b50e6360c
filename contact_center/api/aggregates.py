"""Aggregates for analysts: recorded conversations counted and measured per queue, agent
or team and time bucket (docs/analytics.md#aggregates)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from analytics import aggregates
from analytics.aggregates import (
    MAX_CONVERSATIONS,
    MAX_ROWS,
    GroupBy,
    Interval,
    TooManyRows,
    buckets_spanned,
)
from analytics.export import as_table, csv_lines
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.errors import in_time
from contact_center.api.openapi import COMMON, error
from contact_center.api.search import CSV, JSON_LINES
from contact_center.api.views import ConversationAggregates
from contact_center.protocol import Channel, Timestamp
from contact_center.stores import SEARCH_SECONDS, AggregateQuery
from monitoring import codec
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["analytics"], responses=COMMON)

# The one statement of what the route answers; docs/analytics.md says the same at length.
AGGREGATES = f"""Recorded conversations counted and measured per group and time bucket.

- **Which:** conversations in the user's scope (docs/security.md#scope) that *started* in
  [`since`, `until`) (a timestamp without a zone is UTC), in `queue`, of `agent_id`, on
  `channel` (queue and agent as they are now, after any transfer).
- **Groups:** `group_by` `queue`, `agent`, `team` (the agent's *direct* team in the
  directory; no agent, or one without a team: the null group) or `none` (one group,
  null).
- **Buckets:** `interval` `hour`, `day` or `week` (weeks start Monday 00:00 UTC) by the
  conversation's start, in UTC; absent: no buckets (`bucket` null).
- **Percentiles** are nearest-rank (the ⌈p·n/100⌉-th smallest value), on every store.
- **Limits** (else 422 `validation_error`): at most {MAX_ROWS:,} (group, bucket) rows
  (refused before reading when [since, until) alone spans more buckets), and at most
  {MAX_CONVERSATIONS:,} conversations aggregated: narrow the range or filter.
- Running past {SEARCH_SECONDS:g} s it is stopped and answered 503 `query_timeout`.
- Recorded in the audit log (`analytics.query`) with its parameters."""


def _refused(message: str) -> HTTPException:
    return HTTPException(422, {"type": "error", "code": "validation_error",
                               "message": message})


@router.get("/v1/analytics/conversations", response_model=ConversationAggregates,
            description=AGGREGATES,
            responses={200: {"content": {JSON_LINES: {"schema": {"type": "string"}},
                                         CSV: {"schema": {"type": "string"}}}},
                       503: error("query_timeout: the query ran past its time limit "
                                  "(narrow it); unavailable: the database is down")})
async def aggregate_conversations(
    request: Request,
    group_by: GroupBy = Query(default="queue", description="What a row's group is."),
    interval: Interval | None = Query(default=None, description="Time buckets (UTC) by "
                                                                "the conversation's start."),
    since: Timestamp | None = Query(default=None,
                                    description="Conversations started at or after."),
    until: Timestamp | None = Query(default=None, description="Conversations started before."),
    queue: str | None = None, agent_id: str | None = None, channel: Channel | None = None,
    format: Literal["json", "jsonl", "csv"] = Query(default="json", description=(
        "jsonl: a first line {\"group_by\", \"interval\", \"conversations\", \"count\"} "
        "then a row per line; csv: a header (nested fields joined by dots, e.g. "
        "first_customer_compound.mean, alerts_by_rule.churn) then a row per line.")),
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> Any:
    start, end = (since.timestamp() if since else None), (until.timestamp() if until else None)
    if start is not None and end is not None:
        if end <= start:
            raise _refused("until must be after since")
        if interval is not None and buckets_spanned(start, end, interval) > MAX_ROWS:
            raise _refused(f"[since, until) spans {buckets_spanned(start, end, interval):,} "
                           f"{interval} buckets, more than the {MAX_ROWS:,} rows an answer "
                           f"holds; narrow the range or take a longer interval")
    query = AggregateQuery(group_by=group_by, since=start, until=end, queue=queue,
                           agent_id=agent_id, channel=channel, limit=MAX_CONVERSATIONS,
                           within=principal.within)
    async with audited(request, principal, "analytics.query",
                       details=_asked(query, interval, format)) as outcome:
        facts = await in_time(request.app.state.store.aggregate(query), "the query",
                              "since, until, queue, agent_id, channel")
        if facts.truncated:
            raise _refused(f"more than {MAX_CONVERSATIONS:,} conversations match; narrow "
                           "the range (since, until) or filter (queue, agent_id, channel)")
        try:  # (numpy, off the event loop: a million conversations take a while)
            rows = await asyncio.to_thread(aggregates.aggregate, facts, interval, MAX_ROWS)
        except TooManyRows as exc:
            raise _refused(f"the answer would hold {exc.rows:,} rows, more than "
                           f"{exc.limit:,}; narrow the range, take a longer interval, group "
                           "by less or filter") from None
        outcome.details |= {"conversations": len(facts.started_at), "rows": len(rows)}
    answer = {"group_by": group_by, "interval": interval,
              "conversations": len(facts.started_at)}
    if format == "csv":  # (up to 10,000 rows: made off the event loop)
        table = await asyncio.to_thread(lambda: csv_lines(as_table(rows)))
        return Response(table, media_type=CSV, headers={"X-Total-Count": str(len(rows))})
    if format == "jsonl":
        lines = [answer | {"count": len(rows)}, *rows]
        body = await asyncio.to_thread(lambda: "".join(codec.dumps(x) + "\n" for x in lines))
        return Response(body, media_type=JSON_LINES, headers={"X-Total-Count": str(len(rows))})
    return answer | {"rows": rows}


def _asked(query: AggregateQuery, interval: Interval | None, format: str) -> dict[str, Any]:
    """What the audit log keeps of a query: its grouping and every filter given."""
    return {name: value for name, value in (
        ("group_by", query.group_by), ("interval", interval), ("since", query.since),
        ("until", query.until), ("queue", query.queue), ("agent_id", query.agent_id),
        ("channel", query.channel)) if value is not None} | {"format": format}
