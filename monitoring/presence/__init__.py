"""Who is monitoring: the monitor sockets open on each live conversation, on every API
node (a registry: `memory.MemoryPresence` embedded, `redis.RedisPresence` scale-out), and
the listing supervisors see (pure).

A supervisor who barged in is a participant of the conversation (role ``supervisor``,
id ``supervisor:<username>``), kept by the pipeline; the listing joins both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

SUPERVISOR_PREFIX = "supervisor:"


@dataclass(frozen=True, slots=True)
class Listener:
    """One open monitor socket."""

    monitor_id: str  # unique to the socket
    username: str
    since: float


class Presence(Protocol):
    async def add(self, conversation_id: str, listener: Listener) -> None: ...

    async def remove(self, conversation_id: str, monitor_id: str) -> bool:
        """Whether it was listed."""
        ...

    async def listeners(self, conversation_id: str) -> list[Listener]: ...

    async def everyone(self) -> dict[str, list[Listener]]:
        """Per conversation id, its listeners (conversations without any left out)."""
        ...


def supervisor_participant(username: str) -> str:
    """The participant id of a supervisor who barged in."""
    return SUPERVISOR_PREFIX + username


def listing(listeners: Iterable[Listener],
            participants: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per supervisor, earliest first: ``listening`` (a monitor socket open) or
    ``barged`` (a participant now, with or without a monitor socket); ``since`` is the
    earliest of either."""
    rows: dict[str, dict[str, Any]] = {}

    def add(username: str, since: float, mode: str) -> None:
        row = rows.setdefault(username, {"username": username, "since": since,
                                         "mode": mode})
        row["since"] = min(row["since"], since)
        if mode == "barged":
            row["mode"] = mode

    for listener in listeners:
        add(listener.username, listener.since, "listening")
    for participant in participants:
        if participant["role"] == "supervisor" and participant["id"].startswith(
                SUPERVISOR_PREFIX):
            add(participant["id"][len(SUPERVISOR_PREFIX):],
                participant.get("joined_at") or 0.0, "barged")
    return sorted(rows.values(), key=lambda r: (r["since"], r["username"]))


def with_monitors(summary: dict[str, Any], listeners: Iterable[Listener]) -> dict[str, Any]:
    """A live summary with who monitors it."""
    return summary | {"monitors": listing(listeners, summary["participants"])}
