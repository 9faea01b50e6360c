"""The scale-out deployment's Redis layout: key names, partitions, entry encoding.

Events travel in ``partitions`` streams (``{ns}:in:{p}``); a conversation always maps to
the same one, so its events keep their order. Each stream has one consumer group,
``workers``, and is read by the one worker holding its lease (`contact_center.leases`).
Workers answer each API node on its own reply stream and publish live messages on one
fan-out stream every API node reads. See docs/deployment.md#scale-out.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from monitoring import codec
from monitoring.feeds.redis import READ_BLOCK_MS, FeedKeys

GROUP = "workers"
MIN_REDIS = (7, 0)
BLOCK_MS = READ_BLOCK_MS  # longest blocking read; well under the client's socket timeout
SOCKET_TIMEOUT = 10.0


def connect(url: str) -> aioredis.Redis:
    """A client that fails fast (no hidden retries: each caller backs off itself) and
    whose socket timeout is longer than any blocking read."""
    return aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                   socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0),
                                   health_check_interval=15, decode_responses=True)


def twin(client: aioredis.Redis) -> aioredis.Redis:
    """A client like ``client`` with connections of its own (for another event loop)."""
    pool = client.connection_pool
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool(
        connection_class=pool.connection_class, **pool.connection_kwargs))


@dataclass(frozen=True, slots=True)
class Layout(FeedKeys):
    """Key names of one deployment (``namespace``): the bus's here, the live feed's in
    `FeedKeys`."""

    partitions: int = 16

    def partition_of(self, conversation_id: str) -> int:
        return zlib.crc32(conversation_id.encode()) % self.partitions

    def inbox(self, partition: int) -> str:
        return f"{self.namespace}:in:{partition}"

    def partition_from(self, inbox: str) -> int:
        return int(inbox.rsplit(":", 1)[1])

    def replies(self, node: str) -> str:
        return f"{self.namespace}:reply:{node}"

    def lease(self, partition: int) -> str:
        return f"{self.namespace}:lease:{partition}"

    @property
    def dead(self) -> str:
        return f"{self.namespace}:dead"

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> last heartbeat (ms)."""
        return f"{self.namespace}:workers"

    @property
    def rules_changed(self) -> str:
        """Pub/sub channel: the rule set was saved."""
        return f"{self.namespace}:rules"

    @property
    def rules_seen(self) -> str:
        """Hash: worker id -> fingerprint of the rule set it applies."""
        return f"{self.namespace}:rules-seen"

    @property
    def config(self) -> str:
        return f"{self.namespace}:config"

    async def check(self, redis: aioredis.Redis) -> None:
        """Refuse a Redis older than 7.0 (XAUTOCLAIM's deleted ids, stream counters);
        record the partition count on first use, and refuse a different one later
        (events would go to streams no worker reads in order)."""
        version = str((await redis.info("server"))["redis_version"])
        if tuple(int(x) for x in version.split(".")[:2]) < MIN_REDIS:
            raise RuntimeError(f"Redis {version} is too old: the scale-out deployment needs "
                               f"Redis {'.'.join(map(str, MIN_REDIS))} or newer")
        await redis.hsetnx(self.config, "partitions", self.partitions)
        recorded = int(await redis.hget(self.config, "partitions") or self.partitions)
        if recorded != self.partitions:
            raise RuntimeError(f"this Redis namespace {self.namespace!r} runs with "
                               f"{recorded} partitions, not {self.partitions}; start every "
                               f"process with --partitions {recorded}")


Fields = dict[str, str]
Entries = list[tuple[str, Fields]]
Entry = tuple[str, Fields | None]  # None: claimed, but trimmed or deleted meanwhile


def read_reply(reply: Any) -> list[tuple[str, Entries]]:
    """An XREAD/XREADGROUP reply (decoded): per stream, its entries."""
    return cast(list[tuple[str, Entries]], reply or [])


def read_entries(reply: Any) -> Entries:
    """An XRANGE/XREVRANGE reply (decoded)."""
    return cast(Entries, reply or [])


dumps = codec.dumps


def fingerprint(document: Any) -> str:
    """Names a rule set (or any JSON document) by its content."""
    return hashlib.sha1(json.dumps(document, sort_keys=True).encode()).hexdigest()


def stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def after(entry_id: str) -> str:
    """The smallest entry id greater than ``entry_id``."""
    ms, seq = stream_id(entry_id)
    return f"{ms}-{seq + 1}"
