"""Pushes to a connector socket that asked for them (`/v1/ingest?outbound=true`): what
supervisors do in the conversations it feeds (a whisper, barging in, their words,
leaving; with ``tell_agent_monitored``, monitoring), wherever they do it. The socket
follows each conversation it sends an event of, until the conversation ends."""

from __future__ import annotations

import asyncio

from fastapi import WebSocket

from contact_center import protocol as p
from monitoring.hub import Hub
from monitoring.messages import connector_topic

SEND_TIMEOUT = 10.0  # a connector that takes longer to accept one message is cut off
SLOW_CONSUMER = 1013
# The end of a followed conversation: the socket stops following it (its connector knows).
UNFOLLOW = "conversation.ended"
GONE = {p.ErrorCode.UNKNOWN_CONVERSATION, p.ErrorCode.CONVERSATION_ENDED}


class Outbound:
    """One socket's pushes; its replies and pushes go out one at a time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sub = hub.subscribe()
        self.lock = asyncio.Lock()

    def follow(self, conversation_id: str) -> None:
        topic = connector_topic(conversation_id)
        if topic not in self.sub.topics:
            self.hub.follow(self.sub, topic)

    def replied(self, reply: p.Reply) -> None:
        """Stop following a conversation its connector was told is unknown or over."""
        if isinstance(reply, p.ErrorReply) and reply.code in GONE and reply.conversation_id:
            self.hub.unfollow(self.sub, connector_topic(reply.conversation_id))

    def close(self) -> None:
        self.hub.unsubscribe(self.sub)

    async def push(self, ws: WebSocket) -> None:
        """Send every push, until the connector is too slow to take them (then close the
        socket: it reconnects and resends what was not acknowledged)."""
        while True:
            message = await self.sub.next()
            if message is None:
                break
            if message.type == UNFOLLOW:
                if message.conversation_id:
                    self.hub.unfollow(self.sub, connector_topic(message.conversation_id))
                continue
            async with self.lock:
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await ws.send_text(message.text)
                except TimeoutError:
                    break
        async with self.lock:
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.close(SLOW_CONSUMER, "client too slow; reconnect")
