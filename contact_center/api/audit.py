"""The audit log (docs/audit.md): read it a page at a time, newest first, filtered, or
export it as JSON Lines. No route changes or deletes an entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from contact_center.api.audited import audit
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed
from contact_center.protocol import Timestamp
from contact_center.stores import AuditQuery, Store
from monitoring import codec
from monitoring.audit import entry_fields
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["admin"], responses=COMMON)

PAGE_MAX = 1000  # entries per page, at most
EXPORT_MAX = 100_000  # entries per export, at most (export again from the last one's id)
EXPORT_PAGE = 1000  # an export reads this many entries at a time (its memory stays flat)
JSON_LINES = "application/jsonl"


class AuditEntryView(Closed):
    """One entry of the audit log."""

    id: int = Field(description="From 1, in the order entries were written, no gaps.")
    at: float = Field(description="When it happened (Unix time).")
    actor: str | None = Field(description="The username; cli: the command line; null: "
                                          "unauthenticated.")
    action: str = Field(description="What was done: see docs/audit.md for every action.")
    target_type: str | None = Field(description="e.g. conversation, rule, alert, user, "
                                                "token, webhook, route.")
    target_id: str | None
    result: str = Field(description="ok, or the error code answered.")
    source: str | None = Field(description="The client address; local: the command line.")
    request_id: str | None = Field(description="As in the logs and X-Request-ID.")
    details: dict[str, Any] = Field(description="What else the action records (a search's "
                                                "terms and filters, a rule's versions, …).")
    prev_hash: str = Field(description="The previous entry's hash.")
    hash: str = Field(description="sha256 over prev_hash and this entry's fields: see "
                                  "docs/audit.md#the-chain.")


class AuditEntries(Closed):
    entries: list[AuditEntryView] = Field(description="Newest first.")
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null "
                                                "on the last.")


EXPORT = {"description": f"format=jsonl: one entry (AuditEntryView) per line, newest "
                         f"first, at most {EXPORT_MAX:,}",
          "schema": {"type": "string"}}


@router.get("/v1/audit", response_model=AuditEntries,
            responses={200: {"content": {JSON_LINES: EXPORT}}})
async def read_audit(
    request: Request,
    actor: str | None = Query(default=None, max_length=256),
    action: str | None = Query(default=None, max_length=256,
                               description="e.g. transcript.read; see docs/audit.md."),
    target_type: str | None = Query(default=None, max_length=256),
    target_id: str | None = Query(default=None, max_length=256),
    since: Timestamp | None = Query(default=None, description="At or after."),
    until: Timestamp | None = Query(default=None, description="Before."),
    cursor: int | None = Query(default=None, ge=1, le=2**62,
                               description="The previous page's next_cursor: entries "
                                           "older than it."),
    limit: int = Query(default=100, ge=1, le=PAGE_MAX, description="Entries per page "
                                                                   "(json)."),
    format: Literal["json", "jsonl"] = Query(
        default="json", description=f"jsonl: every entry that matches (up to "
                                    f"{EXPORT_MAX:,}) as JSON Lines, itself recorded as "
                                    "audit.export."),
    principal: Principal = require(Permission.AUDIT_READ, unscoped=True),
) -> Any:
    """The audit log, newest first, filtered; a page at a time, or exported."""
    query = AuditQuery(actor=actor, action=action, target_type=target_type,
                       target_id=target_id, since=since.timestamp() if since else None,
                       until=until.timestamp() if until else None, before=cursor,
                       limit=limit)
    store: Store = request.app.state.store
    if format == "jsonl":
        asked = {k: v for k, v in (("actor", actor), ("action", action),
                                   ("target_type", target_type), ("target_id", target_id),
                                   ("since", query.since), ("until", query.until),
                                   ("cursor", cursor)) if v is not None}
        await audit(request, principal, "audit.export", details=asked)
        return StreamingResponse(exported(store, query), media_type=JSON_LINES)
    found = await store.list_audit(query)
    return {"entries": [entry_fields(e) for e in found],
            "next_cursor": found[-1].id if len(found) == limit else None}


async def exported(store: Store, query: AuditQuery) -> AsyncIterator[bytes]:
    """Up to EXPORT_MAX entries that match ``query``, newest first, a page at a time."""
    sent = 0
    while sent < EXPORT_MAX:
        wanted = min(EXPORT_PAGE, EXPORT_MAX - sent)
        page = await store.list_audit(replace(query, limit=wanted))
        if page:
            yield "".join(codec.dumps(entry_fields(e)) + "\n" for e in page).encode()
        sent += len(page)
        if len(page) < wanted:
            return
        query = replace(query, before=page[-1].id)
