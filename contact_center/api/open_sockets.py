"""Open sockets, re-checked when who may do what changes: a revoked token, a disabled
user, a withdrawn permission or a narrowed scope closes the sockets it no longer allows
(1008, with the reason) within about two seconds of the change (CHECK_SECONDS, plus the
directory's `access.REFRESH_SECONDS`), whichever node made it.

Each node reads the store's access version every CHECK_SECONDS (one small read); every
socket whose principal was resolved at an older version has its token authenticated
again (once per token). A socket that could not be re-checked (the database away) keeps
its older version, and is re-checked at the next read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import WebSocket

from contact_center.access import Access, Credential
from monitoring.permissions import Permission, Principal
from monitoring.sessions import SessionKey

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
POLICY = 1008  # "policy violation": what the socket showed is no longer allowed
TOKEN = "socket_token"  # where `authorize_websocket` leaves the token, in the socket's scope
VERSION = "access_version"  # ... and the access version its principal was resolved at

StillAllowed = Callable[[Principal], str | None]
"""Why a socket may no longer stay open for this (changed) principal; None: it may."""


@dataclass(eq=False)
class Held:
    """One open socket: whom it serves (``principal`` follows their changes) and the
    event that closes it."""

    token: Credential  # an API token, or the session of the ticket it opened with
    principal: Principal
    permissions: tuple[Permission, ...]  # it needs one of these
    still_allowed: StillAllowed
    version: int  # the access version ``principal`` was resolved at
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    async def closed(self) -> tuple[int, str]:
        """Wait until it must close; the close code and reason."""
        await self.closing.wait()
        return POLICY, self.reason

    def close(self, reason: str) -> None:
        self.reason = reason[:120]  # a close reason is at most 123 bytes
        self.closing.set()


def _keep(principal: Principal) -> str | None:
    return None


class OpenSockets:
    def __init__(self, access: Access) -> None:
        self.access = access
        self._held: set[Held] = set()

    def hold(self, ws: WebSocket, principal: Principal, *permissions: Permission,
             still_allowed: StillAllowed = _keep) -> Held:
        held = Held(ws.scope.get(TOKEN, ""), principal, permissions, still_allowed,
                    ws.scope.get(VERSION, -1))
        self._held.add(held)
        return held

    def release(self, held: Held) -> None:
        self._held.discard(held)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                version = await self.access.version()
                await self.recheck([h for h in self._held if h.version < version])
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: checked again next time
                log.warning("re-checking open sockets failed; retrying", exc_info=True)

    async def recheck(self, stale: list[Held]) -> None:
        principals: dict[Credential, tuple[Principal | None, int]] = {}
        for held in stale:
            if held.token not in principals:
                principals[held.token] = await self.access.principal_at(held.token)
            principal, held.version = principals[held.token]
            if principal is None:
                reason: str | None = (
                    "revoked: the session ended or its user was disabled"
                    if isinstance(held.token, SessionKey) else
                    "revoked: the token was revoked or its user disabled")
            elif held.permissions and not any(principal.can(p) for p in held.permissions):
                reason = "forbidden: a permission this stream needs was withdrawn"
            else:
                reason = held.still_allowed(principal)
                held.principal = principal
            if reason is not None:
                self._held.discard(held)
                held.close(reason)
