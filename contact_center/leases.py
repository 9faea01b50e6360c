"""Which worker owns which partition: heartbeats, an assignment every worker computes
alike, and leases in Redis.

Each worker heartbeats into ``{ns}:workers`` every second; the workers seen within
LEASE_MS are alive. Each partition goes to the alive worker that ranks it highest
(rendezvous hashing: when a worker comes or goes, only its share moves). A worker holds
a partition through a lease key it renews every second and that expires after LEASE_MS,
so a killed worker's partitions are free at most LEASE_MS later. A lease says who should
work; what makes a late writer harmless is the fencing token checked in the database
(`PartitionedStore.claim_partition`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import redis.asyncio as aioredis

from contact_center.streams import Layout

LEASE_MS = 5000
HEARTBEAT_SECONDS = 1.0

# Renew or release only a lease that is still ours.
_RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
    kept[#kept + 1] = i
  end
end
return kept
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def assign(workers: Iterable[str], partitions: int) -> dict[int, str]:
    """Each partition's worker: the one whose hash with it ranks highest."""
    alive = sorted(set(workers))
    if not alive:
        return {}

    def rank(worker: str, partition: int) -> bytes:
        return hashlib.blake2b(f"{worker}/{partition}".encode(), digest_size=8).digest()

    return {p: max(alive, key=lambda w: rank(w, p)) for p in range(partitions)}


class Leases:
    def __init__(self, redis: aioredis.Redis, layout: Layout, worker_id: str) -> None:
        self.redis, self.layout, self.worker_id = redis, layout, worker_id
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def heartbeat(self) -> list[str]:
        """Say this worker is alive; returns the alive workers. Times are Redis's, so a
        worker whose clock is off cannot push the others out."""
        now = await _now_ms(self.redis)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.layout.workers, {self.worker_id: now})
        pipe.zremrangebyscore(self.layout.workers, 0, now - LEASE_MS)
        pipe.zrange(self.layout.workers, 0, -1)
        return list((await pipe.execute())[-1])

    async def leave(self) -> None:
        await self.redis.zrem(self.layout.workers, self.worker_id)

    async def acquire(self, partition: int) -> bool:
        return bool(await self.redis.set(self.layout.lease(partition), self.worker_id,
                                         nx=True, px=LEASE_MS))

    async def renew(self, partitions: list[int]) -> set[int]:
        """Extend the leases still held; returns those partitions."""
        if not partitions:
            return set()
        kept = await self._renew(keys=[self.layout.lease(p) for p in partitions],
                                 args=[self.worker_id, LEASE_MS])
        return {partitions[i - 1] for i in kept}

    async def release(self, partition: int) -> None:
        await self._release(keys=[self.layout.lease(partition)], args=[self.worker_id])


async def unowned(redis: aioredis.Redis, layout: Layout) -> int:
    """Partitions no worker holds a lease on."""
    holders = await redis.mget([layout.lease(p) for p in range(layout.partitions)])
    return sum(h is None for h in holders)


async def _now_ms(redis: aioredis.Redis) -> int:
    seconds, microseconds = await redis.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


async def alive_workers(redis: aioredis.Redis, layout: Layout) -> int:
    return int(await redis.zcount(layout.workers, await _now_ms(redis) - LEASE_MS, "+inf"))


async def alive_worker_ids(redis: aioredis.Redis, layout: Layout) -> list[str]:
    alive = await redis.zrangebyscore(layout.workers, await _now_ms(redis) - LEASE_MS, "+inf")
    return [str(worker) for worker in alive]
