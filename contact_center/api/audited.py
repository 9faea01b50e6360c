"""Recording what a request did in the audit log (docs/audit.md): the one call a route
makes. The actor is the principal's username, the source the client's address, the
request id the one in the logs and the ``X-Request-ID`` header.

- ``await audit(request, principal, "transcript.read", "conversation", cid)``: record it
  and wait until it is durable (a 503 ``unavailable`` if it cannot be), before answering;
- ``async with audited(request, principal, "rule.delete", "rule", rule_id):``: the same
  around a block, whose result is ``ok`` or the code of the HTTP error it raised;
- ``audit_soon(...)``: record without waiting (failed authorisation only: anyone can
  cause it at will, see `contact_center.audit_writer`); ``audit_counted``: only count it
  (failures from an address already slowed down).

A new action goes in `monitoring.audit.ACTIONS` and docs/audit.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from contact_center.audit_writer import AuditUnavailable, AuditWriter
from contact_center.logs import request_id
from monitoring.audit import OK, AuditEntry, make_entry
from monitoring.permissions import Principal

UNAVAILABLE = {"type": "error", "code": "unavailable",
               "message": "the audit log cannot be written; retry"}


def entry_of(conn: HTTPConnection, principal: Principal | None, action: str,
             target_type: str | None, target_id: str | None, result: str,
             details: dict[str, Any] | None) -> AuditEntry:
    rid = request_id.get()
    return make_entry(time.time(), principal.username if principal else None, action,
                      target_type, target_id, result,
                      conn.client.host if conn.client else None,
                      None if rid == "-" else rid, details)


def _writer(conn: HTTPConnection) -> AuditWriter | None:
    """The app's writer; None before its lifespan started it."""
    writer: AuditWriter | None = getattr(conn.app.state, "audit", None)
    return writer


async def audit(conn: HTTPConnection, principal: Principal | None, action: str,
                target_type: str | None = None, target_id: str | None = None,
                result: str = OK, details: dict[str, Any] | None = None) -> None:
    """Record what this request did; returns once it is durable. 503 ``unavailable``
    when it cannot be: what the request read is then not answered."""
    writer = _writer(conn)
    try:
        if writer is None:
            raise AuditUnavailable("the audit writer is not running")
        await writer.record(entry_of(conn, principal, action, target_type, target_id,
                                     result, details))
    except AuditUnavailable:
        raise HTTPException(503, UNAVAILABLE) from None


def audit_soon(conn: HTTPConnection, principal: Principal | None, action: str,
               target_type: str | None = None, target_id: str | None = None,
               result: str = OK, details: dict[str, Any] | None = None) -> None:
    """Record without waiting (see `AuditWriter.record_soon`)."""
    writer = _writer(conn)
    if writer is not None:
        writer.record_soon(entry_of(conn, principal, action, target_type, target_id, result,
                                    details))


def audit_counted(conn: HTTPConnection, principal: Principal | None, action: str,
                  why: str) -> None:
    """Count it, per source, rather than record it: what one client repeats at will
    (see `AuditWriter.count`)."""
    writer = _writer(conn)
    if writer is not None:
        writer.count(entry_of(conn, principal, action, None, None, why, None), why)


def result_of(exc: Exception) -> str:
    """The error code a failed request answers: an HTTP error's code (its status when it
    has none), ``validation_error``, else ``error``."""
    if isinstance(exc, RequestValidationError):
        return "validation_error"
    if not isinstance(exc, HTTPException):
        return "error"
    detail = exc.detail
    return str(detail.get("code")) if isinstance(detail, dict) and detail.get("code") \
        else str(exc.status_code)


class Outcome:
    """What `audited` records, which the block may add to: ``details``, or the
    ``target_id`` once known."""

    def __init__(self, target_id: str | None, details: dict[str, Any]) -> None:
        self.target_id, self.details = target_id, details


@contextlib.asynccontextmanager
async def audited(conn: HTTPConnection, principal: Principal | None, action: str,
                  target_type: str | None = None, target_id: str | None = None,
                  details: dict[str, Any] | None = None) -> AsyncIterator[Outcome]:
    """Record the block's outcome: ``ok``, or the error it raised (`result_of`; recorded,
    then raised on). Waits until the entry is durable, as `audit`."""
    outcome = Outcome(target_id, dict(details or {}))
    try:
        yield outcome
    except Exception as exc:
        with contextlib.suppress(HTTPException):  # (the error is the answer, whatever)
            await audit(conn, principal, action, target_type, outcome.target_id,
                        result_of(exc), outcome.details)
        raise
    await audit(conn, principal, action, target_type, outcome.target_id, OK, outcome.details)
