"""The embedded bus: a bounded in-process queue between ingest and the pipeline runner."""

from __future__ import annotations

import asyncio
import time

from contact_center.buses import Delivery, Source
from contact_center.protocol import ErrorCode, ProtocolError, Reply, Submitted


class InMemoryBus:
    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)

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
                await asyncio.wait_for(self._queue.put(delivery), max_wait)
            except TimeoutError:
                raise ProtocolError(ErrorCode.OVERLOADED,
                                    "the pipeline is saturated; retry later",
                                    event.ref) from None
        return future

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
