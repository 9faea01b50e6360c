"""Who may see what, on this node now: the directory (teams, agents) as of the store's
access version, re-read when that moves, and the principal of a token resolved against it.

A change made through this node is seen by its next request (`changed`); one made through
another node, or the CLI, within REFRESH_SECONDS.
"""

from __future__ import annotations

import asyncio
import time

from contact_center.stores import Store
from monitoring.credentials import authenticate
from monitoring.permissions import Principal
from monitoring.scope import Directory

REFRESH_SECONDS = 1.0


class Access:
    def __init__(self, store: Store) -> None:
        self.store = store
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

    async def principal(self, token: str | None) -> Principal | None:
        return (await self.principal_at(token))[0]

    async def principal_at(self, token: str | None) -> tuple[Principal | None, int]:
        """The principal, and the access version its scope was resolved at."""
        directory = await self.directory()
        return await authenticate(self.store, token, directory), directory.version

    async def _refresh(self) -> None:
        version = await self.store.access_version()
        if self._directory is None or self._directory.version != version:
            self._directory = await self.store.load_directory()
        self._checked_at = time.monotonic()
