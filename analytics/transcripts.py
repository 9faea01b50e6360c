"""Transcript queries for analysts: one recorded conversation, and keyword search."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from contact_center.protocol import ErrorReply
from contact_center.store import SEARCH_SECONDS, QueryTimeout, SearchQuery
from monitoring.auth import require
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["analytics"])

_QUOTED_OR_WORD = re.compile(r'"([^"]+)"|(\S+)')


def parse_terms(q: str) -> list[str]:
    """Split a query into terms; "quoted phrases" stay whole. Every term must match."""
    return [phrase or word for phrase, word in _QUOTED_OR_WORD.findall(q)]


MAX_OFFSET = 1_000_000  # deeper pages: narrow the search (since, until, queue) instead


@router.get("/v1/transcripts/{conversation_id}")
async def get_transcript(request: Request, conversation_id: str,
                         _: Principal = require(Permission.TRANSCRIPTS_READ)) -> dict[str, Any]:
    """A conversation with every turn's scores, its alerts and events. Turns whose role
    the recording policy did not keep have ``text: null``."""
    conversation = await request.app.state.store.get_conversation(conversation_id)
    if conversation is None:
        raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                  "message": f"no conversation {conversation_id}"})
    return conversation


@router.get("/v1/transcripts", responses={503: {
    "model": ErrorReply, "description": "query_timeout: the search ran past its time limit; "
                                        "or unavailable: the database is down"}})
async def search_transcripts(
    request: Request,
    q: str = Query(min_length=1, max_length=500, description='Words; "quoted phrases" too.'),
    since: datetime | None = None, until: datetime | None = None,
    queue: str | None = None, agent_id: str | None = None,
    role: str | None = Query(default=None, pattern="^(customer|agent|bot)$"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
    _: Principal = require(Permission.CONTACT_SEARCH),
) -> dict[str, Any]:
    """Keyword search over recorded turns (case-insensitive substring match)."""
    terms = parse_terms(q)
    if not terms:
        raise HTTPException(422, {"type": "error", "code": "validation_error",
                                  "message": "q has no search terms"})
    query = SearchQuery(terms=terms, since=since.timestamp() if since else None,
                        until=until.timestamp() if until else None, queue=queue,
                        agent_id=agent_id, role=role, limit=limit, offset=offset)
    try:
        hits = await request.app.state.store.search(query)
    except QueryTimeout:
        raise HTTPException(503, {"type": "error", "code": "query_timeout", "message": (
            f"the search ran past {SEARCH_SECONDS:g} s and was stopped; narrow it (since, "
            "until, queue, agent_id, role, or more specific words)")}) from None
    return {"terms": terms, "hits": hits}
