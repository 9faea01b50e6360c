"""A scale-out pipeline worker: applies the events of the partitions it holds.

One pipeline (`contact_center.pipeline`) and the loops around it: holding partitions
(`contact_center.partitions`: leases, takeovers, fencing tokens, the marks each batch
carries), reading their entries (`contact_center.entries`: batches, redelivery, dead
letters, replies) and following the rules API nodes save (`contact_center.saved_rules`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket

import redis.asyncio as aioredis

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import Scorer
from contact_center import stopping
from contact_center.applier import Redact
from contact_center.entries import Entries
from contact_center.partitions import Owned, Partitions
from contact_center.pipeline import Pipeline
from contact_center.saved_rules import SavedRules
from contact_center.stores import PartitionedStore
from contact_center.streams import Layout
from monitoring.alerts import AlertPolicy
from monitoring.feeds.redis import RedisOutlet
from monitoring.recording import Policies

LOOPS_STOP_SECONDS = 1.5  # at most this long for the loops to end when stopping
HAND_BACK_SECONDS = 2.0  # ... and then to hand the partitions back
WORKER_STOP_SECONDS = LOOPS_STOP_SECONDS + HAND_BACK_SECONDS + stopping.CANCEL_GRACE_SECONDS


class Worker:
    """Makes the parts, handing each the state it shares with another, and runs them."""

    def __init__(self, store: PartitionedStore, redis: aioredis.Redis, layout: Layout,
                 rules: RuleSet, rolling: RollingConfig, batch_size: int = 500,
                 scorer: Scorer | None = None, freeze: bool = True,
                 idle_timeout: float = 0.0, policy: AlertPolicy | None = None,
                 redact: Redact | None = None, recording: Policies | None = None) -> None:
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        outlet = RedisOutlet(redis, layout)
        self.pipeline = Pipeline(store, outlet, rules, rolling, batch_size, scorer,
                                 freeze=freeze, idle_timeout=idle_timeout, policy=policy,
                                 redact=redact, recording=recording)
        self.saved_rules = SavedRules(store, redis, layout, self.id, self.pipeline)
        self.partitions = Partitions(store, redis, layout, self.id, self.pipeline, outlet,
                                     self.saved_rules)
        # Set here, not passed to Pipeline: the marks need the partitions held, and
        # holding them needs the pipeline.
        self.pipeline.marker = self.partitions.marks
        self.pipeline.on_fenced = lambda exc: self.partitions.lose(exc.partitions)
        self.entries = Entries(redis, layout, self.id, self.pipeline, self.partitions)
        self._stopping = asyncio.Event()

    @property
    def owned(self) -> dict[int, Owned]:
        """The partitions held (what a node's health reports)."""
        return self.partitions.owned

    def stop(self) -> None:
        """Ask `run` to stop: it stops the loops and hands the partitions back."""
        self._stopping.set()

    async def run(self) -> None:
        """Work until `stop` (or a loop fails, or this is cancelled); then stop the loops
        and hand the partitions back at once (else their leases lapse within LEASE_MS),
        each step within its deadline (see contact_center.stopping)."""
        loops = [
            asyncio.create_task(self.partitions.heartbeat(), name="worker-heartbeat"),
            asyncio.create_task(self.partitions.rebalance(), name="worker-rebalance"),
            asyncio.create_task(self.entries.consume(), name="worker-consume"),
            asyncio.create_task(self.pipeline.clock(), name="worker-clock"),
            asyncio.create_task(self.saved_rules.follow(), name="worker-rules")]
        asked = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*loops, asked], return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked.cancel()
            await stopping.cancel(loops, "the worker's loops", LOOPS_STOP_SECONDS)
            await stopping.step("handing partitions back", self._hand_back(),
                                HAND_BACK_SECONDS)
        for loop in done - {asked}:
            loop.result()  # a loop that failed: so does the worker (and /livez says so)

    async def _hand_back(self) -> None:
        async with self.pipeline.lock:
            await self.partitions.hand_back()
            await self.saved_rules.forget()
