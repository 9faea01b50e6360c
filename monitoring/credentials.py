"""Users and API tokens: issuing and verifying them (stored hashed).

A token is ``cc_`` + 43 url-safe characters. The store keeps its first 12 characters
(to find it) and its SHA-256 digest (to verify it in constant time); the token itself
is shown once, when issued, and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from monitoring.permissions import Permission, Principal, permissions_of
from monitoring.profiles import ProfileCheck, SecurityProfile, custom_names
from monitoring.scope import Directory, Scope


@dataclass(slots=True)
class User:
    id: str
    username: str
    agent_id: str | None
    profiles: list[str]
    disabled: bool
    created_at: float
    scope: Scope = field(default_factory=Scope)  # what they may see: everything by default


@dataclass(slots=True)
class Token:
    id: str
    user_id: str
    prefix: str
    digest: str
    label: str
    created_at: float
    revoked: bool


class Accounts(Protocol):
    """What issuing and verifying read and write (the service's store)."""

    async def create_user(self, user: User, check: ProfileCheck | None = None) -> None: ...
    async def get_user(self, *, user_id: str | None = None,
                       username: str | None = None) -> User | None: ...
    async def add_token(self, token: Token) -> None: ...
    async def find_token(self, prefix: str) -> Token | None: ...
    async def list_profiles(self, names: Collection[str] | None = None
                            ) -> list[SecurityProfile]: ...


TOKEN_MARK = "cc_"
PREFIX_LEN = 12
MAX_TOKEN_LEN = 200


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_prefix(token: str) -> str:
    return token[len(TOKEN_MARK) : len(TOKEN_MARK) + PREFIX_LEN]


async def create_user(store: Accounts, username: str, profiles: list[str],
                      agent_id: str | None = None, check: ProfileCheck | None = None) -> User:
    """Raises ValueError: the name is taken, or `monitoring.profiles.UnknownProfile`, or
    what ``check`` raises (e.g. `CannotGrant`), checked as the store adds the user."""
    if await store.get_user(username=username) is not None:
        raise ValueError(f"user {username!r} already exists")
    user = User(id=uuid.uuid4().hex, username=username, agent_id=agent_id,
                profiles=list(dict.fromkeys(profiles)), disabled=False,
                created_at=time.time())
    await store.create_user(user, check)
    return user


async def issue_token(store: Accounts, user: User, label: str = "") -> tuple[Token, str]:
    """Create a token for ``user``; returns the record and the secret (shown once)."""
    secret = TOKEN_MARK + secrets.token_urlsafe(32)
    token = Token(id=uuid.uuid4().hex, user_id=user.id, prefix=token_prefix(secret),
                  digest=digest(secret), label=label, created_at=time.time(), revoked=False)
    await store.add_token(token)
    return token, secret


async def authenticate(store: Accounts, secret: str | None,
                       directory: Directory | None = None) -> Principal | None:
    """The principal of a valid token of an enabled user, their scope resolved against
    ``directory`` (without one, a scoped user sees nothing)."""
    if not secret or not secret.startswith(TOKEN_MARK) or len(secret) > MAX_TOKEN_LEN:
        return None
    token = await store.find_token(token_prefix(secret))
    if token is None or token.revoked or not hmac.compare_digest(token.digest, digest(secret)):
        return None
    return await principal_of(store, await store.get_user(user_id=token.user_id), directory)


async def principal_of(store: Accounts, user: User | None,
                       directory: Directory | None = None) -> Principal | None:
    """``user``'s principal if they are enabled (a token's, or a session's)."""
    if user is None or user.disabled:
        return None
    within = (directory or Directory()).within(user.scope, user.agent_id)
    return Principal(user_id=user.id, username=user.username, agent_id=user.agent_id,
                     profiles=tuple(user.profiles),
                     permissions=await permissions_held(store, user.profiles), within=within)


async def permissions_held(store: Accounts, profiles: list[str]) -> frozenset[Permission]:
    """What ``profiles`` grant now: custom ones read afresh (one query, and none for a
    user holding built-in profiles only), so a change to a profile holds from its
    holders' next request."""
    named = custom_names(profiles)
    stored = {p.name: p.permissions for p in await store.list_profiles(named)} if named \
        else {}
    return permissions_of(profiles, stored)
