"""Where permissions are checked: the dependency every route names (`require`), the
check every socket runs before it is accepted (`authorize_websocket`), and the check of a
request with a body before that body is read (`CheckBeforeBody`).

Tokens are verified by `monitoring.credentials`; what each permission allows is
`monitoring.permissions`.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from contact_center import service_metrics as metrics
from contact_center.api.audited import audit_counted, audit_soon
from contact_center.api.open_sockets import TOKEN, VERSION
from contact_center.limits import HELD, FailedAuthentications, client_key
from monitoring.credentials import token_prefix
from monitoring.permissions import Permission, Principal


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value else None


def _subprotocol_token(ws: WebSocket) -> str | None:
    """Browsers cannot set headers on a WebSocket: they offer ["bearer", token]."""
    offered = ws.scope.get("subprotocols") or []
    if len(offered) >= 2 and offered[0] == "bearer":
        return offered[1]
    return None


def _problem(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "body": {"type": "error", "code": code, "message": message},
            "headers": headers or {}}


def _address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "-"


async def _slowly(conn: HTTPConnection, token: str | None, failures: FailedAuthentications,
                  address: str) -> Principal | None:
    """Authenticate for an address that failed too often: a good token passes at once (a
    call centre behind one NAT is not locked out by one broken client), a failure is
    answered after a pause, ``PAUSED_AT_ONCE`` at a time (past them, at once)."""
    principal = await _principal(conn, token)
    if principal is not None:
        return principal
    failures.failed(address, time.monotonic())
    client = client_key(address)
    if failures.paused[client] >= failures.PAUSED_AT_ONCE:
        return None
    failures.paused[client] += 1
    try:
        await asyncio.sleep(failures.PAUSE)
    finally:
        failures.paused[client] -= 1
        if not failures.paused[client]:
            del failures.paused[client]
    return None


async def _principal(conn: HTTPConnection, token: str | None) -> Principal | None:
    """The token's principal; the access version it was resolved at is kept with the
    connection (a socket is re-checked against any newer one: `open_sockets`)."""
    principal, version = await conn.app.state.access.principal_at(token)
    conn.scope[VERSION] = version
    return principal


def _too_many_failures(slowed: float) -> dict[str, Any]:
    metrics.REFUSED.labels("too_many_failures").inc()
    return _problem(429, "too_many_failures",
                    "too many failed authentications from this address; answers to "
                    f"failures are slowed down for {math.ceil(slowed)} s",
                    {"Retry-After": str(math.ceil(slowed))})


def _refused(conn: HTTPConnection, principal: Principal | None, problem: dict[str, Any],
             permissions: tuple[Permission, ...]) -> dict[str, Any]:
    """``problem``, once recorded in the audit log (not waited for: anyone can cause it;
    from an address already slowed down, only counted)."""
    code = problem["body"]["code"]
    if code == "too_many_failures":
        audit_counted(conn, principal, "auth.failed", code)
        return problem
    method = "WS" if conn.scope["type"] == "websocket" else conn.scope["method"]
    audit_soon(conn, principal, "auth.failed", "route", conn.url.path, code,
               {"method": method, "needed": list(permissions)})
    return problem


async def _check(conn: HTTPConnection, token: str | None,
                 permissions: tuple[Permission, ...]) -> tuple[Principal | None, dict[str, Any]]:
    principal, problem = await _authorize(conn, token, permissions)
    if problem:
        return None, _refused(conn, principal, problem, permissions)
    return principal, problem


async def _authorize(conn: HTTPConnection, token: str | None, permissions: tuple[Permission, ...]
                     ) -> tuple[Principal | None, dict[str, Any]]:
    """Who the token is, and the problem to answer (none: allowed)."""
    failures, address = conn.app.state.limits.failures, _address(conn)
    slowed = failures.slowed(address, time.monotonic())
    if slowed:
        principal = await _slowly(conn, token, failures, address)
        if principal is None:
            return None, _too_many_failures(slowed)
    else:
        principal = await _principal(conn, token)
        if principal is None:
            failures.failed(address, time.monotonic())
            metrics.REFUSED.labels("unauthenticated").inc()
            return None, _problem(401, "unauthenticated", "a valid API token is required",
                                  {"WWW-Authenticate": "Bearer"})
    if permissions and not any(principal.can(p) for p in permissions):
        needed = " or ".join(permissions)
        return principal, _problem(403, "forbidden", f"this requires the {needed} permission")
    return principal, {}


def require(*permissions: Permission, unscoped: bool = False) -> Any:
    """Route dependency: an authenticated principal holding one of ``permissions``
    (any authenticated principal when none are named); ``unscoped``: and without a
    scope, for routes over data no scope divides (webhooks, the audit log, rule
    changes), which a scoped user would otherwise see or change whole."""

    async def dependency(request: Request) -> Principal:
        principal = request.scope.get("state", {}).get(_CHECKED)
        if principal is None:  # (else checked by `CheckBeforeBody`, for this very route)
            principal, problem = await _check(request, _bearer(request), permissions)
            if principal is None:
                raise HTTPException(problem["status"], problem["body"],
                                    headers=problem["headers"])
        if unscoped and principal.within is not None:
            raise HTTPException(403, {"type": "error", "code": "forbidden", "message": (
                "this route's data is not divided by team or queue: a user with a scope "
                "cannot use it")})
        return principal

    dependency.permissions = permissions  # type: ignore[attr-defined]  # read by the tests
    return Depends(dependency)


async def deny(ws: WebSocket, status: int, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
    """Refuse a socket before accepting it, with an HTTP status when the server can."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(body, status_code=status, headers=headers))
    else:
        await ws.close(code=1008, reason=body.get("code", "denied"))


async def authorize_websocket(ws: WebSocket, *permissions: Permission) -> Principal | None:
    """Check a socket's token and permission before accept; refuse it if they fail."""
    origin = ws.headers.get("origin")
    allowed = ws.app.state.settings.allowed_origins
    if origin is not None and allowed and origin not in allowed:
        problem = _refused(ws, None, _problem(403, "origin_not_allowed", "origin not allowed"),
                           permissions)
        await deny(ws, 403, problem["body"])
        return None
    token = _bearer(ws) or _subprotocol_token(ws)
    principal, problem = await _check(ws, token, permissions)
    if principal is None:
        await deny(ws, problem["status"], problem["body"], problem["headers"])
        return None
    counts = ws.app.state.limits.sockets
    if not counts.enter(token_prefix(token or "")):
        metrics.REFUSED.labels("too_many_connections").inc()
        await deny(ws, 429, _problem(429, "too_many_connections",
                                     f"this API token already holds {counts.limit} sockets "
                                     "(the most one token may)")["body"])
        return None
    ws.scope[HELD].update(key=token_prefix(token or ""), counts=counts)  # released by SocketCaps
    ws.scope[TOKEN] = token  # re-checked while open (`open_sockets`)
    return principal


async def accept(ws: WebSocket) -> None:
    """Accept, echoing the "bearer" subprotocol when the client authenticated with it."""
    await ws.accept(subprotocol="bearer" if _subprotocol_token(ws) else None)


_CHECKED = "checked_principal"
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _permissions_of(route: Any) -> tuple[Permission, ...] | None:
    """The permissions a route's `require` names; None if it names none (open)."""
    for dependency in getattr(getattr(route, "dependant", None), "dependencies", ()):
        permissions = getattr(dependency.call, "permissions", None)
        if permissions is not None:
            return tuple(permissions)
    return None


def _flatten(routes: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        flat += _flatten(included.routes) if included is not None else [route]
    return flat


class CheckBeforeBody:
    """Checks the token and permission of a request with a body before anything reads
    that body: an unauthorised client gets its 401/403 at once, and costs no parsing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        permissions = self._route_permissions(scope)
        if permissions is None:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        principal, problem = await _check(conn, _bearer(conn), permissions)
        if principal is None:
            headers = problem["headers"] | {"Connection": "close"}  # its body stays unread
            await JSONResponse(problem["body"], status_code=problem["status"],
                               headers=headers)(scope, receive, send)
            return
        scope.setdefault("state", {})[_CHECKED] = principal
        await self.app(scope, receive, send)

    def _route_permissions(self, scope: Scope) -> tuple[Permission, ...] | None:
        if self._routes is None:
            self._routes = _flatten(scope["app"].router.routes)
        for route in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return _permissions_of(route)
        return None
