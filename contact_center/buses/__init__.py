"""The bus: how ingested events reach the pipeline, side by side in this folder.

`memory.InMemoryBus` is the embedded bus: a bounded queue in the process, taken by the
pipeline runner beside it. `redis.RedisBus` is the scale-out API node's bus: events go to
Redis Streams partitions, pipeline workers apply them (`contact_center.worker`) and
answer through the node's reply stream. Both bound what is in flight, so a flood of
events pushes back on the ingest sockets instead of growing memory.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from contact_center.protocol import Reply, Submitted


@dataclass(eq=False, slots=True)
class Source:
    """Where events come from: one socket, or one REST request. Once the pipeline
    refuses one of a source's events (storage down, a bug), it refuses the source's later
    events of that conversation too, so nothing after the gap is applied before the
    connector resends."""

    refused: set[str] = field(default_factory=set)  # conversation ids
    # Names the source to scale-out workers, which keep its refused conversations.
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    # A connector socket that takes pushes (whisper, barge) for the conversations it feeds.
    outbound: bool = False


@dataclass(slots=True)
class Delivery:
    event: Submitted
    source: Source
    received_at: float
    reply: asyncio.Future[Reply]

    def settle(self, reply: Reply) -> None:
        if not self.reply.done():
            self.reply.set_result(reply)


class Bus(Protocol):
    @property
    def depth(self) -> int:
        """Events submitted and not answered yet."""
        ...

    async def submit(self, event: Submitted, source: Source,
                     max_wait: float | None) -> asyncio.Future[Reply]:
        """Enqueue an event, waiting up to ``max_wait`` seconds for room (None: as long as
        it takes); the returned future resolves once the event is durably handled."""
        ...

    async def drain(self) -> None:
        """Wait until every submitted event has been settled."""
        ...


from contact_center.buses.memory import InMemoryBus  # noqa: E402

__all__ = ["Bus", "Delivery", "InMemoryBus", "Source"]
