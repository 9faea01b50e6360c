"""Fan-out of live messages to subscribers (monitor, alert and live-view streams).

Every subscriber has its own bounded queue; publishing never waits on a subscriber.
A subscriber that falls behind by more than its queue holds is cut off (and told why)
rather than slowing the pipeline or growing memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from monitoring import codec

Filter = Callable[[dict[str, Any]], bool]


class Message(NamedTuple):
    type: str
    text: str  # serialized once, sent to every subscriber as is
    # Orders a conversation's messages against a snapshot (0: not numbered); see feeds.
    number: int = 0
    conversation_id: str | None = None


class Subscription:
    def __init__(self, topics: set[str], maxsize: int, accept: Filter | None) -> None:
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

    @property
    def waiting(self) -> bool:
        """Whether `take` has a message (or the None of an overflow) to give."""
        return not self.queue.empty()

    def take(self) -> Message | None:
        """The next message, now: call only while `waiting`."""
        return self.queue.get_nowait()


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._queue_size = queue_size
        self._by_topic: dict[str, set[Subscription]] = {}

    def subscribe(self, *topics: str, accept: Filter | None = None,
                  queue_size: int | None = None) -> Subscription:
        return self.attach(Subscription(set(topics), queue_size or self._queue_size, accept))

    def attach(self, sub: Subscription) -> Subscription:
        """Subscribe ``sub`` (a `Subscription` of another kind) to its topics."""
        for topic in sub.topics:
            self._by_topic.setdefault(topic, set()).add(sub)
        return sub

    def follow(self, sub: Subscription, topic: str) -> None:
        """Add a topic to a subscription (an ingest socket's conversations come and go)."""
        sub.topics.add(topic)
        self._by_topic.setdefault(topic, set()).add(sub)

    def unfollow(self, sub: Subscription, topic: str) -> None:
        sub.topics.discard(topic)
        self._leave(sub, topic)

    def unsubscribe(self, sub: Subscription) -> None:
        for topic in sub.topics:
            self._leave(sub, topic)

    def _leave(self, sub: Subscription, topic: str) -> None:
        subs = self._by_topic.get(topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_topic[topic]

    def subscribers(self, topic: str) -> int:
        return len(self._by_topic.get(topic, ()))

    @property
    def subscriptions(self) -> int:
        return len({sub for subs in self._by_topic.values() for sub in subs})

    def publish(self, topic: str, message: dict[str, Any],
                meta: dict[str, Any] | None = None, number: int = 0) -> None:
        """Serialize once and offer to every subscriber whose filter accepts ``meta``
        (else the message)."""
        if topic in self._by_topic:
            text = codec.dumps(message)
            self.offer(topic, Message(message["type"], text, number, _about(message)),
                       meta or message)

    def offer(self, topic: str, message: Message, meta: dict[str, Any] | None) -> None:
        """Offer an already serialized message; filters see ``meta``."""
        for sub in list(self._by_topic.get(topic, ())):
            if sub.accept is None or (meta is not None and sub.accept(meta)):
                sub.offer(message)

    def tell(self, topic: str, message: dict[str, Any]) -> None:
        """Offer to every subscriber of ``topic``, unfiltered (e.g. ``resync``)."""
        text = codec.dumps(message)
        for sub in list(self._by_topic.get(topic, ())):
            sub.offer(Message(message["type"], text))

    def broadcast(self, message: dict[str, Any]) -> None:
        """Offer to every subscriber of every topic, unfiltered (e.g. ``resync``)."""
        text = codec.dumps(message)
        subs = {sub for topic_subs in self._by_topic.values() for sub in topic_subs}
        for sub in subs:
            sub.offer(Message(message["type"], text))


def _about(message: dict[str, Any]) -> str | None:
    """The conversation a message is about, for ordering it against a snapshot."""
    if "conversation_id" in message:
        return str(message["conversation_id"])
    conversation = message.get("conversation")
    return str(conversation["id"]) if isinstance(conversation, dict) else None
