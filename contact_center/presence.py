"""Monitor sockets coming and going: listed in the registry of who monitors what
(`monitoring.presence`), and announced to the conversation's other monitors, the live
board, and, with ``tell_agent_monitored``, the agent desktop. The same in both
deployments: announcements go through the node's outlet, so every node's sockets get
them."""

from __future__ import annotations

import time
from typing import Any

from monitoring import messages as live
from monitoring.feeds import Announcement, LiveFeed, Outlet
from monitoring.messages import LIVE_TOPIC, LiveMessage, connector_topic, conversation_topic
from monitoring.presence import Listener, Presence, listing, with_monitors


class MonitorPresence:
    def __init__(self, registry: Presence, feed: LiveFeed, outlet: Outlet,
                 tell_agent: bool = False) -> None:
        self.registry, self.feed, self.outlet = registry, feed, outlet
        self.tell_agent = tell_agent

    async def opened(self, conversation_id: str, listener: Listener) -> None:
        await self.registry.add(conversation_id, listener)
        await self._announce("monitor.started", conversation_id, listener)

    async def closed(self, conversation_id: str, listener: Listener) -> None:
        if await self.registry.remove(conversation_id, listener.monitor_id):
            await self._announce("monitor.ended", conversation_id, listener)

    async def lost(self, conversation_id: str, listener: Listener) -> None:
        """A socket of a node that is gone (its listing lapsed)."""
        await self._announce("monitor.ended", conversation_id, listener)

    async def barged(self, conversation_id: str) -> None:
        """A supervisor barged in or left (applied): the live board hears of it."""
        found = await self.feed.conversation(conversation_id)
        if found is not None:
            monitors = listing(await self.registry.listeners(conversation_id),
                               found.summary["participants"])
            await self.outlet.publish(Announcement([LiveMessage(
                conversation_id, LIVE_TOPIC, live.monitors_updated(conversation_id,
                                                                   monitors))]))

    async def summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """A live summary with who monitors it."""
        return with_monitors(summary, await self.registry.listeners(summary["id"]))

    async def summaries(self, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        everyone = await self.registry.everyone()
        return [with_monitors(s, everyone.get(s["id"], ())) for s in summaries]

    async def _announce(self, event_type: str, conversation_id: str,
                        listener: Listener) -> None:
        found = await self.feed.conversation(conversation_id)
        if found is None:  # (ended meanwhile: its monitors are closing)
            return
        listeners = await self.registry.listeners(conversation_id)
        monitors = listing(listeners, found.summary["participants"])
        now = time.time()
        messages = [
            LiveMessage(conversation_id, conversation_topic(conversation_id),
                        live.monitor_event(event_type, conversation_id, listener.monitor_id,
                                           listener.username, now, monitors)),
            LiveMessage(conversation_id, LIVE_TOPIC,
                        live.monitors_updated(conversation_id, monitors))]
        if self.tell_agent:
            messages.append(LiveMessage(
                conversation_id, connector_topic(conversation_id),
                live.agent_told_monitored(event_type, conversation_id, now,
                                          len({lst.username for lst in listeners}))))
        await self.outlet.publish(Announcement(messages))
