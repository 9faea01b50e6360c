"""The app factory: composes the store, the deployment's runtime (bus, pipeline or
workers, feed), the hub, the routes and the middleware."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from contact_center import __version__, api, stopping
from contact_center.access import Access
from contact_center.api import errors
from contact_center.api.auth import CheckBeforeBody
from contact_center.api.middleware import MAX_BODY_BYTES, BodyLimit, RefuseNul
from contact_center.api.open_sockets import OpenSockets
from contact_center.audit_writer import AuditWriter
from contact_center.limits import Limits, SocketCaps
from contact_center.logs import RequestIds
from contact_center.runtime import Embedded, Runtime, ScaleOutNode
from contact_center.settings import Settings
from contact_center.stores import Store, open_store
from monitoring.hub import Hub


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or open_store(settings.database, settings.sqlite_synchronous)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        app.state.audit = audit = AuditWriter(store)
        await audit.start()
        hub = Hub(settings.subscriber_queue_size)
        try:
            runtime: Runtime = (await ScaleOutNode.start(settings, store, hub)
                                if settings.redis else await Embedded.start(settings, store, hub))
        except BaseException:
            await audit.stop()
            await store.close()
            raise
        app.state.hub, app.state.runtime = hub, runtime
        app.state.bus, app.state.feed = runtime.bus, runtime.feed
        app.state.backtest_lock = asyncio.Lock()
        rechecking = asyncio.create_task(app.state.open_sockets.run(), name="open-sockets")
        try:
            yield
        finally:
            await stopping.cancel([rechecking], "re-checking open sockets")
            # (side by side: the audit log's last entries add nothing to the stop's time)
            await asyncio.gather(runtime.stop(), audit.stop())
            await stopping.step("closing the database", store.close(),
                                stopping.CLOSE_DATABASE_SECONDS)

    # /docs and /redoc from assets installed with the package (fastapi-offline), not a
    # CDN: they work on a machine without internet access.
    app = FastAPIOffline(
        title="contact-center",
        version=__version__,
        description="Live monitoring and analytics for contact centers. "
                    "Every route needs a Bearer API token, or a browser session's cookie "
                    "(POST /v1/session); see docs/security.md.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.store = settings, store
    app.state.access = Access(store, settings.session_policy)
    app.state.open_sockets = OpenSockets(app.state.access)
    app.state.limits = Limits(settings.ws_messages_per_second, settings.max_sockets_per_token,
                              settings.auth_failures_per_minute)
    api.include_routes(app)

    app.add_middleware(CheckBeforeBody)  # innermost: the body limit and NUL check run first
    app.add_middleware(SocketCaps)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(RefuseNul)
    app.add_middleware(RequestIds)  # outermost: every answer has an id and a log line

    errors.install(app)
    return app
