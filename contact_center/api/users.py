"""Users and their API tokens, and who am I."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field, StringConstraints

from contact_center.api.audited import audit, audited, result_of
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed, Responses, error
from contact_center.api.profiles import refused
from contact_center.api.teams import unscoped
from contact_center.protocol import Model
from contact_center.stores import Store
from monitoring.credentials import User, create_user, issue_token, permissions_held
from monitoring.passwords import MAX_LENGTH, MIN_LENGTH, hash_password
from monitoring.permissions import Permission, Principal, permissions_of
from monitoring.profiles import (
    NAME_PATTERN,
    CannotGrant,
    ProfileError,
    UnknownProfile,
    assignment_check,
)
from monitoring.scope import Scope, UnknownTeam

router = APIRouter(tags=["admin"], responses=COMMON)

MAX_SCOPE_ITEMS = 100  # teams, and queues, in one user's scope


class Me(Closed):
    username: str
    agent_id: str | None
    profiles: list[str]
    permissions: list[Permission]
    scoped: bool = Field(description="Whether a scope limits what this user sees.")


@router.get("/v1/me", response_model=Me)
async def me(principal: Principal = require()) -> dict[str, Any]:
    """Who this token belongs to, and what it may do."""
    return {"username": principal.username, "agent_id": principal.agent_id,
            "profiles": list(principal.profiles), "permissions": sorted(principal.permissions),
            "scoped": principal.within is not None}


# Built-in or custom (GET /v1/security-profiles); the store checks that each exists.
ProfileName = Annotated[str, StringConstraints(max_length=64, pattern=NAME_PATTERN)]
MAX_PROFILES = 20  # held by one user
USER_PROFILES = Field(min_length=1, max_length=MAX_PROFILES, description=(
    "Security profiles, built-in or custom: only those whose permissions the token's user "
    "holds (else 403 cannot_grant)."))
GRANTING: Responses = {403: error(
    "forbidden: the token's user lacks the permission the route needs; cannot_grant: the "
    "profiles given would grant permissions the token's user does not hold (the message "
    "names them)")}
INVALID_USER = ("validation_error: a parameter or the body is invalid (`details` lists each "
                "problem); malformed_json: the body is not JSON; invalid_user: a profile is "
                "neither built-in nor custom")


class NewUser(Model):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    profiles: list[ProfileName] = USER_PROFILES
    agent_id: str | None = Field(default=None, max_length=128)


class ScopeInfo(Model):
    teams: list[str] = Field(default=[], max_length=MAX_SCOPE_ITEMS, description=(
        "Conversations handled by agents of these teams, or of teams under them."))
    queues: list[str] = Field(default=[], max_length=MAX_SCOPE_ITEMS, description=(
        "Conversations now in these queues."))


class UserInfo(Closed):
    id: str
    username: str
    agent_id: str | None
    profiles: list[str]
    disabled: bool
    permissions: list[Permission] = Field(description="The union of the profiles'.")
    scope: ScopeInfo | None = Field(description=(
        "What the user may see (docs/security.md#scope); null: everything."))


class Users(Closed):
    users: list[UserInfo]


def _public(user: User, permissions: frozenset[Permission]) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "agent_id": user.agent_id,
            "profiles": user.profiles, "disabled": user.disabled,
            "permissions": sorted(permissions), "scope": user.scope.as_json()}


def _invalid(exc: ProfileError) -> HTTPException:
    """A refused profile list: 403 cannot_grant, or 422 invalid_user (unknown ones)."""
    if isinstance(exc, CannotGrant):
        return refused(exc)
    return HTTPException(422, {"type": "error", "code": "invalid_user", "message": str(exc)})


def _unknown_user(username: str) -> HTTPException:
    return HTTPException(404, {"type": "error", "code": "unknown_user",
                               "message": f"no user {username}"})


@router.get("/v1/users", response_model=Users)
async def list_users(request: Request,
                     _: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    store: Store = request.app.state.store
    custom = {p.name: p.permissions for p in await store.list_profiles()}
    return {"users": [_public(u, permissions_of(u.profiles, custom))
                      for u in await store.list_users()]}


@router.post("/v1/users", status_code=201, response_model=UserInfo,
             responses={**GRANTING,
                        409: error("invalid_user: the username is taken"),
                        422: error(INVALID_USER)})
async def add_user(request: Request, body: NewUser,
                   principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    store = request.app.state.store
    async with audited(request, principal, "user.create", "user", body.username,
                       {"profiles": body.profiles, "agent_id": body.agent_id}):
        if principal.within is not None:  # (a new user has no scope: sees everything)
            raise HTTPException(403, {"type": "error", "code": "cannot_grant", "message": (
                "a user with a scope cannot create users, who would see everything")})
        try:
            user = await create_user(store, body.username, body.profiles, body.agent_id,
                                     assignment_check(principal.permissions, body.profiles))
        except (CannotGrant, UnknownProfile) as exc:
            raise _invalid(exc) from None
        except ValueError as exc:
            raise HTTPException(409, {"type": "error", "code": "invalid_user",
                                      "message": str(exc)}) from None
    return _public(user, await permissions_held(store, user.profiles))


class UserChange(Model):
    """Each field given is changed; those left out stay as they are."""

    disabled: bool | None = Field(default=None, description=(
        "Disable (or re-enable) the user: every token of theirs stops working at once, "
        "open sockets included."))
    profiles: list[ProfileName] | None = Field(
        default=None, min_length=1, max_length=MAX_PROFILES,
        description="Replaces the list, with profiles that grant only permissions the "
                    "token's user holds (else 403 cannot_grant). Holds from their next "
                    "request, open sockets included.")
    scope: ScopeInfo | None = Field(default=None, description=(
        "What the user may see from now on, open sockets included; null: everything. "
        "Only a user without a scope may set one (else 403 cannot_grant)."))


@router.patch("/v1/users/{username}", response_model=UserInfo, responses={
    403: error("forbidden: the token's user lacks the permission the route needs; "
               "cannot_grant: the profiles given would grant permissions the token's user "
               "does not hold (the message names them), or a user with a scope sets one"),
    404: error("unknown_user: no such user"),
    422: error(INVALID_USER + "; unknown_team: a team of the scope does not exist")})
async def change_user(request: Request, username: str, change: UserChange,
                      principal: Principal = require(Permission.USERS_MANAGE)
                      ) -> dict[str, Any]:
    """Change a user's profiles or scope, or disable (or re-enable) them; each change is
    recorded in the audit log. Only a user who may do and see no more than the token's
    user can be changed; every check is made before anything is."""
    store = request.app.state.store
    target = await store.get_user(username=username)
    if target is None:
        raise _unknown_user(username)
    scope = None
    if "scope" in change.model_fields_set:
        scope = Scope() if change.scope is None else Scope(
            frozenset(change.scope.teams), frozenset(change.scope.queues))
    try:
        await _may_act_as(request, principal, target)
        if scope is not None:
            unscoped(principal)
            try:
                (await request.app.state.access.directory()).check_teams_exist(
                    scope.teams or ())
            except UnknownTeam as exc:
                raise HTTPException(422, {"type": "error", "code": "unknown_team",
                                          "message": str(exc)}) from None
    except HTTPException as exc:
        with contextlib.suppress(HTTPException):  # (refused either way)
            await audit(request, principal, "user.change", "user", username, result_of(exc))
        raise
    if change.profiles is not None:  # first: the change that may yet be refused
        profiles = list(dict.fromkeys(change.profiles))
        async with audited(request, principal, "user.profiles", "user", username,
                           {"profiles": profiles}):
            try:
                found = await store.set_profiles(username, profiles, assignment_check(
                    principal.permissions, profiles))
            except (CannotGrant, UnknownProfile) as exc:
                raise _invalid(exc) from None
            if not found:
                raise _unknown_user(username)
    if scope is not None:
        async with audited(request, principal, "user.scope", "user", username,
                           {"scope": scope.as_json()}):
            try:
                if not await store.set_scope(username, scope):
                    raise _unknown_user(username)
            except UnknownTeam as exc:
                raise HTTPException(422, {"type": "error", "code": "unknown_team",
                                          "message": str(exc)}) from None
    if change.disabled is not None:
        action = "user.disable" if change.disabled else "user.enable"
        async with audited(request, principal, action, "user", username):
            if not await store.set_disabled(username, change.disabled):
                raise _unknown_user(username)
    request.app.state.access.changed()
    user = await store.get_user(username=username)
    if user is None:
        raise _unknown_user(username)
    return _public(user, await permissions_held(store, user.profiles))


class NewToken(Model):
    label: str = Field(default="", max_length=100)


class IssuedToken(Closed):
    id: str
    username: str
    label: str
    token: str = Field(description="The secret: shown in this response only.")


async def _may_act_as(request: Request, principal: Principal, user: User) -> None:
    """A token for ``user`` is what they may do: only for someone who may do no more,
    and see no more, than the one who asks (else 403 cannot_grant)."""
    held = await permissions_held(request.app.state.store, user.profiles)
    if not held <= principal.permissions:
        raise _invalid(CannotGrant(held - principal.permissions))
    if principal.within is not None:
        directory = await request.app.state.access.directory()
        if not principal.within.includes(directory.within(user.scope, user.agent_id)):
            raise HTTPException(403, {"type": "error", "code": "cannot_grant", "message": (
                f"{user.username} sees conversations outside your scope: you cannot issue "
                "their tokens")})


# What a route acting for a user (a token, a password) may answer besides success.
ACTING_ON_A_USER: Responses = {
    403: error("forbidden: the token's user lacks users-manage; cannot_grant: the user may "
               "do, or see, more than the token's user"),
    404: error("unknown_user: no such user")}


@router.post("/v1/users/{username}/tokens", status_code=201, response_model=IssuedToken,
             responses=ACTING_ON_A_USER)
async def add_token(request: Request, username: str, body: NewToken,
                    principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    """Issue an API token. The token is in this response only; it is stored hashed."""
    store = request.app.state.store
    async with audited(request, principal, "token.issue", "token", None,
                       {"username": username, "label": body.label}) as outcome:
        user = await store.get_user(username=username)
        if user is None:
            raise HTTPException(404, {"type": "error", "code": "unknown_user",
                                      "message": f"no user {username}"})
        await _may_act_as(request, principal, user)
        token, secret = await issue_token(store, user, body.label)
        outcome.target_id = token.id
    return {"id": token.id, "username": username, "label": token.label, "token": secret}


@router.delete("/v1/tokens/{token_id}", status_code=204, response_class=Response,
               responses={404: error("unknown_token: no such active token")})
async def revoke_token(request: Request, token_id: str,
                       principal: Principal = require(Permission.USERS_MANAGE)) -> None:
    async with audited(request, principal, "token.revoke", "token", token_id):
        if not await request.app.state.store.revoke_token(token_id):
            raise HTTPException(404, {"type": "error", "code": "unknown_token",
                                      "message": "no such active token"})
    request.app.state.access.changed()


class NewPassword(Model):
    password: str = Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, description=(
        f"At least {MIN_LENGTH} characters. Stored as an Argon2id hash; never answered "
        "or logged."))


@router.put("/v1/users/{username}/password", status_code=204, response_class=Response,
            responses=ACTING_ON_A_USER)
async def set_password(request: Request, username: str, body: NewPassword,
                       principal: Principal = require(Permission.USERS_MANAGE)) -> None:
    """Set a user's password (for signing in from a browser: POST /v1/session). Every
    session of theirs ends."""
    store = request.app.state.store
    async with audited(request, principal, "user.password", "user", username):
        user = await store.get_user(username=username)
        if user is None:
            raise _unknown_user(username)
        await _may_act_as(request, principal, user)
        if not await store.set_password(username, await hash_password(body.password)):
            raise _unknown_user(username)
    request.app.state.access.changed()
