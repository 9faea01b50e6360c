"""Writing the audit log (docs/audit.md#writing): entries are queued and appended in
batches, one transaction each (group commit). A route that must not answer before its
entry is durable waits for its batch (`record`).

Failed authentications, which anyone can cause at will, are not waited for
(`record_soon`), take at most half the queue, and past that are only counted; so are
those of an address already slowed down for failing too often (`count`). The counts are
written as one ``audit.counted`` entry every SUMMARY_SECONDS at most: a flood costs
neither memory, nor disk beyond that, nor the room the other entries need.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
SUMMARY_SECONDS = 10.0  # counts are written this long after the first was counted
COUNTED_KEYS = 100  # (action, why, source) counted apart; others lumped per action, why


class AuditUnavailable(Exception):
    """The entry could not be written (the store failed, or the writer is stopped)."""


Key = tuple[str, str, str | None]  # action, why, source


@dataclass(slots=True)
class Counts:
    """Entries not written one by one: counted per action, why and source."""

    counts: collections.Counter[Key] = field(default_factory=collections.Counter)
    first_at: float = 0.0
    last_at: float = 0.0
    since: float = 0.0  # (monotonic) when the first was counted

    def add(self, action: str, why: str, source: str | None, at: float,
            count: int = 1) -> None:
        key: Key = (action, why, source)
        if key not in self.counts and len(self.counts) >= COUNTED_KEYS:
            key = (action, why, None)  # (bounded, however many addresses)
        if not self.counts:
            self.first_at, self.since = at, time.monotonic()
        self.counts[key] += count
        self.first_at, self.last_at = min(self.first_at, at), max(self.last_at, at)

    def due_in(self) -> float | None:
        """Seconds until the counts are due to be written (None: nothing counted)."""
        if not self.counts:
            return None
        return max(0.0, self.since + SUMMARY_SECONDS - time.monotonic())

    def take(self) -> AuditEntry | None:
        """The entry that records the counts (and start counting afresh)."""
        if not self.counts:
            return None
        details = {"entries": sum(self.counts.values()), "first_at": self.first_at,
                   "last_at": self.last_at,
                   "counts": [{"action": action, "why": why, "source": source, "entries": n}
                              for (action, why, source), n in sorted(
                                  self.counts.items(), key=lambda c: str(c[0]))]}
        self.counts, self.last_at = collections.Counter(), 0.0
        return make_entry(time.time(), None, "audit.counted", None, None, "counted", None,
                          None, details)

    def put_back(self, summary: AuditEntry) -> None:
        """An entry of counts that could not be written is counted again."""
        for count in summary.details["counts"]:
            self.add(count["action"], count["why"], count["source"],
                     summary.details["last_at"], count["entries"])
        self.first_at = min(self.first_at, summary.details["first_at"])


Waiter = asyncio.Future[None] | None
# (None, a waiter): a flush, done when it is reached; (None, None): only a wake-up.
Item = tuple[AuditEntry | None, Waiter]


class AuditWriter:
    def __init__(self, store: Store, queue_size: int = QUEUE_SIZE,
                 batch_size: int = BATCH_SIZE) -> None:
        self.store, self.batch_size = store, batch_size
        self._queue: asyncio.Queue[Item] = asyncio.Queue(queue_size)
        self._soon_room = int(queue_size * SOON_SHARE)
        self.counted = Counts()
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
                async with asyncio.timeout(RECORD_WAIT_SECONDS):
                    await self._queue.put((entry, waiter))
            except TimeoutError:
                raise AuditUnavailable("the audit queue stayed full") from None
        await waiter

    def record_soon(self, entry: AuditEntry) -> None:
        """Append ``entry`` without waiting: when it fits in its share of the queue; else
        it is counted."""
        if self._stopped:
            return
        if self._queue.qsize() >= self._soon_room:
            self.count(entry, "queue full")
        else:
            self._queue.put_nowait((entry, None))

    def count(self, entry: AuditEntry, why: str) -> None:
        """Count ``entry`` instead of writing it."""
        if self._stopped:
            return
        first = not self.counted.counts
        self.counted.add(entry.action, why, entry.source, entry.at)
        if first:  # the writer learns when they fall due (a full queue wakes it anyway)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait((None, None))

    async def stop(self) -> None:
        """Write what is queued and counted (within FLUSH_SECONDS), then stop."""
        self._stopped = True
        if self._runner is None or self._runner.done():
            return
        if not await stopping.step("writing the audit log", self._wait_for(None),
                                   FLUSH_SECONDS):
            log.warning("stopping: %d audit entries were not written (and %d counted)",
                        self._queue.qsize(), sum(self.counted.counts.values()))
        await stopping.cancel([self._runner], "the audit writer")

    async def _run(self) -> None:
        while True:
            items: list[Item] = []
            if self._queue.empty():
                with contextlib.suppress(TimeoutError):  # (the counts are due)
                    async with asyncio.timeout(self.counted.due_in()):
                        items.append(await self._queue.get())
            while len(items) < self.batch_size and not self._queue.empty():
                items.append(self._queue.get_nowait())
            await self._write(items)

    async def _write(self, items: list[Item]) -> None:
        flush = any(entry is None and waiter is not None for entry, waiter in items)
        summary = self.counted.take() if flush or self.counted.due_in() == 0.0 else None
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
                    self.counted.add(entry.action, "write failed", entry.source, entry.at)
            if summary is not None:
                self.counted.put_back(summary)
            await asyncio.sleep(RETRY_SECONDS)  # (a store that is down is not hammered)
            return
        for _, waiter in items:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
