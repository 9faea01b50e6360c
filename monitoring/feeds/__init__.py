"""Live feeds: what the supervision routes read of the conversations in progress, side by
side in this folder.

`memory.MemoryFeed` reads the embedded pipeline's memory; `redis.RedisFeed` reads what
scale-out workers keep in Redis and relays their live messages into this node's hub (its
other half, `redis.RedisOutlet`, is how workers publish). A snapshot carries each
conversation's message number, so a stream opened on it sends only the messages after
it: catch-up then live, no gap, no overlap, on every node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from monitoring.hub import Hub
from monitoring.metrics import AgentLoad, agent_metrics

log = logging.getLogger(__name__)

LIVE_TOPIC = "live"
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


def conversation_updated(summary: dict[str, Any]) -> dict[str, Any]:
    return {"type": "conversation.updated", "conversation": summary}


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
            self.hub.publish(LIVE_TOPIC, {"type": "agents.updated", "agents": agents})
        except Exception:
            self._due = None
            log.warning("pushing agent metrics failed", exc_info=True)
