"""Who may see what, on this node now: the directory (teams, agents) as of the store's
access version, re-read when that moves, and the principal of a token or a browser
session resolved against it.

A change made through this node is seen by its next request (`changed`); one made through
another node, or the CLI, within REFRESH_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from contact_center.stores import Store
from monitoring.credentials import authenticate
from monitoring.permissions import Principal
from monitoring.scope import Directory
from monitoring.sessions import SessionKey, SessionPolicy, session_principal

REFRESH_SECONDS = 1.0
Credential = str | SessionKey  # an API token, or a browser session


class Access:
    def __init__(self, store: Store, sessions: SessionPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.sessions = sessions or SessionPolicy(1800.0, 43200.0)
        self.clock = clock  # what sessions and tickets expire by (tests set it)
        self._directory: Directory | None = None
        self._checked_at = -REFRESH_SECONDS
        self._lock = asyncio.Lock()

    async def directory(self) -> Directory:
        """The directory, checked against the access version at most every
        REFRESH_SECONDS (one small read), re-read when it moved."""
        if self._directory is None or time.monotonic() - self._checked_at >= REFRESH_SECONDS:
            async with self._lock:  # one check at a time, whoever asks meanwhile
                if self._directory is None or \
                        time.monotonic() - self._checked_at >= REFRESH_SECONDS:
                    await self._refresh()
        assert self._directory is not None
        return self._directory

    async def version(self) -> int:
        return (await self.directory()).version

    def changed(self) -> None:
        """A change was made here: check the version on the next read."""
        self._checked_at = -REFRESH_SECONDS

    async def principal(self, credential: Credential | None) -> Principal | None:
        return (await self.principal_at(credential))[0]

    async def principal_at(self, credential: Credential | None,
                           used: bool = False) -> tuple[Principal | None, int]:
        """The principal, and the access version its scope was resolved at; ``used``: a
        request used the session (its idle expiry moves on)."""
        directory = await self.directory()
        if isinstance(credential, SessionKey):
            return await session_principal(self.store, credential, directory, self.sessions,
                                           self.clock(), used), directory.version
        return await authenticate(self.store, credential, directory), directory.version

    async def _refresh(self) -> None:
        version = await self.store.access_version()
        if self._directory is None or self._directory.version != version:
            self._directory = await self.store.load_directory()
        self._checked_at = time.monotonic()
