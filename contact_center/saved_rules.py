"""A scale-out worker follows the rule set API nodes save: it applies a changed one and
says which one it applies, since an API node changing the rules waits for every alive
worker to confirm them (`contact_center.runtime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from analytics.rules import RuleSet
from contact_center.pipeline import Pipeline
from contact_center.stores import PartitionedStore
from contact_center.streams import Layout, fingerprint

log = logging.getLogger("contact_center.worker")  # the worker's log, whichever part logs

RULES_CHECK_SECONDS = 5.0


class SavedRules:
    """The saved rule set, applied by this worker's pipeline."""

    def __init__(self, store: PartitionedStore, redis: aioredis.Redis, layout: Layout,
                 worker_id: str, pipeline: Pipeline) -> None:
        self.store, self.redis, self.layout, self.id = store, redis, layout, worker_id
        self.pipeline = pipeline
        self.loaded = False  # no partition is taken before: it would apply stale rules

    async def follow(self) -> None:
        """Apply the rule set API nodes saved: told over pub/sub, checked every few seconds
        in case a message was missed."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.layout.rules_changed)
                while True:
                    await self._reload()
                    await pubsub.get_message(ignore_subscribe_messages=True,
                                             timeout=RULES_CHECK_SECONDS)
            except (aioredis.RedisError, OSError):
                await asyncio.sleep(RULES_CHECK_SECONDS)
            except Exception:
                log.exception("reloading the rules failed")
                await asyncio.sleep(RULES_CHECK_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def forget(self) -> None:
        """Say this worker applies no rules any more (it is leaving)."""
        await self.redis.hdel(self.layout.rules_seen, self.id)

    async def _reload(self) -> None:
        """Apply the saved rule set if it changed, then say which one this worker
        applies (an API node changing the rules waits for every worker to say so)."""
        document = await self.store.load_rules()
        if document is not None:
            rules = RuleSet.model_validate(document)
            if rules != self.pipeline.rules:
                await self.pipeline.change_rules(rules)
                log.info("worker %s applies the changed rules", self.id)
        await self.redis.hset(self.layout.rules_seen, self.id,
                              fingerprint(self.pipeline.rules.model_dump(mode="json")))
        self.loaded = True
