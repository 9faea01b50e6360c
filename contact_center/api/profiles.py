"""Security profiles: the built-in ones and custom ones (create, list, read, change,
delete), and the permission catalogue. docs/security.md#custom-security-profiles."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed, Responses, error
from contact_center.protocol import Model
from monitoring.permissions import CATALOGUE, Permission, Principal
from monitoring.profiles import (
    BUILTIN,
    MAX_DESCRIPTION,
    NAME_PATTERN,
    BuiltinProfile,
    CannotGrant,
    ProfileError,
    ProfileExists,
    ProfileInUse,
    SecurityProfile,
    new_profile,
    profile_change,
)

router = APIRouter(tags=["admin"], responses=COMMON)

NOT_FOUND: Responses = {404: error("unknown_profile: no such security profile")}
CANNOT_GRANT: Responses = {403: error(
    "forbidden: the token's user lacks the permission the route needs; cannot_grant: the "
    "profile would grant permissions the token's user does not hold (the message names "
    "them)")}
BUILTIN_409 = "builtin_profile: built-in profiles cannot be changed or deleted"


class NewProfile(Model):
    name: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN,
                      description="Unique, case aside; not a built-in profile's name.")
    permissions: list[Permission] = Field(max_length=len(Permission),
                                          description="What its holders may do: "
                                                      "GET /v1/permissions.")
    description: str = Field(default="", max_length=MAX_DESCRIPTION)


class ProfileChange(Model):
    permissions: list[Permission] | None = Field(
        default=None, max_length=len(Permission),
        description="Replaces the list; takes effect on the holders' next request.")
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)


class ProfileInfo(Closed):
    name: str
    builtin: bool = Field(description="Built-in profiles cannot be changed or deleted.")
    permissions: list[Permission]
    description: str
    created_at: float | None = Field(description="Unix time; null for a built-in profile.")
    created_by: str | None = Field(description="A username; null for a built-in profile "
                                               "or one made with the CLI.")
    updated_at: float | None


class Profiles(Closed):
    profiles: list[ProfileInfo] = Field(description="The built-in profiles, then the custom "
                                                    "ones, each by name.")


class PermissionInfo(Closed):
    name: Permission
    grants: str


class Catalogue(Closed):
    permissions: list[PermissionInfo]


def _public(profile: SecurityProfile) -> dict[str, Any]:
    return {"name": profile.name, "builtin": profile.builtin,
            "permissions": sorted(profile.permissions), "description": profile.description,
            "created_at": profile.created_at, "created_by": profile.created_by,
            "updated_at": profile.updated_at}


def _problem(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, {"type": "error", "code": code, "message": message})


def refused(exc: ProfileError) -> HTTPException:
    """The answer to a change the profile rules refuse."""
    if isinstance(exc, CannotGrant):
        return _problem(403, "cannot_grant", str(exc))
    if isinstance(exc, BuiltinProfile):
        return _problem(409, "builtin_profile", str(exc))
    if isinstance(exc, ProfileInUse):
        return _problem(409, "profile_in_use", str(exc))
    if isinstance(exc, ProfileExists):
        return _problem(409, "profile_exists", str(exc))
    return _problem(422, "invalid_profile", str(exc))


def _not_found(name: str) -> HTTPException:
    return _problem(404, "unknown_profile", f"no security profile {name!r}")


def _builtin(name: str, doing: str) -> HTTPException:
    return _problem(409, "builtin_profile", f"{name!r} is built-in: it cannot be {doing}")


@router.get("/v1/permissions", response_model=Catalogue)
async def list_permissions(_: Principal = require()) -> dict[str, Any]:
    """Every permission and what it grants (for a console that edits profiles)."""
    return {"permissions": [{"name": p, "grants": CATALOGUE[p]} for p in Permission]}


@router.get("/v1/security-profiles", response_model=Profiles)
async def list_profiles(request: Request,
                        _: Principal = require(Permission.PROFILES_MANAGE)) -> dict[str, Any]:
    custom = await request.app.state.store.list_profiles()
    return {"profiles": [_public(p) for p in [*BUILTIN.values(), *custom]]}


@router.post("/v1/security-profiles", status_code=201, response_model=ProfileInfo,
             responses={**CANNOT_GRANT,
                        409: error("profile_exists: the name is taken (case aside), by a "
                                   "built-in or a custom profile")})
async def add_profile(request: Request, body: NewProfile,
                      principal: Principal = require(Permission.PROFILES_MANAGE)
                      ) -> dict[str, Any]:
    """Create a custom profile: only with permissions the token's user holds."""
    async with audited(request, principal, "profile.create", "profile", body.name,
                       {"permissions": sorted(body.permissions)}):
        try:
            profile = new_profile(body.name, body.permissions, body.description,
                                  principal.permissions, principal.username, time.time())
            await request.app.state.store.create_profile(profile)
        except ProfileError as exc:
            raise refused(exc) from None
    return _public(profile)


@router.get("/v1/security-profiles/{name}", response_model=ProfileInfo,
            responses=NOT_FOUND)
async def get_profile(request: Request, name: str,
                      _: Principal = require(Permission.PROFILES_MANAGE)) -> dict[str, Any]:
    profile = BUILTIN.get(name) or await request.app.state.store.get_profile(name)
    if profile is None:
        raise _not_found(name)
    return _public(profile)


@router.patch("/v1/security-profiles/{name}", response_model=ProfileInfo,
              responses={**NOT_FOUND, **CANNOT_GRANT, 409: error(BUILTIN_409)})
async def change_profile(request: Request, name: str, change: ProfileChange,
                         principal: Principal = require(Permission.PROFILES_MANAGE)
                         ) -> dict[str, Any]:
    """Change a custom profile's permissions or description. The permissions it gains
    must be the token's user's; its holders have the new ones from their next request."""
    asked = {} if change.permissions is None else {"permissions": sorted(change.permissions)}
    async with audited(request, principal, "profile.change", "profile", name, asked):
        if name in BUILTIN:
            raise _builtin(name, "changed")
        try:
            changed = await request.app.state.store.update_profile(name, profile_change(
                principal.permissions, change.permissions, change.description, time.time()))
        except ProfileError as exc:
            raise refused(exc) from None
        if changed is None:
            raise _not_found(name)
    return _public(changed)


@router.delete("/v1/security-profiles/{name}", status_code=204, response_class=Response,
               responses={**NOT_FOUND, 409: error(
                   f"{BUILTIN_409}; profile_in_use: users hold it (the message names up "
                   "to 10)")})
async def delete_profile(request: Request, name: str,
                         principal: Principal = require(Permission.PROFILES_MANAGE)) -> None:
    """Delete a custom profile no user holds."""
    async with audited(request, principal, "profile.delete", "profile", name):
        if name in BUILTIN:
            raise _builtin(name, "deleted")
        try:
            deleted = await request.app.state.store.delete_profile(name)
        except ProfileError as exc:
            raise refused(exc) from None
        if not deleted:
            raise _not_found(name)
