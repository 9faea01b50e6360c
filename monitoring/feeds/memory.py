"""The embedded outlet and feed: the pipeline publishes into this process's hub, and
the live views read the pipeline's conversations in memory. A conversation ended by a
batch not committed yet is still listed (as it stood before its end) until it is: what
leaves the live views has its end in the store, as on scale-out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from monitoring.alerts import is_open
from monitoring.feeds import AgentPush, CatchUp, Committed, Live, Watched
from monitoring.hub import Hub
from monitoring.messages import (
    LIVE_TOPIC,
    STORAGE_RESYNC,
    conversation_topic,
    conversation_updated,
)
from monitoring.metrics import AgentLoad

log = logging.getLogger(__name__)


class HubOutlet:
    """The embedded outlet: this process's hub, and the recent entries kept in memory
    for a monitor's catch-up."""

    def __init__(self, hub: Hub, agents: AgentPush | None = None) -> None:
        self.hub, self.agents = hub, agents

    async def publish(self, batch: Committed) -> None:
        for message in batch.messages:
            try:
                if message.number:
                    conv = batch.touched[message.conversation_id]
                    # Kept here, with the publishing and after the commit, so catch-up and
                    # live never overlap or gap.
                    if message.keep:
                        conv.remember(message.body)
                    conv.shown = message.number
                self.hub.publish(message.topic, message.published(), message.match,
                                 number=message.number or message.event_id)
            except Exception:  # a failed push must not cost the others theirs
                log.exception("publishing a live message failed")
        if self.hub.subscribers(LIVE_TOPIC) and batch.touched:
            now = time.time()
            for conv in batch.touched.values():
                self.hub.publish(LIVE_TOPIC, conversation_updated(conv.summary(now)),
                                 number=conv.published)
            if self.agents is not None:
                self.agents.changed()

    async def resync(self, conversation_ids: Collection[str]) -> None:
        for cid in conversation_ids:
            self.hub.publish(conversation_topic(cid), STORAGE_RESYNC)
        self.hub.publish(LIVE_TOPIC, STORAGE_RESYNC)


class Memory(Protocol):
    """What the embedded feed reads (`contact_center.embedded_pipeline.EmbeddedPipeline`)."""

    restored: asyncio.Event  # set once every live conversation is back after a start

    @property
    def conversations(self) -> Mapping[str, Remembered]: ...
    @property
    def ending(self) -> Mapping[str, Ending]:
        """Conversations ended by a batch not committed yet."""
        ...


class Ending(Protocol):
    """A conversation ending (`contact_center.applier.Ending`)."""

    @property
    def conv(self) -> Remembered: ...
    @property
    def summary(self) -> dict[str, Any]:
        """As it stood before the end."""
        ...
    @property
    def number(self) -> int:
        """Its message number before the end."""
        ...
    @property
    def alert_open(self) -> bool:
        """Whether its alert was open before the end."""
        ...


class Remembered(Watched, Protocol):
    """A live conversation as the embedded feed reads it."""

    @property
    def agent_id(self) -> str | None: ...
    @property
    def alerts(self) -> int: ...
    @property
    def alert(self) -> dict[str, Any] | None: ...
    @property
    def rolling(self) -> Rolling: ...


class Rolling(Protocol):
    @property
    def mean(self) -> float | None: ...


class MemoryFeed:
    """Answers once the pipeline has restored every live conversation (see `ready`)."""

    def __init__(self, pipeline: Memory) -> None:
        self.pipeline = pipeline

    async def ready(self) -> None:
        await self.pipeline.restored.wait()

    async def conversations(self) -> list[Live]:
        await self.ready()
        now = time.time()
        listed = [Live(c.summary(now), c.published)
                  for c in self.pipeline.conversations.values()]
        listed += [Live(e.summary, e.number) for e in self.pipeline.ending.values()]
        return listed

    async def conversation(self, conversation_id: str) -> Live | None:
        await self.ready()
        conv = self.pipeline.conversations.get(conversation_id)
        if conv is not None:
            return Live(conv.summary(time.time()), conv.published)
        ending = self.pipeline.ending.get(conversation_id)
        return None if ending is None else Live(ending.summary, ending.number)

    async def catch_up(self, conversation_id: str) -> CatchUp | None:
        await self.ready()
        conv = self.pipeline.conversations.get(conversation_id)
        if conv is not None:
            return CatchUp(conv.summary(time.time()), list(conv.recent), conv.shown)
        ending = self.pipeline.ending.get(conversation_id)
        if ending is None:
            return None
        # (a stream opened on it gets its end, numbered after this, once committed)
        return CatchUp(ending.summary, list(ending.conv.recent), ending.conv.shown)

    async def agent_loads(self) -> list[AgentLoad]:
        await self.ready()
        loads = [AgentLoad(c.agent_id, c.alerts, is_open(c.alert), c.rolling.mean)
                 for c in self.pipeline.conversations.values()]
        loads += [AgentLoad(e.conv.agent_id, e.conv.alerts, e.alert_open, e.conv.rolling.mean)
                  for e in self.pipeline.ending.values()]
        return loads
