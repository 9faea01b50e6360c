"""The embedded bus: a bounded in-process queue between ingest and the pipeline runner."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from contact_center.buses import Delivery, Source
from contact_center.protocol import ErrorCode, ProtocolError, Reply, Submitted


@dataclasses.dataclass
class _Fill:
    """A wait for the queue to hold ``count`` events (see `InMemoryBus.fill`)."""

    count: int
    reached: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class InMemoryBus:
    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)
        self._fill: _Fill | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, event: Submitted, source: Source,
                     max_wait: float | None) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        delivery = Delivery(event, source, time.time(), future)
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            try:
                async with asyncio.timeout(max_wait):
                    await self._queue.put(delivery)
            except TimeoutError:
                raise ProtocolError(ErrorCode.OVERLOADED,
                                    "the pipeline is saturated; retry later",
                                    event.ref) from None
        if self._fill is not None and self._queue.qsize() >= self._fill.count:
            self._fill.reached.set()
        return future

    def holds(self, count: int) -> bool:
        """Whether ``count`` events wait (or as many as the queue holds)."""
        return self._queue.qsize() >= self._at_most(count)

    async def fill(self, count: int) -> None:
        """Return once `holds` ``count``."""
        fill = self._fill = _Fill(self._at_most(count))
        try:
            if self._queue.qsize() < fill.count:
                await fill.reached.wait()
        finally:
            if self._fill is fill:  # (not a later wait's)
                self._fill = None

    async def take(self, max_items: int) -> list[Delivery]:
        items = [await self._queue.get()]
        while len(items) < max_items and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    def done(self, count: int) -> None:
        for _ in range(count):
            self._queue.task_done()

    async def drain(self) -> None:
        await self._queue.join()

    def _at_most(self, count: int) -> int:
        return min(count, self._queue.maxsize or count)
