"""Every HTTP and WebSocket route, one module per resource; each route is thin: parse,
check the permission (`auth`), call the domain, shape the answer (`views`).

ingest (connectors), live (supervisors' views and monitor), supervision (who monitors,
whisper, barge), alerts, webhooks, transcripts and search (analysts), rules, users (and tokens),
teams (and the agent directory), profiles (security profiles, the permission
catalogue), audit (the audit log), erasures (a customer's data), operations (probes,
metrics, dead letters), session (signing in from a browser; socket tickets), console
(the supervisor console's pages and assets). Shared:
`auth` (where permissions are checked), `audited` (recording what a request did in
the audit log), `openapi` (the error body and common answers), `views` (response
shapes), `sockets` (streaming to a client), `errors`, `middleware`. Also aggregates
(analysts' figures per queue, agent or team and time bucket).
"""

from __future__ import annotations

from fastapi import FastAPI

from contact_center.api import (
    aggregates,
    alerts,
    audit,
    console,
    erasures,
    ingest,
    live,
    operations,
    profiles,
    rules,
    search,
    session,
    supervision,
    teams,
    transcripts,
    users,
    webhooks,
)

ROUTERS = [ingest.router, live.router, supervision.router, alerts.router, transcripts.router,
           search.router, rules.router, users.router, teams.router, profiles.router,
           operations.router, webhooks.router, audit.router, aggregates.router,
           erasures.router, session.router, console.router]


def include_routes(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
