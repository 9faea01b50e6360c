"""Browser sessions and the socket tickets they issue (docs/security.md#signing-in-from-a-browser).

A session's secret (``ccs_`` + 43 url-safe characters) is the cookie; the store keeps
only its SHA-256 digest, as for API tokens. A session ends when revoked (sign-out, a
new password), after ``idle_seconds`` without a request, or ``lifetime_seconds`` after
it began, whichever comes first. Its CSRF token is derived from the secret, so it needs
no storing and is worthless without the cookie.

A ticket (``cct_`` + 43 characters) lets a page open one socket as its session: browsers
send no headers of their own with a WebSocket. It is kept in the store (shared by every
API node, in both deployments) for TICKET_SECONDS and deleted as it is used, so it opens
one socket at most.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from monitoring.credentials import Accounts, User, digest, principal_of
from monitoring.permissions import Principal
from monitoring.scope import Directory

SESSION_MARK = "ccs_"
TICKET_MARK = "cct_"
MAX_SECRET_LEN = 200
TICKET_SECONDS = 30.0
# A session's last use is written at most this often (each request would be a write);
# its idle expiry is as late as this, at most.
TOUCH_SECONDS = 60.0


@dataclass(slots=True)
class Session:
    digest: str  # SHA-256 of the secret
    user_id: str
    created_at: float
    seen_at: float  # its last use (to TOUCH_SECONDS)


@dataclass(slots=True)
class Ticket:
    digest: str
    session_digest: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session as a request or socket names it: by the digest the store keys it by."""

    digest: str


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle_seconds: float
    lifetime_seconds: float

    def expires_at(self, session: Session) -> float:
        return min(session.created_at + self.lifetime_seconds,
                   session.seen_at + self.idle_seconds)

    def alive(self, session: Session, now: float) -> bool:
        return now < self.expires_at(session)

    def due_touch(self, session: Session, now: float) -> bool:
        return now - session.seen_at >= min(TOUCH_SECONDS, self.idle_seconds / 10)


class Sessions(Accounts, Protocol):
    """What sessions and tickets read and write (the service's store)."""

    async def add_session(self, session: Session) -> None: ...
    async def find_session(self, digest: str) -> Session | None: ...
    async def touch_session(self, digest: str, at: float) -> None: ...
    async def end_session(self, digest: str) -> bool: ...
    async def prune_sessions(self, seen_before: float, created_before: float) -> int: ...
    async def add_ticket(self, ticket: Ticket) -> None: ...
    async def take_ticket(self, digest: str, now: float) -> str | None: ...


def _secret(mark: str) -> str:
    return mark + secrets.token_urlsafe(32)


def _well_formed(secret: str, mark: str) -> bool:
    return secret.startswith(mark) and len(secret) <= MAX_SECRET_LEN


def key_of(secret: str | None) -> SessionKey | None:
    """The session a cookie names (None: not a session secret at all)."""
    return SessionKey(digest(secret)) if secret and _well_formed(secret, SESSION_MARK) \
        else None


def csrf_token(secret: str) -> str:
    """The CSRF token of the session whose secret is ``secret``."""
    return hashlib.sha256(b"csrf\x00" + secret.encode()).hexdigest()


def csrf_matches(secret: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(csrf_token(secret).encode(),
                                                       offered.encode())


async def start_session(store: Sessions, user: User, now: float,
                        policy: SessionPolicy) -> tuple[Session, str]:
    """A new session of ``user``, and its secret (the cookie: never stored). Sessions
    past their expiry are deleted on the way (nothing else would)."""
    await store.prune_sessions(now - policy.idle_seconds, now - policy.lifetime_seconds)
    secret = _secret(SESSION_MARK)
    session = Session(digest(secret), user.id, now, now)
    await store.add_session(session)
    return session, secret


async def live_session(store: Sessions, key: SessionKey, policy: SessionPolicy,
                       now: float) -> Session | None:
    session = await store.find_session(key.digest)
    return session if session is not None and policy.alive(session, now) else None


async def session_principal(store: Sessions, key: SessionKey, directory: Directory,
                            policy: SessionPolicy, now: float,
                            touch: bool) -> Principal | None:
    """The principal of a live session of an enabled user; ``touch``: a request used it
    (its idle expiry moves on)."""
    session = await live_session(store, key, policy, now)
    if session is None:
        return None
    principal = await principal_of(store, await store.get_user(user_id=session.user_id),
                                   directory)
    if principal is not None and touch and policy.due_touch(session, now):
        await store.touch_session(key.digest, now)
    return principal


async def issue_ticket(store: Sessions, key: SessionKey, now: float) -> str:
    secret = _secret(TICKET_MARK)
    await store.add_ticket(Ticket(digest(secret), key.digest, now + TICKET_SECONDS))
    return secret


async def redeem_ticket(store: Sessions, secret: str | None, now: float) -> SessionKey | None:
    """The session a ticket was issued for, if it is unused and unexpired; it is used
    up either way."""
    if not secret or not _well_formed(secret, TICKET_MARK):
        return None
    found = await store.take_ticket(digest(secret), now)
    return None if found is None else SessionKey(found)
