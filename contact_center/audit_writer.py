"""Writing the audit log (docs/audit.md): entries are queued and appended in batches, one
transaction each (group commit). A route that must not answer before its entry is durable
waits for its batch (`record`). Failed authentications, which anyone can cause at will,
are not waited for (`record_soon`): they take at most half the queue, and past that they
are only counted, the counts written later as one ``audit.dropped`` entry, so a flood
costs neither memory nor the room the other entries need.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from contact_center import stopping
from contact_center.stores import Store
from monitoring.audit import AuditEntry, make_entry

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000  # entries waiting to be written, at most
SOON_SHARE = 0.5  # ... of which failed authentications may take this share
BATCH_SIZE = 500  # entries per transaction, at most
RECORD_WAIT_SECONDS = 5.0  # a route waits this long for room in a full queue
RETRY_SECONDS = 1.0  # after a failed write, the next waits this long
FLUSH_SECONDS = 2.0  # stopping: what is queued is written within this


class AuditUnavailable(Exception):
    """The entry could not be written (the store failed, or the writer is stopped)."""


@dataclass(slots=True)
class Dropped:
    """Entries not written, counted per action and per reason."""

    counts: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter)
    first_at: float = 0.0
    last_at: float = 0.0

    def add(self, action: str, why: str, at: float, count: int = 1) -> None:
        if not self.counts:
            self.first_at = at
        self.counts[(action, why)] += count
        self.last_at = at

    def take(self) -> AuditEntry | None:
        """The summary entry of what was counted (and start counting afresh)."""
        if not self.counts:
            return None
        details = {"entries": sum(self.counts.values()), "first_at": self.first_at,
                   "last_at": self.last_at,
                   "counts": [{"action": action, "why": why, "entries": n}
                              for (action, why), n in sorted(self.counts.items())]}
        self.counts = collections.Counter()
        return make_entry(time.time(), None, "audit.dropped", None, None, "dropped", None,
                          None, details)

    def put_back(self, summary: AuditEntry) -> None:
        """A summary that could not be written is counted again."""
        for count in summary.details["counts"]:
            self.add(count["action"], count["why"], summary.details["last_at"],
                     count["entries"])
        self.first_at = min(self.first_at, summary.details["first_at"])


Waiter = asyncio.Future[None] | None
Item = tuple[AuditEntry | None, Waiter]  # (None, a waiter): a flush, done when it is reached


class AuditWriter:
    def __init__(self, store: Store, queue_size: int = QUEUE_SIZE,
                 batch_size: int = BATCH_SIZE) -> None:
        self.store, self.batch_size = store, batch_size
        self._queue: asyncio.Queue[Item] = asyncio.Queue(queue_size)
        self._soon_room = int(queue_size * SOON_SHARE)
        self.dropped = Dropped()
        self._runner: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="audit-writer")

    async def record(self, entry: AuditEntry) -> None:
        """Append ``entry``; returns once it is committed. `AuditUnavailable` if it could
        not be (nor did it find room within RECORD_WAIT_SECONDS)."""
        if self._runner is None or self._runner.done():
            raise AuditUnavailable("the audit writer is not running")
        await self._wait_for(entry)

    async def _wait_for(self, entry: AuditEntry | None) -> None:
        """Queue ``entry`` (None: a flush) and wait until it is written."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((entry, waiter))
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self._queue.put((entry, waiter)), RECORD_WAIT_SECONDS)
            except TimeoutError:
                raise AuditUnavailable("the audit queue stayed full") from None
        await waiter

    def record_soon(self, entry: AuditEntry) -> None:
        """Append ``entry`` without waiting: when it fits in its share of the queue; else
        it is counted in the next ``audit.dropped`` entry."""
        if self._stopped:
            return
        if self._queue.qsize() >= self._soon_room:
            self.dropped.add(entry.action, "queue full", entry.at)
        else:
            self._queue.put_nowait((entry, None))

    async def stop(self) -> None:
        """Write what is queued (within FLUSH_SECONDS), then stop."""
        self._stopped = True
        if self._runner is None or self._runner.done():
            return
        if not await stopping.step("writing the audit log", self._wait_for(None),
                                   FLUSH_SECONDS):
            log.warning("stopping: %d audit entries were not written (and %d counted)",
                        self._queue.qsize(), sum(self.dropped.counts.values()))
        await stopping.cancel([self._runner], "the audit writer")

    async def _run(self) -> None:
        while True:
            items = []
            if self._queue.empty() and not self.dropped.counts:
                items.append(await self._queue.get())
            while len(items) < self.batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait())
            await self._write(items)

    async def _write(self, items: list[Item]) -> None:
        summary = self.dropped.take()
        entries = [entry for entry, _ in items if entry is not None]
        entries += [summary] if summary else []
        try:
            if entries:
                await self.store.append_audit(entries)
        except Exception as exc:
            log.warning("writing %d audit entries failed: %r", len(entries), exc)
            for entry, waiter in items:
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_exception(AuditUnavailable(str(exc)))
                elif entry is not None:
                    self.dropped.add(entry.action, "write failed", entry.at)
            if summary is not None:
                self.dropped.put_back(summary)
            await asyncio.sleep(RETRY_SECONDS)  # (a store that is down is not hammered)
            return
        for _, waiter in items:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
