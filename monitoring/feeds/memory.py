"""The embedded feed: reads the pipeline's conversations in this process's memory."""

from __future__ import annotations

import time

from contact_center.pipeline import Pipeline
from monitoring.feeds import CatchUp, Live
from monitoring.metrics import AgentLoad


class MemoryFeed:
    """Answers once the pipeline has restored every live conversation (see `ready`)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def ready(self) -> None:
        await self.pipeline.restored.wait()

    async def conversations(self) -> list[Live]:
        await self.ready()
        now = time.time()
        return [Live(c.summary(now), c.published)
                for c in self.pipeline.conversations.values()]

    async def conversation(self, conversation_id: str) -> Live | None:
        await self.ready()
        conv = self.pipeline.conversations.get(conversation_id)
        return None if conv is None else Live(conv.summary(time.time()), conv.published)

    async def catch_up(self, conversation_id: str) -> CatchUp | None:
        await self.ready()
        conv = self.pipeline.conversations.get(conversation_id)
        if conv is None:
            return None
        return CatchUp(conv.summary(time.time()), list(conv.recent), conv.shown)

    async def agent_loads(self) -> list[AgentLoad]:
        await self.ready()
        return [AgentLoad(c.agent_id, c.alerts, c.rolling.mean)
                for c in self.pipeline.conversations.values()]
