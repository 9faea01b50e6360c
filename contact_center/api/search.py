"""Full-text search for analysts: recorded turns, and whole conversations, by words,
phrases, AND / OR / NOT and prefixes, with filters, highlights and cursor pages."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette import types

from analytics.export import (
    CONVERSATION_COLUMNS,
    TURN_COLUMNS,
    csv_lines,
    export_row,
)
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
from contact_center.api.errors import in_time
from contact_center.api.openapi import COMMON, error
from contact_center.api.views import AlertStatus, ConversationsFound, TurnsFound
from contact_center.protocol import Channel, Role, Timestamp
from contact_center.stores import (
    FullTextFilters,
    FullTextQuery,
    Store,
)
from monitoring import codec
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

NARROW = "since, until, queue, agent_id, or more specific words"  # a slow search
EXPORTS_AT_ONCE = 2  # per API node
EXPORT_BUSY_RETRY_SECONDS = 10
JSON_LINES, CSV = "application/jsonl", "text/csv; charset=utf-8"

TIMEOUT = error("query_timeout: the search ran past its time limit (narrow it); "
                "unavailable: the database is down")


class Streamed(StreamingResponse):
    """A streamed answer that calls ``release`` once it ends, however it ends (also when
    the client left before the body started, and the body never ran). No media type of
    its own: the OpenAPI document then declares the formats the route gives, and its
    errors as JSON."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None],
                 **options: Any) -> None:
        super().__init__(content, **options)
        self.release = release

    async def __call__(self, scope: types.Scope, receive: types.Receive,
                       send: types.Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


class Found(BaseModel):
    """The query and filters every search and export takes (query parameters); an
    unknown one is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=500, description="The query (below).")

    since: Timestamp | None = Field(default=None, description=(
        "Turns: received at or after. Conversations: started at or after."))
    until: Timestamp | None = Field(default=None, description=(
        "... before. Conversations: started before, and only turns received before count."))
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


class Search(Found):
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=2000,
                               description="`next` of the previous page.")


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
        hits = await in_time(request.app.state.store.search_turns(query), "the search",
                             NARROW)
        outcome.details["hits"] = len(hits)
    await asyncio.to_thread(_highlight_all, hits, query.query)  # (long turns: not on the loop)
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
        found = await in_time(request.app.state.store.search_conversations(query),
                              "the search", NARROW)
        outcome.details["hits"] = len(found)
    await asyncio.to_thread(_highlight_all, [t for c in found for t in c["matches"]],
                            query.query)
    return {"conversations": [{k: v for k, v in c.items() if k != "key"} for c in found],
            "next": _next(found, "conversations", search.limit)}


class Export(Found):
    format: Literal["csv", "jsonl"] = Field(default="jsonl", description=(
        "jsonl: the count, then a row per line; csv: a header, then a row per line (the "
        "count in the X-Total-Count header)."))


def _exported_answers(what: str) -> dict[int | str, dict[str, Any]]:
    """What an export route answers: its two formats, streamed, or a 503."""
    return {200: {"content": {JSON_LINES: {"schema": {"type": "string"}},
                              CSV: {"schema": {"type": "string"}}},
                  "description": f"Every {what} found, streamed.",
                  "headers": {"X-Total-Count": {"description": "How many rows follow.",
                                                "schema": {"type": "integer"}}}},
            503: error("busy: two exports are running on this node (retry after "
                       "Retry-After seconds); query_timeout: counting ran past its time "
                       "limit (narrow it)")}


@router.get("/v1/search/turns/export", status_code=200, response_class=Streamed,
            responses=_exported_answers("turn"),
            description=f"""Every turn `GET /v1/search/turns` finds (the same query and
filters; `limit`, `cursor` and `sort` aside), newest first, streamed in constant memory:
as JSON Lines, a first line `{{"count": n}}` then one turn per line; or as CSV
(`format=csv`), a header line then one turn per line. `X-Total-Count` says how many rows
follow. The set is fixed when the export starts (turns received later are left out).
{EXPORTS_AT_ONCE} exports at a time per API node (another: 503 `busy`). Recorded in the
audit log (`transcript.export`) before the first row is sent.

{SYNTAX}""")
async def export_turns(
    request: Request, export: Annotated[Export, Query()],
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> StreamingResponse:
    return await _export(request, principal, export, "turns")


@router.get("/v1/search/conversations/export", status_code=200, response_class=Streamed,
            responses=_exported_answers("conversation"),
            description=f"""Every conversation `GET /v1/search/conversations` finds, as
its metadata and `matched_turns` (without the matching turns themselves), newest first,
streamed like `GET /v1/search/turns/export`. Recorded as `transcript.export`.

{SYNTAX}""")
async def export_conversations(
    request: Request, export: Annotated[Export, Query()],
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> StreamingResponse:
    return await _export(request, principal, export, "conversations")


async def _export(request: Request, principal: Principal, export: Export,
                  mode: str) -> StreamingResponse:
    query = await _query(request, principal, export,
                         "newest" if mode == "turns" else "conversations")
    query.until = min(math.inf if query.until is None else query.until, time.time())
    store = request.app.state.store
    running = getattr(request.app.state, "exports_running", 0)
    if running >= EXPORTS_AT_ONCE:
        raise HTTPException(503, {"type": "error", "code": "busy", "message": (
            f"{EXPORTS_AT_ONCE} exports are running on this node; retry later")},
            headers={"Retry-After": str(EXPORT_BUSY_RETRY_SECONDS)})
    request.app.state.exports_running = running + 1
    try:
        async with audited(request, principal, "transcript.export",
                           details={"mode": mode, **export.given()}) as outcome:
            total = await in_time(store.count_found(query, mode), "counting", NARROW)
            outcome.details["count"] = total
    except BaseException:
        request.app.state.exports_running -= 1
        raise

    def release() -> None:
        request.app.state.exports_running -= 1

    return Streamed(exported(store, query, mode, export.format, total), release,
                    headers={"X-Total-Count": str(total)},
                    media_type=CSV if export.format == "csv" else JSON_LINES)


async def _query(request: Request, principal: Principal, f: Found,
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
        after=_after(f.cursor, sort) if isinstance(f, Search) else None,
        limit=f.limit if isinstance(f, Search) else 0,
        filters=FullTextFilters(
            queue=f.queue, agent_id=f.agent_id, channel=f.channel, team=team,
            sentiment=sentiment, handle_seconds=(f.handle_min_seconds, f.handle_max_seconds),
            escalated=f.escalated, rule_id=f.rule_id, alert_status=f.alert_status,
            within=principal.within))


def _highlight_all(turns: list[dict[str, Any]], node: Node) -> None:
    for turn in turns:
        _highlight(turn, node)


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
        if given != kind or [type(v) for v in key] != _KEY_TYPES[kind] or \
                not all(map(_storable, key)):
            raise ValueError(kind)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise HTTPException(422, {"type": "error", "code": "validation_error", "message": (
            "cursor: not a cursor of this search (use the `next` it answered, with the "
            "same sort)")}) from None
    return key


def _storable(value: Any) -> bool:
    """A key value every store compares without error: a finite number in range, or an
    id as ids are (no NUL, valid UTF-8, bounded)."""
    if isinstance(value, str):
        return len(value) <= 1000 and "\x00" not in value and _utf8(value)
    limit = 2**31 if isinstance(value, int) else 1e15  # (seq is a 32-bit integer)
    return math.isfinite(value) and abs(value) < limit


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def exported(store: Store, query: FullTextQuery, mode: str, fmt: str,
                   total: int) -> AsyncIterator[bytes]:
    """Everything ``query`` finds, at most ``total`` rows (the set counted), a page at a
    time from one statement: memory does not grow with the rows."""
    columns = TURN_COLUMNS if mode == "turns" else CONVERSATION_COLUMNS
    yield (codec.dumps({"count": total}) + "\n" if fmt == "jsonl"
           else csv_lines([list(columns)])).encode()
    sent = 0
    pages = store.export_found(query, mode)
    try:
        async for page in pages:
            rows = [export_row(found, mode) for found in page[:total - sent]]
            yield ("".join(codec.dumps(r) + "\n" for r in rows) if fmt == "jsonl"
                   else csv_lines([[r[c] for c in columns] for r in rows])).encode()
            sent += len(rows)
            if sent >= total:
                return
    finally:
        await pages.aclose()  # type: ignore[attr-defined]
