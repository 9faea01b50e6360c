"""The embedded registry of monitor sockets: this process's, in memory."""

from __future__ import annotations

from monitoring.presence import Listener


class MemoryPresence:
    def __init__(self) -> None:
        self._open: dict[str, dict[str, Listener]] = {}

    async def add(self, conversation_id: str, listener: Listener) -> None:
        self._open.setdefault(conversation_id, {})[listener.monitor_id] = listener

    async def remove(self, conversation_id: str, monitor_id: str) -> bool:
        listeners = self._open.get(conversation_id, {})
        found = listeners.pop(monitor_id, None) is not None
        if not listeners:
            self._open.pop(conversation_id, None)
        return found

    async def listeners(self, conversation_id: str) -> list[Listener]:
        return list(self._open.get(conversation_id, {}).values())

    async def everyone(self) -> dict[str, list[Listener]]:
        return {cid: list(listeners.values()) for cid, listeners in self._open.items()}
