"""Transcripts for analysts: one recorded conversation, and keyword search."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from analytics.rolling import timeline
from analytics.search import MAX_TERMS, parse_terms
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.errors import in_time
from contact_center.api.openapi import COMMON, error
from contact_center.api.views import SearchResults, Transcript
from contact_center.protocol import Timestamp
from contact_center.stores import SEARCH_SECONDS, AuditQuery, SearchQuery
from monitoring.audit import OK, monitoring_sessions
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["analytics"], responses=COMMON)

MONITORS_SHOWN = 100  # monitoring sessions shown with a transcript, the newest
MAX_OFFSET = 1_000_000  # deeper pages: narrow the search (since, until, queue) instead

# The one statement of what a search finds; docs/protocol.md says the same.
SEARCH_SEMANTICS = f"""Find recorded turns by keywords, the same way on every store.

- **Terms:** `q` is split at whitespace; a `"quoted phrase"` is one term, spaces included.
  1 to {MAX_TERMS} terms (else 422 `validation_error`).
- **Match:** a turn matches when its recorded text contains *every* term as a substring,
  ignoring case: each character is lowercased (Unicode: `voice` finds `Invoice`, `école`
  finds `ÉCOLE`). `%`, `_` and `\\` are plain characters. Unrecorded turns (`text: null`)
  never match.
- **Per turn:** each hit is one turn (a final segment), not a conversation. All the terms
  must be in the same turn; a conversation appears once for each turn that matches.
- **Scope:** only conversations in the user's scope (docs/security.md#scope), as they
  are now (after any transfer).
- **Filters:** `since` ≤ `at` < `until`, where `at` is when the service received the turn
  (not the connector's `started_at`; a timestamp without a zone is UTC). `queue` and
  `agent_id` are the conversation's (after any transfer); `role` is the turn's.
- **Order and pages:** newest `at` first, then the later `seq`, then conversation id and
  segment id (code point order); `limit` and `offset` page through that order. Turns
  received meanwhile shift the pages: give every page the same `until` (say, when you
  asked for the first) to page a fixed set.
- A search running past {SEARCH_SECONDS:g} s is stopped and answered 503 `query_timeout`:
  narrow it."""


@router.get("/v1/transcripts/{conversation_id}", response_model=Transcript,
            responses={404: error("unknown_conversation: no such conversation")})
async def get_transcript(request: Request, conversation_id: str,
                         principal: Principal = require(Permission.TRANSCRIPTS_READ),
                         ) -> dict[str, Any]:
    """A conversation in the user's scope: every turn's scores, its alerts with their
    history, its events (transfers among them), who monitored it (from the audit log) and
    the customer's sentiment timeline. Turns whose role the recording policy did not keep
    have ``text: null``. Recorded in the audit log (``transcript.read``) before it is
    answered."""
    store = request.app.state.store
    async with audited(request, principal, "transcript.read", "conversation",
                       conversation_id):
        conversation = await store.get_conversation(conversation_id)
        if conversation is None or not principal.sees(conversation["queue"],
                                                      conversation["agent_id"]):
            raise HTTPException(404, {"type": "error", "code": "unknown_conversation",
                                      "message": f"no conversation {conversation_id}"})
    for alert in conversation["alerts"]:
        alert["history"] = await store.alert_history(alert["id"])
    # (Refused attempts are left out in the query: they cannot crowd out sessions.)
    monitoring = [entry for action in ("monitor.start", "monitor.end")
                  for entry in await store.list_audit(AuditQuery(
                      action=action, target_type="conversation", target_id=conversation_id,
                      result=OK, limit=MONITORS_SHOWN))]
    conversation["monitors"] = monitoring_sessions(monitoring)[-MONITORS_SHOWN:]
    conversation["timeline"] = timeline(conversation["turns"],
                                        request.app.state.settings.rolling)
    return conversation


@router.get("/v1/transcripts", response_model=SearchResults, description=SEARCH_SEMANTICS,
            responses={503: error("query_timeout: the search ran past its time limit "
                                  "(narrow it); unavailable: the database is down")})
async def search_transcripts(
    request: Request,
    q: str = Query(min_length=1, max_length=500,
                   description='Terms, each a substring of the same turn; "quoted phrases" '
                               'too.'),
    since: Timestamp | None = Query(default=None, description="Turns received at or after."),
    until: Timestamp | None = Query(default=None, description="Turns received before."),
    queue: str | None = None, agent_id: str | None = None,
    role: str | None = Query(default=None, pattern="^(customer|agent|bot|supervisor)$"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
    principal: Principal = require(Permission.CONTACT_SEARCH),
) -> dict[str, Any]:
    terms = parse_terms(q)
    if not terms or len(terms) > MAX_TERMS:
        raise HTTPException(422, {"type": "error", "code": "validation_error", "message": (
            f"q has {len(terms)} search terms; give 1 to {MAX_TERMS}")})
    query = SearchQuery(terms=terms, since=since.timestamp() if since else None,
                        until=until.timestamp() if until else None, queue=queue,
                        agent_id=agent_id, role=role, limit=limit, offset=offset,
                        within=principal.within)
    async with audited(request, principal, "transcript.search",
                       details=_searched(query)) as outcome:
        hits = await in_time(request.app.state.store.search(query), "the search",
                             "since, until, queue, agent_id, role, or more specific words")
        outcome.details["hits"] = len(hits)
    return {"terms": terms, "hits": hits}


def _searched(query: SearchQuery) -> dict[str, Any]:
    """What the audit log keeps of a search: its terms and every filter given."""
    return {name: value for name, value in (
        ("terms", query.terms), ("since", query.since), ("until", query.until),
        ("queue", query.queue), ("agent_id", query.agent_id), ("role", query.role),
        ("limit", query.limit), ("offset", query.offset)) if value is not None}
