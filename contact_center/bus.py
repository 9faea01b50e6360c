"""The bus: how ingested events reach the pipeline runner.

`InMemoryBus` is the embedded implementation: a bounded queue, so a flood of events
pushes back on the ingest sockets instead of growing memory. A Redis Streams bus will
implement the same protocol for the scale-out deployment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from contact_center.protocol import ErrorCode, Event, ProtocolError, Reply


@dataclass(eq=False, slots=True)
class Source:
    """Where events come from: one socket, or one REST request. Once the pipeline
    refuses one of a source's events (storage down, a bug), it refuses the source's later
    events of that conversation too, so nothing after the gap is applied before the
    connector resends."""

    refused: set[str] = field(default_factory=set)  # conversation ids


@dataclass(slots=True)
class Delivery:
    event: Event
    source: Source
    received_at: float
    reply: asyncio.Future[Reply]

    def settle(self, reply: Reply) -> None:
        if not self.reply.done():
            self.reply.set_result(reply)


class Bus(Protocol):
    async def submit(self, event: Event, source: Source,
                     max_wait: float | None) -> asyncio.Future[Reply]:
        """Enqueue an event, waiting up to ``max_wait`` seconds for room (None: as long as
        it takes); the returned future resolves once the event is durably handled."""
        ...

    async def take(self, max_items: int) -> list[Delivery]:
        """Wait for at least one delivery and return up to ``max_items``."""
        ...

    def done(self, count: int) -> None:
        """Mark ``count`` taken deliveries as settled."""
        ...

    async def drain(self) -> None:
        """Wait until every submitted event has been settled."""
        ...


class InMemoryBus:
    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, event: Event, source: Source,
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
