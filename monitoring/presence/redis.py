"""The scale-out registry of monitor sockets, shared by every API node in Redis.

One hash, ``{ns}:monitors``: field ``<conversation id>|<monitor id>``, value
``{"u": username, "s": since, "x": until}``. Each node renews its own sockets' entries
every RENEW_SECONDS to TTL_SECONDS ahead; an entry past its ``until`` is a dead node's:
readers skip it, and the next renewal on any node deletes it and reports it lost (once,
whoever deletes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis

from monitoring import codec
from monitoring.presence import Listener

log = logging.getLogger(__name__)

TTL_SECONDS = 30.0  # an entry lasts this long unless its node renews it
RENEW_SECONDS = 10.0

Lost = Callable[[str, Listener], Awaitable[None]]


def _field(conversation_id: str, monitor_id: str) -> str:
    return f"{conversation_id}|{monitor_id}"


def _parse(field: str, value: str) -> tuple[str, Listener, float]:
    conversation_id, _, monitor_id = field.rpartition("|")
    entry = codec.loads(value)
    return conversation_id, Listener(monitor_id, entry["u"], entry["s"]), entry["x"]


class RedisPresence:
    def __init__(self, redis: aioredis.Redis, namespace: str, on_lost: Lost | None = None,
                 ttl: float = TTL_SECONDS) -> None:
        """``on_lost``: told of each entry of a dead node this node deletes."""
        self.redis, self.key, self.ttl = redis, f"{namespace}:monitors", ttl
        self.on_lost = on_lost
        self._own: dict[tuple[str, str], Listener] = {}
        self._task: asyncio.Task[None] | None = None

    def _value(self, listener: Listener, now: float) -> str:
        return codec.dumps({"u": listener.username, "s": listener.since,
                            "x": now + self.ttl})

    async def add(self, conversation_id: str, listener: Listener) -> None:
        self._own[(conversation_id, listener.monitor_id)] = listener
        await self.redis.hset(self.key, _field(conversation_id, listener.monitor_id),
                              self._value(listener, time.time()))

    async def remove(self, conversation_id: str, monitor_id: str) -> bool:
        self._own.pop((conversation_id, monitor_id), None)
        return bool(await self.redis.hdel(self.key, _field(conversation_id, monitor_id)))

    async def listeners(self, conversation_id: str) -> list[Listener]:
        # (A conversation id holds no glob character: the match is literal.)
        now, found = time.time(), list[Listener]()
        async for field, value in self.redis.hscan_iter(self.key, match=f"{conversation_id}|*",
                                                        count=1000):
            _, listener, until = _parse(field, value)
            if until >= now:
                found.append(listener)
        return found

    async def everyone(self) -> dict[str, list[Listener]]:
        now, found = time.time(), dict[str, list[Listener]]()
        for conversation_id, listener, until in await self._entries():
            if until >= now:
                found.setdefault(conversation_id, []).append(listener)
        return found

    async def _entries(self) -> list[tuple[str, Listener, float]]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.key))
        return [_parse(field, value) for field, value in raw.items()]

    # -- renewing ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever(), name="monitor-presence")

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [] if self._task is None else [self._task]

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self.renew()
            except Exception as exc:  # Redis down: entries lapse, and come back renewed
                log.warning("renewing who monitors what failed (%r); retrying", exc)

    async def renew(self) -> list[tuple[str, Listener]]:
        """Renew this node's entries, delete those that lapsed (their node is gone) and
        report each this call deleted; returns them."""
        now = time.time()
        if self._own:
            await self.redis.hset(self.key, mapping={
                _field(cid, mid): self._value(listener, now)
                for (cid, mid), listener in self._own.items()})
        lapsed = [(cid, listener) for cid, listener, until in await self._entries()
                  if until < now and (cid, listener.monitor_id) not in self._own]
        if not lapsed:
            return []
        pipe: Any = self.redis.pipeline(transaction=False)
        for cid, listener in lapsed:
            pipe.hdel(self.key, _field(cid, listener.monitor_id))
        deleted = [entry for entry, n in zip(lapsed, await pipe.execute(), strict=True) if n]
        for cid, listener in deleted:
            if self.on_lost is not None:
                try:
                    await self.on_lost(cid, listener)
                except Exception:
                    log.exception("telling monitors that %s stopped failed", listener)
        return deleted
