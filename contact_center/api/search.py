"""Full-text search for analysts: recorded turns, and whole conversations, by words,
phrases, AND / OR / NOT and prefixes, with filters, highlights and cursor pages."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from analytics.fulltext import (
    MAX_DEPTH,
    MAX_QUERY_TERMS,
    MIN_PREFIX,
    Node,
    QueryError,
    highlights,
    parse,
    snippet,
)
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, error
from contact_center.api.views import AlertStatus, ConversationsFound, TurnsFound
from contact_center.protocol import Channel, Role, Timestamp
from contact_center.stores import SEARCH_SECONDS, FullTextFilters, FullTextQuery, QueryTimeout
from monitoring.permissions import Permission, Principal
from monitoring.scope import Scope

router = APIRouter(tags=["analytics"], responses=COMMON)

MAX_LIMIT = 200

SYNTAX = f"""**Query** (`q`, 1 to 500 characters): words, `"quoted phrases"` and prefixes
(`refund*`, at least {MIN_PREFIX} letters), joined by `AND` (or a space), `OR` and `NOT`
(or a leading `-`), grouped with `( )`; `AND` binds tighter than `OR`. Operators are
upper case (`and`, `or`, `not` are words). A word is a run of letters and digits,
compared without case: `e-mail` is the phrase "e mail". No stemming (`refund*` finds
"refunded"). At most {MAX_QUERY_TERMS} terms and {MAX_DEPTH} nested groups; a query that
only excludes (`NOT refund`) is refused: 422 `validation_error` saying why.
See docs/analytics.md."""

TIMEOUT = error("query_timeout: the search ran past its time limit (narrow it); "
                "unavailable: the database is down")


class Search(BaseModel):
    """What both searches take (query parameters); an unknown one is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=500, description="The query (below).")
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, description="`next` of the previous page.")

    since: Timestamp | None = Field(default=None, description=(
        "Turns: received at or after. Conversations: started at or after."))
    until: Timestamp | None = Field(default=None, description="... before.")
    queue: str | None = None
    agent_id: str | None = None
    team: str | None = Field(default=None, description=(
        "Conversations of agents of this team or a team below it (an unknown team: none)."))
    channel: Channel | None = None
    role: Role | None = Field(default=None, description="Only turns of this role match.")
    sentiment_min: float | None = Field(default=None, ge=-1, le=1, description=(
        "The customer's mean turn sentiment (compound) at least this."))
    sentiment_max: float | None = Field(default=None, ge=-1, le=1)
    start_sentiment_min: float | None = Field(default=None, ge=-1, le=1, description=(
        "The customer's first turn's sentiment at least this."))
    start_sentiment_max: float | None = Field(default=None, ge=-1, le=1)
    end_sentiment_min: float | None = Field(default=None, ge=-1, le=1, description=(
        "The customer's last turn's sentiment at least this."))
    end_sentiment_max: float | None = Field(default=None, ge=-1, le=1)
    change_min: float | None = Field(default=None, ge=-2, le=2, description=(
        "Last minus first customer turn's sentiment at least this (-2 to 2)."))
    change_max: float | None = Field(default=None, ge=-2, le=2)
    escalated: bool | None = Field(default=None, description=(
        "true: raised an alert; false: raised none."))
    rule_id: str | None = Field(default=None, description=(
        "An alert of the conversation has a hit of this rule."))
    alert_status: AlertStatus | None = Field(default=None, description=(
        "An alert of the conversation is in this status."))
    handle_min_seconds: float | None = Field(default=None, ge=0, description=(
        "Ended conversations that lasted at least this long (ended_at - started_at)."))
    handle_max_seconds: float | None = Field(default=None, ge=0)

    def given(self) -> dict[str, Any]:
        """What was asked, for the audit log."""
        return {name: (value.timestamp() if name in ("since", "until") else value)
                for name, value in self if value is not None}


class TurnSearch(Search):
    sort: Literal["relevance", "newest"] = "relevance"


@router.get("/v1/search/turns", response_model=TurnsFound, responses={503: TIMEOUT},
            description=f"""Recorded turns holding the query, best first (`sort=relevance`,
the default) or newest first (`sort=newest`), each with where the query's terms are
(`highlights`) and a `snippet` around the first. Filters on the conversation are on it as
it is now. Only conversations in the user's scope. Page with `cursor` (the `next` of the
previous answer). Recorded in the audit log (`transcript.search`).

{SYNTAX}""")
async def search_turns(
    request: Request, search: Annotated[TurnSearch, Query()],
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> dict[str, Any]:
    query = await _query(request, principal, search, search.sort)
    async with audited(request, principal, "transcript.search",
                       details={"mode": "turns", **search.given()}) as outcome:
        hits = await _run(request.app.state.store.search_turns(query))
        outcome.details["hits"] = len(hits)
    for hit in hits:
        _highlight(hit, query.query)
    return {"hits": [{k: v for k, v in h.items() if k != "key"} for h in hits],
            "next": _next(hits, search.sort, search.limit)}


@router.get("/v1/search/conversations", response_model=ConversationsFound,
            responses={503: TIMEOUT}, description=f"""Conversations whose recorded turns,
together, hold the query (each term may be in another turn; `NOT` excludes conversations
with a turn holding it), newest first, each with how many of its turns hold a term and the
first three of them, highlighted. Filters as `GET /v1/search/turns`; `since` and `until`
are on when the conversation started. Recorded in the audit log (`transcript.search`).

{SYNTAX}""")
async def search_conversations(
    request: Request, search: Annotated[Search, Query()],
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> dict[str, Any]:
    query = await _query(request, principal, search, "conversations")
    async with audited(request, principal, "transcript.search",
                       details={"mode": "conversations", **search.given()}) as outcome:
        found = await _run(request.app.state.store.search_conversations(query))
        outcome.details["hits"] = len(found)
    for conversation in found:
        for turn in conversation["matches"]:
            _highlight(turn, query.query)
    return {"conversations": [{k: v for k, v in c.items() if k != "key"} for c in found],
            "next": _next(found, "conversations", search.limit)}


async def _query(request: Request, principal: Principal, f: Search,
                 sort: str) -> FullTextQuery:
    """``sort``: the turns' ("relevance", "newest"), or "conversations"."""
    try:
        node = parse(f.q)
    except QueryError as exc:
        raise HTTPException(422, {"type": "error", "code": "validation_error",
                                  "message": f"q: {exc}"}) from None
    team = None
    if f.team is not None:
        directory = await request.app.state.access.directory()
        team = directory.within(Scope(teams=frozenset([f.team]), queues=frozenset()))
    sentiment = {name: (low, high) for name, low, high in (
        ("mean", f.sentiment_min, f.sentiment_max),
        ("start", f.start_sentiment_min, f.start_sentiment_max),
        ("end", f.end_sentiment_min, f.end_sentiment_max),
        ("change", f.change_min, f.change_max)) if low is not None or high is not None}
    return FullTextQuery(
        query=node, since=f.since.timestamp() if f.since else None,
        until=f.until.timestamp() if f.until else None, role=f.role, sort=sort,
        after=_after(f.cursor, sort), limit=f.limit,
        filters=FullTextFilters(
            queue=f.queue, agent_id=f.agent_id, channel=f.channel, team=team,
            sentiment=sentiment, handle_seconds=(f.handle_min_seconds, f.handle_max_seconds),
            escalated=f.escalated, rule_id=f.rule_id, alert_status=f.alert_status,
            within=principal.within))


async def _run(search: Any) -> list[dict[str, Any]]:
    try:
        found: list[dict[str, Any]] = await search
    except QueryTimeout:
        raise HTTPException(503, {"type": "error", "code": "query_timeout", "message": (
            f"the search ran past {SEARCH_SECONDS:g} s and was stopped; narrow it "
            "(since, until, queue, agent_id, or more specific words)")}) from None
    return found


def _highlight(turn: dict[str, Any], node: Node) -> None:
    spans = highlights(turn["text"] or "", node)
    text, inside = snippet(turn["text"] or "", spans)
    turn["highlights"] = [list(s) for s in spans]
    turn["snippet"] = {"text": text, "highlights": [list(s) for s in inside]}


def _next(rows: list[dict[str, Any]], kind: str, limit: int) -> str | None:
    """The cursor of the page after ``rows``; None when it was the last."""
    if len(rows) < limit:
        return None
    return base64.urlsafe_b64encode(json.dumps([kind, rows[-1]["key"]]).encode()).decode()


# A page's sort key (`contact_center.stores.fulltext`): numbers, then ids.
_KEY_TYPES: dict[str, list[type]] = {"relevance": [float, float, str, str],
                                     "newest": [float, int, str, str],
                                     "conversations": [float, str]}


def _after(cursor: str | None, kind: str) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        given, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if given != kind or [type(v) for v in key] != _KEY_TYPES[kind]:
            raise ValueError(kind)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(422, {"type": "error", "code": "validation_error", "message": (
            "cursor: not a cursor of this search (use the `next` it answered, with the "
            "same sort)")}) from None
    return key
