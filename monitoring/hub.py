"""Fan-out of live messages to subscribers (monitor, alert and live-view streams).

Every subscriber has its own bounded queue; publishing never waits on a subscriber.
A subscriber that falls behind by more than its queue holds is cut off (and told why)
rather than slowing the pipeline or growing memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, NamedTuple

Filter = Callable[[dict[str, Any]], bool]


class Message(NamedTuple):
    type: str
    text: str  # serialized once, sent to every subscriber as is


class Subscription:
    def __init__(self, topics: frozenset[str], maxsize: int, accept: Filter | None) -> None:
        self.topics = topics
        self.accept = accept
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, message: Message) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # Drop the backlog and leave a single None behind: it wakes the sender,
            # which then closes the connection as too slow.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self) -> Message | None:
        """The next message, or None once this subscriber has overflowed."""
        return await self.queue.get()


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._by_topic: dict[str, set[Subscription]] = {}

    def subscribe(self, *topics: str, accept: Filter | None = None) -> Subscription:
        sub = Subscription(frozenset(topics), self._queue_size, accept)
        for topic in topics:
            self._by_topic.setdefault(topic, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        for topic in sub.topics:
            subs = self._by_topic.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_topic[topic]

    def subscribers(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))

    def publish(self, topic: str, message: dict[str, Any],
                meta: dict[str, Any] | None = None) -> None:
        """Serialize once and offer to every subscriber whose filter accepts ``meta``."""
        subs = self._by_topic.get(topic)
        if not subs:
            return
        serialized = Message(message["type"], json.dumps(message, separators=(",", ":")))
        for sub in list(subs):
            if sub.accept is None or sub.accept(meta or message):
                sub.offer(serialized)
