"""Signing in from a browser: the session cookie (sign in, who, sign out) and the tickets
its pages open sockets with (docs/security.md#signing-in-from-a-browser)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from contact_center.api.audited import audit, audit_counted, audit_soon
from contact_center.api.auth import (
    COOKIE,
    SESSION,
    origin_allowed,
    require,
    throttled,
    too_many_failures,
)
from contact_center.api.openapi import COMMON, Closed, Responses, error
from contact_center.protocol import Model
from monitoring.credentials import User, principal_of
from monitoring.passwords import MAX_LENGTH, verify
from monitoring.permissions import Permission, Principal
from monitoring.sessions import (
    TICKET_SECONDS,
    SessionKey,
    csrf_token,
    issue_ticket,
    live_session,
    start_session,
)

router = APIRouter(tags=["session"], responses=COMMON)

NO_STORE = {"Cache-Control": "no-store"}  # the CSRF token stays out of every cache


class SignIn(Model):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_LENGTH)


class SessionInfo(Closed):
    username: str
    agent_id: str | None
    profiles: list[str]
    permissions: list[Permission]
    scoped: bool = Field(description="Whether a scope limits what this user sees.")
    csrf_token: str = Field(description=(
        "Send it as the X-CSRF-Token header with every POST, PUT, PATCH and DELETE signed "
        "in by the cookie (else 403 csrf)."))
    expires_at: float = Field(description=(
        "When the session ends unless used before (Unix time): the idle expiry, or the "
        "absolute one if sooner."))


class IssuedTicket(Closed):
    ticket: str = Field(description=(
        "Open one socket with the subprotocols [\"ticket\", <ticket>] within expires_in "
        "seconds; it is used up as it does."))
    expires_in: float


WRONG = {"type": "error", "code": "unauthenticated",
         "message": "wrong username or password"}
NO_SESSION = HTTPException(404, {"type": "error", "code": "no_session", "message": (
    "this request is not signed in by a session cookie (an API token needs none)")})


def _info(principal: Principal, secret: str, expires_at: float) -> dict[str, Any]:
    return {"username": principal.username, "agent_id": principal.agent_id,
            "profiles": list(principal.profiles), "permissions": sorted(principal.permissions),
            "scoped": principal.within is not None, "csrf_token": csrf_token(secret),
            "expires_at": expires_at}


def _secure(request: Request) -> bool:
    return bool(request.app.state.settings.session_cookie_secure) \
        or request.url.scheme == "https"


@router.post("/v1/session", response_model=SessionInfo, responses={
    401: error("unauthenticated: wrong username or password (the same answer, in about "
               "the same time, for a user who does not exist, has no password or is "
               "disabled)"),
    403: error("origin_not_allowed: the page's Origin is not in CC_ALLOWED_ORIGINS")})
async def sign_in(request: Request, response: Response, body: SignIn) -> dict[str, Any]:
    """Sign in with a username and password: sets the session cookie (HttpOnly,
    SameSite=Strict) and answers who signed in and the session's CSRF token."""
    if not origin_allowed(request):
        raise HTTPException(403, {"type": "error", "code": "origin_not_allowed",
                                  "message": "origin not allowed"})
    store, access = request.app.state.store, request.app.state.access

    async def attempt() -> User | None:
        user = await store.get_user(username=body.username)
        stored = await store.password_hash(user.id) if user is not None else None
        matches = await verify(body.password, stored)  # (a dummy hash when no user)
        return user if matches and user is not None and not user.disabled else None

    user, slowed = await throttled(request, attempt)
    if user is None:
        if slowed:
            audit_counted(request, None, "session.create", "too_many_failures")
            problem = too_many_failures(slowed)
            raise HTTPException(429, problem["body"], headers=problem["headers"])
        audit_soon(request, None, "session.create", "user", body.username, "unauthenticated")
        raise HTTPException(401, WRONG)
    principal = await principal_of(store, user, await access.directory())
    if principal is None:  # (disabled since)
        raise HTTPException(401, WRONG)
    session, secret = await start_session(store, user, access.clock(), access.sessions)
    await audit(request, principal, "session.create", "user", user.username)
    policy = access.sessions
    response.set_cookie(COOKIE, secret, max_age=int(policy.lifetime_seconds), path="/",
                        secure=_secure(request), httponly=True, samesite="strict")
    response.headers.update(NO_STORE)
    return _info(principal, secret, policy.expires_at(session))


def _signed_in(request: Request) -> SessionKey:
    key: SessionKey | None = request.scope.get(SESSION)
    if key is None:
        raise NO_SESSION
    return key


NOT_SIGNED_IN: Responses = {404: error("no_session: the request is authenticated by an API token, "
                            "not a session cookie")}


@router.get("/v1/session", response_model=SessionInfo, responses=NOT_SIGNED_IN)
async def current_session(request: Request, response: Response,
                          principal: Principal = require()) -> dict[str, Any]:
    """The session the cookie names: who, and its CSRF token (a page that reloads reads
    it again here)."""
    access = request.app.state.access
    session = await live_session(access.store, _signed_in(request), access.sessions,
                                 access.clock())
    if session is None:  # (ended since the check)
        raise NO_SESSION
    response.headers.update(NO_STORE)
    return _info(principal, request.cookies[COOKIE], access.sessions.expires_at(session))


@router.delete("/v1/session", status_code=204, response_class=Response,
               responses=NOT_SIGNED_IN)
async def sign_out(request: Request, principal: Principal = require()) -> Response:
    """Sign out: the session ends on the server (its cookie is worthless from now on,
    sockets opened with its tickets close), and the cookie is cleared."""
    key = _signed_in(request)
    await request.app.state.store.end_session(key.digest)
    request.app.state.access.changed()
    await audit(request, principal, "session.end", "user", principal.username)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", secure=_secure(request), httponly=True,
                           samesite="strict")
    return response


@router.post("/v1/session/tickets", status_code=201, response_model=IssuedTicket,
             responses=NOT_SIGNED_IN)
async def add_ticket(request: Request, _: Principal = require()) -> dict[str, Any]:
    """A ticket to open one socket as this session (browsers cannot send a socket
    headers): short-lived, single-use, valid on every API node."""
    access = request.app.state.access
    ticket = await issue_ticket(access.store, _signed_in(request), access.clock())
    return {"ticket": ticket, "expires_in": TICKET_SECONDS}
