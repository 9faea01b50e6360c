"""Live feeds, side by side in this folder: where a committed batch's live messages are
published (an `Outlet`), and what the supervision routes read of the conversations in
progress (a `LiveFeed`).

Embedded (`memory`): `HubOutlet` publishes into this process's hub, and `MemoryFeed`
reads the pipeline's memory. Scale-out (`redis`): workers publish through `RedisOutlet`;
each API node's `RedisFeed` reads what they keep in Redis and relays their live messages
into its hub. The messages' topics and shapes are in `monitoring.messages`. A snapshot carries each
conversation's message number, so a stream opened on it sends only the messages after
it: catch-up then live, no gap, no overlap, on every node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitoring.hub import Hub
from monitoring.messages import LIVE_TOPIC, LiveMessage, agents_updated
from monitoring.metrics import AgentLoad, agent_metrics

log = logging.getLogger(__name__)

AGENT_METRICS_INTERVAL = 1.0  # seconds between agent metric pushes on the live board


@dataclass(slots=True)
class Live:
    """A live conversation's summary and the number of its last message."""

    summary: dict[str, Any]
    number: int


@dataclass(slots=True)
class CatchUp:
    summary: dict[str, Any]
    transcript: list[dict[str, Any]]  # recorded entries, oldest first
    number: int


class LiveFeed(Protocol):
    async def ready(self) -> None:
        """Return once the feed answers for every live conversation (embedded: after a
        restart, once they are restored); a stream subscribes after it."""
        ...

    async def conversations(self) -> list[Live]:
        """Every live conversation."""
        ...

    async def conversation(self, conversation_id: str) -> Live | None: ...

    async def catch_up(self, conversation_id: str) -> CatchUp | None:
        """A live conversation's summary and recent transcript; None if not live here."""
        ...

    async def agent_loads(self) -> list[AgentLoad]: ...


class Watched(Protocol):
    """A live conversation as outlets see it (`contact_center.conversation.Conversation`)."""

    shown: int  # the number of its last monitor message published

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def published(self) -> int:
        """The number of its last monitor message (published or not yet)."""
        ...
    @property
    def recent(self) -> list[dict[str, Any]]:
        """Its kept monitor messages, for a catch-up."""
        ...

    def summary(self, now: float) -> dict[str, Any]: ...
    def remember(self, entry: dict[str, Any]) -> None: ...


class Committed(Protocol):
    """What an outlet publishes of a committed batch (`contact_center.applier.Effects`)."""

    @property
    def messages(self) -> Sequence[LiveMessage]: ...
    @property
    def touched(self) -> Mapping[str, Watched]: ...


@dataclass(slots=True)
class Announcement:
    """Live messages an API node publishes itself (a change to an alert of an ended
    conversation): no conversation state goes with them."""

    messages: Sequence[LiveMessage]
    touched: Mapping[str, Watched] = field(default_factory=dict)


class Outlet(Protocol):
    """Where a committed batch's live messages go."""

    async def publish(self, batch: Committed) -> None:
        """Publish the messages and the touched conversations' updates; never raises."""
        ...

    async def resync(self, conversation_ids: Collection[str]) -> None:
        """Tell live subscribers that what they saw may not have been kept."""
        ...


class AgentPush:
    """Pushes agent metrics on the live board at most every AGENT_METRICS_INTERVAL, and
    always once more after the last change."""

    def __init__(self, hub: Hub, loads: Callable[[], Awaitable[list[AgentLoad]]]) -> None:
        self.hub, self.loads = hub, loads
        self._due: asyncio.Task[None] | None = None
        self._sent_at = 0.0

    def changed(self) -> None:
        if self._due is None and self.hub.subscribers(LIVE_TOPIC):
            self._due = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._sent_at + AGENT_METRICS_INTERVAL
                                    - time.monotonic()))
            self._due, self._sent_at = None, time.monotonic()
            agents = agent_metrics(await self.loads())
            self.hub.publish(LIVE_TOPIC, agents_updated(agents))
        except Exception:
            self._due = None
            log.warning("pushing agent metrics failed", exc_info=True)
