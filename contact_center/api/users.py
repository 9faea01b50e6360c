"""Users and their API tokens, and who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed, error
from contact_center.protocol import Model
from monitoring.credentials import User, create_user, issue_token
from monitoring.permissions import PROFILES, Permission, Principal, permissions_of

router = APIRouter(tags=["admin"], responses=COMMON)


class Me(Closed):
    username: str
    agent_id: str | None
    profiles: list[str]
    permissions: list[Permission]


@router.get("/v1/me", response_model=Me)
async def me(principal: Principal = require()) -> dict[str, Any]:
    """Who this token belongs to, and what it may do."""
    return {"username": principal.username, "agent_id": principal.agent_id,
            "profiles": list(principal.profiles), "permissions": sorted(principal.permissions)}


class NewUser(Model):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    # Checked by `create_user` (which names the unknown ones); the document lists them.
    profiles: list[str] = Field(min_length=1, json_schema_extra={
        "items": {"type": "string", "enum": list(PROFILES)}})
    agent_id: str | None = Field(default=None, max_length=128)


class UserInfo(Closed):
    id: str
    username: str
    agent_id: str | None
    profiles: list[str]
    disabled: bool
    permissions: list[Permission] = Field(description="The union of the profiles'.")


class Users(Closed):
    users: list[UserInfo]


def _public(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "agent_id": user.agent_id,
            "profiles": user.profiles, "disabled": user.disabled,
            "permissions": sorted(permissions_of(user.profiles))}


@router.get("/v1/users", response_model=Users)
async def list_users(request: Request,
                     _: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    return {"users": [_public(u) for u in await request.app.state.store.list_users()]}


@router.post("/v1/users", status_code=201, response_model=UserInfo,
             responses={409: error("invalid_user: the username is taken")})
async def add_user(request: Request, body: NewUser,
                   principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    async with audited(request, principal, "user.create", "user", body.username,
                       {"profiles": body.profiles, "agent_id": body.agent_id}):
        try:
            user = await create_user(request.app.state.store, body.username, body.profiles,
                                     body.agent_id)
        except ValueError as exc:
            status = 409 if "exists" in str(exc) else 422
            raise HTTPException(status, {"type": "error", "code": "invalid_user",
                                         "message": str(exc)}) from None
    return _public(user)


class UserChange(Model):
    disabled: bool


@router.patch("/v1/users/{username}", response_model=UserInfo,
              responses={404: error("unknown_user: no such user")})
async def change_user(request: Request, username: str, change: UserChange,
                      principal: Principal = require(Permission.USERS_MANAGE)
                      ) -> dict[str, Any]:
    """Disable (or re-enable) a user: every token of theirs stops working at once."""
    store = request.app.state.store
    action = "user.disable" if change.disabled else "user.enable"
    async with audited(request, principal, action, "user", username):
        if not await store.set_disabled(username, change.disabled):
            raise HTTPException(404, {"type": "error", "code": "unknown_user",
                                      "message": f"no user {username}"})
    return _public(await store.get_user(username=username))


class NewToken(Model):
    label: str = Field(default="", max_length=100)


class IssuedToken(Closed):
    id: str
    username: str
    label: str
    token: str = Field(description="The secret: shown in this response only.")


@router.post("/v1/users/{username}/tokens", status_code=201, response_model=IssuedToken,
             responses={404: error("unknown_user: no such user")})
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
