"""Where permissions are checked: the dependency every route names (`require`), the
check every socket runs before it is accepted (`authorize_websocket`), and the check of a
request with a body before that body is read (`CheckBeforeBody`).

A request authenticates with a bearer API token or, from a browser, the session cookie;
a request that changes something by cookie must carry its session's CSRF token. A
socket authenticates with a token, or a ticket its page's session issued. Tokens are
verified by `monitoring.credentials`, sessions and tickets by `monitoring.sessions`; what
each permission allows is `monitoring.permissions`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from contact_center import service_metrics as metrics
from contact_center.access import Credential
from contact_center.api.audited import audit_counted, audit_soon
from contact_center.api.open_sockets import TOKEN, VERSION
from contact_center.limits import HELD, FailedAuthentications, client_key
from monitoring.credentials import token_prefix
from monitoring.permissions import Permission, Principal
from monitoring.sessions import SessionKey, csrf_matches, key_of, redeem_ticket

T = TypeVar("T")

COOKIE = "cc_session"  # the browser session's secret (monitoring.sessions)
CSRF_HEADER = "X-CSRF-Token"
SESSION = "session_key"  # where a request signed in by cookie keeps its `SessionKey`
_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value else None


def _offered(ws: WebSocket, scheme: str) -> str | None:
    """Browsers cannot set headers on a WebSocket: they offer [scheme, secret] as its
    subprotocols ("bearer" and a token, or "ticket" and a ticket)."""
    offered = ws.scope.get("subprotocols") or []
    if len(offered) >= 2 and offered[0] == scheme:
        return str(offered[1])
    return None


def _credential(conn: HTTPConnection) -> tuple[Credential | None, dict[str, Any]]:
    """A request's credential: its bearer token, else its session cookie (a cookie
    comes with any request the browser makes, a foreign page's too: one that changes
    something must also carry the session's CSRF token, which only its own pages read)."""
    token = _bearer(conn)
    if token is not None:
        return token, {}
    secret = conn.cookies.get(COOKIE)
    key = key_of(secret)
    if key is None or secret is None:
        return None, {}
    if conn.scope["method"] in _CHANGING and not csrf_matches(
            secret, conn.headers.get(CSRF_HEADER)):
        metrics.REFUSED.labels("csrf").inc()
        return None, _problem(403, "csrf", f"a request signed in by the session cookie that "
                              f"changes something needs its session's {CSRF_HEADER} header "
                              "(POST or GET /v1/session answer it)")
    return key, {}


def _problem(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "body": {"type": "error", "code": code, "message": message},
            "headers": headers or {}}


def _address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "-"


async def throttled(conn: HTTPConnection,
                    attempt: Callable[[], Awaitable[T | None]]) -> tuple[T | None, float]:
    """Make an authentication ``attempt`` (None: it failed), failures counted per client
    address; and, when it failed from an address that failed too often, the seconds it
    stays slowed down. There a success passes at once (a call centre behind one NAT is
    not locked out by one broken client), a failure is answered after a pause,
    ``PAUSED_AT_ONCE`` at a time (past them, at once)."""
    failures: FailedAuthentications = conn.app.state.limits.failures
    address = _address(conn)
    slowed = failures.slowed(address, time.monotonic())
    found = await attempt()
    if found is not None:
        return found, 0.0
    failures.failed(address, time.monotonic())
    if slowed:
        await _pause(failures, client_key(address))
    return None, slowed


async def _pause(failures: FailedAuthentications, client: str) -> None:
    if failures.paused[client] >= failures.PAUSED_AT_ONCE:
        return
    failures.paused[client] += 1
    try:
        await asyncio.sleep(failures.PAUSE)
    finally:
        failures.paused[client] -= 1
        if not failures.paused[client]:
            del failures.paused[client]


async def _principal(conn: HTTPConnection, credential: Credential | None) -> Principal | None:
    """The credential's principal; the access version it was resolved at is kept with
    the connection (a socket is re-checked against any newer one: `open_sockets`), and
    a session with the request (its routes read it)."""
    principal, version = await conn.app.state.access.principal_at(credential, used=True)
    conn.scope[VERSION] = version
    if principal is not None and isinstance(credential, SessionKey):
        conn.scope[SESSION] = credential
    return principal




def too_many_failures(slowed: float) -> dict[str, Any]:
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


async def _check_request(conn: HTTPConnection, permissions: tuple[Permission, ...]
                         ) -> tuple[Principal | None, dict[str, Any]]:
    credential, problem = _credential(conn)
    if problem:
        return None, _refused(conn, None, problem, permissions)
    return await _check(conn, credential, permissions)


async def _check(conn: HTTPConnection, credential: Credential | None,
                 permissions: tuple[Permission, ...]) -> tuple[Principal | None, dict[str, Any]]:
    principal, problem = await _authorize(conn, credential, permissions)
    if problem:
        return None, _refused(conn, principal, problem, permissions)
    return principal, problem


async def _authorize(conn: HTTPConnection, credential: Credential | None,
                     permissions: tuple[Permission, ...]
                     ) -> tuple[Principal | None, dict[str, Any]]:
    """Who the credential is, and the problem to answer (none: allowed)."""
    principal, slowed = await throttled(conn, lambda: _principal(conn, credential))
    if principal is None:
        if slowed:
            return None, too_many_failures(slowed)
        metrics.REFUSED.labels("unauthenticated").inc()
        return None, _problem(401, "unauthenticated",
                              "a valid API token (or browser session) is required",
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
            principal, problem = await _check_request(request, permissions)
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


async def _socket_credential(ws: WebSocket) -> Credential | None:
    """A token (header, or "bearer" subprotocol), or the session of a "ticket" one (used
    up now). Never the session cookie: a foreign page's socket would carry it too."""
    token = _bearer(ws) or _offered(ws, "bearer")
    if token is not None:
        return token
    ticket = _offered(ws, "ticket")
    if ticket is None:
        return None
    access = ws.app.state.access
    return await redeem_ticket(access.store, ticket, access.clock())


def _holder(credential: Credential | None) -> str:
    """Whose sockets are counted together: a token's, or a session's."""
    if isinstance(credential, SessionKey):
        return "session:" + credential.digest[:16]
    return token_prefix(credential or "")


def origin_allowed(conn: HTTPConnection) -> bool:
    """Whether the page the request comes from (its Origin, if any) is one
    ``allowed_origins`` names (any, when it names none)."""
    origin = conn.headers.get("origin")
    allowed = conn.app.state.settings.allowed_origins
    return origin is None or not allowed or origin in allowed


async def authorize_websocket(ws: WebSocket, *permissions: Permission) -> Principal | None:
    """Check a socket's credential and permission before accept; refuse it if they
    fail."""
    if not origin_allowed(ws):
        problem = _refused(ws, None, _problem(403, "origin_not_allowed", "origin not allowed"),
                           permissions)
        await deny(ws, 403, problem["body"])
        return None
    credential = await _socket_credential(ws)
    principal, problem = await _check(ws, credential, permissions)
    if principal is None:
        await deny(ws, problem["status"], problem["body"], problem["headers"])
        return None
    counts = ws.app.state.limits.sockets
    if not counts.enter(_holder(credential)):
        metrics.REFUSED.labels("too_many_connections").inc()
        await deny(ws, 429, _problem(429, "too_many_connections",
                                     f"this API token already holds {counts.limit} sockets "
                                     "(the most one token may)")["body"])
        return None
    ws.scope[HELD].update(key=_holder(credential), counts=counts)  # released by SocketCaps
    ws.scope[TOKEN] = credential  # re-checked while open (`open_sockets`)
    return principal


async def accept(ws: WebSocket) -> None:
    """Accept, echoing the subprotocol ("bearer" or "ticket") the client authenticated
    with."""
    scheme = next((s for s in ("bearer", "ticket") if _offered(ws, s) is not None), None)
    await ws.accept(subprotocol=scheme)


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
        principal, problem = await _check_request(conn, permissions)
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
