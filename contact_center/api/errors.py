"""Every error answered in the one shared body (`api.openapi.Error`): validation, HTTP
errors, a dependency that is down (503 ``unavailable``) and bugs (500)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from contact_center.protocol import MAX_ERROR_DETAILS
from contact_center.stores import SEARCH_SECONDS, QueryTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")

async def in_time(work: Awaitable[T], what: str, narrow: str) -> T:
    """An analyst's query (``work``), or 503 ``query_timeout`` when the store stopped it
    at SEARCH_SECONDS; the message says what to ``narrow``."""
    try:
        return await work
    except QueryTimeout:
        raise HTTPException(503, {"type": "error", "code": "query_timeout", "message": (
            f"{what} ran past {SEARCH_SECONDS:g} s and was stopped; narrow it "
            f"({narrow})")}) from None


UNPARSEABLE_BODY = "There was an error parsing the body"  # FastAPI's words, its 400

# What says a database or Redis is down, full or unreachable (a 503), as opposed to a
# bug (a 500).
DEPENDENCY_FAILURES: tuple[type[Exception], ...] = (
    sqlite3.OperationalError, OSError, RedisError, asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError, asyncpg.InsufficientResourcesError,
    asyncpg.CannotConnectNowError, asyncpg.OperatorInterventionError)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    for failure in DEPENDENCY_FAILURES:
        app.add_exception_handler(failure, unavailable)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == UNPARSEABLE_BODY:
        # FastAPI's answer to a body json cannot read at all (nested too deep):
        # malformed JSON, as every other unreadable body is answered.
        return JSONResponse({"type": "error", "code": "malformed_json",
                             "message": "the body is not JSON this service can read "
                                        "(nested too deep?)"}, status_code=422)
    body = exc.detail if isinstance(exc.detail, dict) else {
        "type": "error", "code": "http_error", "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: a dependency failed: %r", request.method, request.url.path, exc)
    return JSONResponse({"type": "error", "code": "unavailable",
                         "message": "storage is unavailable; nothing was changed, retry"},
                        status_code=503)



async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"type": "error", "code": "internal_error",
                         "message": "internal error"}, status_code=500)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    details = [{"loc": [str(p) for p in e["loc"]], "msg": str(e["msg"]),
                "type": str(e["type"])} for e in errors[:MAX_ERROR_DETAILS]]
    message = "invalid request"
    if errors:
        message = ".".join(str(p) for p in errors[0]["loc"]) + ": " + str(errors[0]["msg"])
    if len(errors) > MAX_ERROR_DETAILS:  # an answer never costs more than its question
        message += f" (and {len(errors) - 1} more problems; the first "\
                   f"{MAX_ERROR_DETAILS} are in details)"
    code = "malformed_json" if any(e["type"] == "json_invalid" for e in errors) \
        else "validation_error"
    return JSONResponse({"type": "error", "code": code, "message": message,
                         "details": details}, status_code=422)
