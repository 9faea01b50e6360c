"""The app factory: wires the store, bus, pipeline and hub to the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics import transcripts
from contact_center import __version__, admin, ingest, rules_api
from contact_center import service_metrics as metrics
from contact_center.logs import RequestIds
from contact_center.openapi import COMMON
from contact_center.protocol import MAX_ERROR_DETAILS
from contact_center.runtime import Embedded, Runtime, ScaleOutNode
from contact_center.settings import Settings
from contact_center.store import Store
from contact_center.stores import open_store
from contact_center.views import Health, Liveness
from monitoring import live
from monitoring.auth import CheckBeforeBody, require
from monitoring.hub import Hub
from monitoring.limits import Limits, SocketCaps
from monitoring.permissions import Permission

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024


UNPARSEABLE_BODY = "There was an error parsing the body"  # FastAPI's words, its 400

# What says a database or Redis is down, full or unreachable (a 503), as opposed to a
# bug (a 500).
DEPENDENCY_FAILURES: tuple[type[Exception], ...] = (
    sqlite3.OperationalError, OSError, RedisError, asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError, asyncpg.InsufficientResourcesError,
    asyncpg.CannotConnectNowError, asyncpg.OperatorInterventionError)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, {"type": "error", "code": "message_too_large",
                                        "message": f"request bodies are limited to {limit} bytes"})


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes: at once when Content-Length says so,
    else as soon as the streamed (chunked) body passes it, so none is buffered whole.
    (The largest valid batch is 500 segments of 8,000 characters.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            exc = _too_large(self.limit)
            await JSONResponse(exc.detail, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _too_large(self.limit)
            return message

        await self.app(scope, counted, send)


class RefuseNul:
    """Refuses a URL holding a NUL character (``%00``): no store can keep or look one up
    (PostgreSQL refuses it), so it gets a 422 ``validation_error``, never a 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (
                b"%00" in scope.get("raw_path", b"") or "\x00" in scope.get("path", "")
                or b"%00" in scope.get("query_string", b"")):
            body = {"type": "error", "code": "validation_error",
                    "message": "URLs must not contain NUL characters (%00)"}
            if scope["type"] == "http":
                await JSONResponse(body, status_code=422)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or open_store(settings.database, settings.sqlite_synchronous)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        hub = Hub(settings.subscriber_queue_size)
        try:
            runtime: Runtime = (await ScaleOutNode.start(settings, store, hub)
                                if settings.redis else await Embedded.start(settings, store, hub))
        except BaseException:
            await store.close()
            raise
        app.state.hub, app.state.runtime = hub, runtime
        app.state.bus, app.state.feed = runtime.bus, runtime.feed
        app.state.backtest_lock = asyncio.Lock()
        try:
            yield
        finally:
            await runtime.stop()
            await store.close()

    # /docs and /redoc from assets installed with the package (fastapi-offline), not a
    # CDN: they work on a machine without internet access.
    app = FastAPIOffline(
        title="contact-center",
        version=__version__,
        description="Live monitoring and analytics for contact centers. "
                    "Every route needs a Bearer API token; see docs/permissions.md.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.store = settings, store
    app.state.limits = Limits(settings.ws_messages_per_second, settings.max_sockets_per_token,
                              settings.auth_failures_per_minute)
    app.include_router(ingest.router)
    app.include_router(live.router)
    app.include_router(transcripts.router)
    app.include_router(rules_api.router)
    app.include_router(admin.router)

    app.add_middleware(CheckBeforeBody)  # innermost: the body limit and NUL check run first
    app.add_middleware(SocketCaps)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RefuseNul)
    app.add_middleware(RequestIds)  # outermost: every answer has an id and a log line

    not_ready: dict[int | str, dict[str, Any]] = {503: {"description": "Not ready"}}

    @app.get("/healthz", response_model=Health, tags=["operations"], responses=not_ready)
    @app.get("/readyz", response_model=Health, tags=["operations"], responses=not_ready)
    async def health(request: Request) -> JSONResponse:
        """Readiness: dependencies and pipeline depth (open by design: it reveals no
        data). 503 when the pipeline has stopped or a dependency does not answer:
        nothing would be acknowledged. ``/readyz`` and ``/healthz`` are the same."""
        status, fields = await request.app.state.runtime.health()
        return JSONResponse({"status": status, "version": __version__} | fields,
                            status_code=200 if status == "ok" else 503)

    @app.get("/livez", response_model=Liveness, tags=["operations"], responses=not_ready)
    async def liveness(request: Request) -> JSONResponse:
        """Liveness: 503 only when restarting this process would help (its pipeline or
        worker has stopped); a dependency that is down is /readyz's concern. Open."""
        alive = request.app.state.runtime.alive()
        return JSONResponse({"status": "ok" if alive else "pipeline stopped"},
                            status_code=200 if alive else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format"},
                        **{status: COMMON[status] for status in (401, 403, 429)}})
    async def prometheus_metrics(request: Request,
                                 _: object = require(Permission.OPERATE)) -> Response:
        """This process's metrics for Prometheus (see docs/operations.md#metrics)."""
        metrics.BUS_DEPTH.set(request.app.state.runtime.bus.depth)
        metrics.HUB_SUBSCRIBERS.set(request.app.state.hub.subscriptions)
        return Response(metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(StarletteHTTPException)
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

    for failure in DEPENDENCY_FAILURES:
        app.add_exception_handler(failure, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"type": "error", "code": "internal_error",
                             "message": "internal error"}, status_code=500)

    @app.exception_handler(RequestValidationError)
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

    return app
