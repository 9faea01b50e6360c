"""The two deployments behind the same routes: what the app starts, and what its routes
ask of it (the bus, the live feed, the rules in force, health).

`Embedded`: one process; the pipeline runs here over the in-process bus, on SQLite (or
PostgreSQL). `ScaleOutNode`: an API node of the scale-out deployment; events go through
Redis Streams to pipeline workers (`contact_center.worker`, also run here with
``--worker``), the store is PostgreSQL, and live views are read from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from analytics.default_rules import DEFAULT_RULES
from analytics.rules import RuleSet
from analytics.scoring import SUPPORT_LEXICON, Scorer, load_overlay
from contact_center import retention, stopping, streams
from contact_center.buses import Bus
from contact_center.buses.memory import InMemoryBus
from contact_center.buses.redis import RedisBus
from contact_center.collector import keep_long_lived_state_frozen
from contact_center.embedded_pipeline import EmbeddedPipeline
from contact_center.entries import dead_letter
from contact_center.leases import alive_worker_ids, alive_workers, unowned
from contact_center.presence import MonitorPresence
from contact_center.saved_rules import RULES_CHECK_SECONDS
from contact_center.settings import Settings, masked
from contact_center.stores import PartitionedStore, Store
from contact_center.streams import read_entries
from contact_center.webhook_delivery import WebhookDelivery
from contact_center.worker import WORKER_STOP_SECONDS, Worker
from monitoring.alert_stream import AlertSequencer
from monitoring.feeds import AgentPush, LiveFeed, Outlet
from monitoring.feeds.memory import HubOutlet, MemoryFeed
from monitoring.feeds.redis import RedisFeed, RedisOutlet
from monitoring.hub import Hub
from monitoring.presence.memory import MemoryPresence
from monitoring.presence.redis import RedisPresence
from monitoring.webhooks import allowed_networks

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0  # after open connections had theirs (connections.CONNECTIONS_CLOSE_SECONDS)
CLOSE_SECONDS = 1.5  # closing Redis connections when stopping
RULES_WAIT_SECONDS = 5.0  # an API node waits this long for workers to apply new rules
RULES_LOCK_SECONDS = 30.0  # a rules change holds the deployment's rules lock at most this
HEALTH_TIMEOUT = 2.0  # seconds a dependency gets to answer a health check


class Runtime(Protocol):
    @property
    def bus(self) -> Bus: ...

    @property
    def feed(self) -> LiveFeed: ...

    @property
    def outlet(self) -> Outlet:
        """Where this node publishes live messages it makes itself."""
        ...

    @property
    def alert_stream(self) -> AlertSequencer: ...

    @property
    def presence(self) -> MonitorPresence:
        """Who monitors what, on every node."""
        ...

    @property
    def webhooks(self) -> WebhookDelivery: ...

    async def current_rules(self) -> RuleSet: ...

    async def change_rules(self, rules: RuleSet) -> None:
        """Apply a rule set already saved to the store."""
        ...

    async def health(self) -> tuple[str, dict[str, Any]]:
        """``ok``, ``degraded`` or ``pipeline stopped``, and what /healthz reports."""
        ...

    def alive(self) -> bool:
        """Whether the pipeline (or worker) this process runs is still running."""
        ...

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        """Events set aside after failing too often, newest first."""
        ...

    def rules_lock(self) -> AbstractAsyncContextManager[None]:
        """Held while a rules change reads, checks and saves the rule set."""
        ...

    async def stop(self) -> None: ...


async def load_rules(settings: Settings, store: Store) -> RuleSet:
    """A rules file wins (and is saved, versioned against the saved rules); else the last
    rules set over the API; else the defaults."""
    saved = await store.load_rules()
    rules = RuleSet.model_validate(saved) if saved is not None else DEFAULT_RULES
    if settings.rules_file is not None:
        rules = rules.replacing(RuleSet.model_validate_json(settings.rules_file.read_bytes()))
        why = rules.over_budget()
        if why is not None:
            raise RuntimeError(f"{settings.rules_file}: {why}")
        await store.save_rules(rules.model_dump(mode="json"))
    return rules


def scorer_for(settings: Settings) -> Scorer:
    """The support overlay (unless turned off), then the deployment's own on top of it."""
    overlay = load_overlay(SUPPORT_LEXICON) if settings.support_lexicon else {}
    if settings.lexicon_overlay:
        overlay |= load_overlay(settings.lexicon_overlay)
    return Scorer(overlay, engine=settings.scorer)


async def _answers(check: Any) -> str:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await check
        return "ok"
    except Exception:
        return "unavailable"


def _report_stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        log.critical("%s stopped: %r; /healthz now answers 503", task.get_name(),
                     task.exception())


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", task.get_name(), task.exception())


def _freezer(settings: Settings, runner: asyncio.Task[None]) -> asyncio.Task[None] | None:
    """Keep the pipeline's long-lived state out of full garbage collections (see
    contact_center.collector) for as long as ``runner`` runs."""
    if not settings.gc_freeze_seconds:
        return None
    freezer = asyncio.create_task(keep_long_lived_state_frozen(settings.gc_freeze_seconds),
                                  name="gc-freezer")
    runner.add_done_callback(lambda _: freezer.cancel())
    return freezer


class Embedded:
    def __init__(self, store: Store, pipeline: EmbeddedPipeline, bus: InMemoryBus,
                 outlet: HubOutlet, alert_stream: AlertSequencer,
                 webhooks: WebhookDelivery) -> None:
        self.store, self.pipeline, self.bus = store, pipeline, bus
        self.outlet, self.alert_stream = outlet, alert_stream
        self.webhooks = webhooks
        self.freezer: asyncio.Task[None] | None = None
        self.retention: asyncio.Task[None] | None = None
        self.feed = MemoryFeed(pipeline)
        self.presence = MonitorPresence(MemoryPresence(), self.feed, outlet)
        self._rules_lock = asyncio.Lock()
        self.runner = asyncio.create_task(pipeline.run(bus), name="the pipeline")
        self.runner.add_done_callback(_report_stopped)
        # Events are taken at once; live views wait for the restore (see MemoryFeed).
        self.restoring = asyncio.create_task(pipeline.restore(), name="restore")
        self.restoring.add_done_callback(_report_failure)
        self.runner.add_done_callback(lambda _: self.restoring.cancel())

    @classmethod
    async def start(cls, settings: Settings, store: Store, hub: Hub) -> Embedded:
        await store.claim_pipeline()
        outlet = HubOutlet(hub)
        pipeline = EmbeddedPipeline(store, outlet, await load_rules(settings, store),
                                    settings.rolling, settings.batch_size,
                                    scorer_for(settings), freeze=settings.gc_freeze_seconds > 0,
                                    idle_timeout=settings.idle_timeout_seconds,
                                    policy=settings.alert_policy, redact=settings.redactor,
                                    recording=settings.recording_policies,
                                    commit_window=settings.commit_window_ms / 1000)
        alert_stream = await _alert_stream(settings, store, hub)
        await store.release_delivery_leases()  # (held by this process before a crash)
        webhooks = _webhooks(settings, store)
        await _start_webhooks(webhooks, alert_stream)
        runtime = cls(store, pipeline, InMemoryBus(settings.bus_queue_size), outlet,
                      alert_stream, webhooks)
        outlet.agents = AgentPush(hub, runtime.feed.agent_loads)
        runtime.presence.tell_agent = settings.tell_agent_monitored
        runtime.freezer = _freezer(settings, runtime.runner)
        runtime.retention = _retention(settings, store)
        return runtime

    async def current_rules(self) -> RuleSet:
        return self.pipeline.rules

    async def change_rules(self, rules: RuleSet) -> None:
        await self.pipeline.change_rules(rules)

    async def health(self) -> tuple[str, dict[str, Any]]:
        database = await _answers(self.store.ping())
        status = ("pipeline stopped" if self.runner.done()
                  else "ok" if database == "ok" else "degraded")
        return status, {"dependencies": {"database": database},
                        "queue_depth": self.bus.depth,
                        "events_processed": self.pipeline.processed,
                        "batches_committed": self.pipeline.batches,
                        "live_conversations": len(self.pipeline.conversations)}

    def alive(self) -> bool:
        return not self.runner.done()

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return []

    def rules_lock(self) -> AbstractAsyncContextManager[None]:
        return self._rules_lock

    async def stop(self) -> None:
        """Let accepted events finish so their connectors get a reply, then stop the
        pipeline; each step within its deadline (see contact_center.stopping)."""
        await stopping.step("answering accepted events", self.bus.drain(), DRAIN_SECONDS)
        await asyncio.gather(
            stopping.cancel([self.runner, self.restoring, *self.alert_stream.tasks,
                             *([self.retention] if self.retention else [])], "the pipeline"),
            self.webhooks.stop())


async def _alert_stream(settings: Settings, store: Store, hub: Hub) -> AlertSequencer:
    sequencer = AlertSequencer(hub, store, settings.alert_events_keep_days * 86400)
    await sequencer.start()
    return sequencer


def _webhooks(settings: Settings, store: Store) -> WebhookDelivery:
    return WebhookDelivery(store, allowed_networks(settings.webhook_allowed_networks),
                           settings.webhook_timeout_seconds,
                           settings.webhook_disable_after_seconds)


async def _start_webhooks(webhooks: WebhookDelivery, alert_stream: AlertSequencer) -> None:
    alert_stream.listeners.append(webhooks.wake)  # (sooner than its next look)
    await webhooks.start()


def _retention(settings: Settings, store: Store) -> asyncio.Task[None] | None:
    """The retention job, on every API node (see contact_center.retention); None when
    words are kept for ever."""
    if settings.retention.keeps_everything:
        return None
    task = asyncio.create_task(retention.keep_running(
        store, settings.retention, settings.retention_interval_seconds), name="retention")
    task.add_done_callback(_report_failure)
    return task


def partitioned(store: Store) -> PartitionedStore:
    if not hasattr(store, "claim_partition"):
        raise RuntimeError("the scale-out deployment (--redis) needs PostgreSQL as its store: "
                           "give --db postgresql://…")
    return store  # type: ignore[return-value]


def layout_for(settings: Settings) -> streams.Layout:
    return streams.Layout(settings.redis_namespace, settings.partitions)


async def start_worker(settings: Settings, store: Store,
                       redis: Any) -> tuple[Worker, asyncio.Task[None]]:
    """A pipeline worker on these connections, running."""
    layout = layout_for(settings)
    await layout.check(redis)
    await partitioned(store).join_workers()
    saved = await store.load_rules()
    rules = RuleSet.model_validate(saved) if saved is not None else DEFAULT_RULES
    worker = Worker(partitioned(store), redis, layout, rules, settings.rolling,
                    settings.batch_size, scorer_for(settings),
                    freeze=settings.gc_freeze_seconds > 0,
                    idle_timeout=settings.idle_timeout_seconds,
                    policy=settings.alert_policy, redact=settings.redactor,
                    recording=settings.recording_policies)
    task = asyncio.create_task(worker.run(), name="the pipeline worker")
    task.add_done_callback(_report_stopped)
    _freezer(settings, task)
    return worker, task


class ScaleOutNode:
    def __init__(self, settings: Settings, store: Store, redis: Any, hub: Hub) -> None:
        self.store, self.redis = partitioned(store), redis
        self.layout = layout_for(settings)
        self.bus = RedisBus(redis, self.layout, settings.bus_queue_size,
                            settings.reply_timeout_seconds)
        self.feed = RedisFeed(redis, self.layout, hub)
        self.outlet = RedisOutlet(redis, self.layout)
        self.alert_stream = AlertSequencer(hub, store, settings.alert_events_keep_days * 86400)
        self.webhooks = _webhooks(settings, store)
        self.registry = RedisPresence(redis, self.layout.namespace)
        self.presence = MonitorPresence(self.registry, self.feed, self.outlet,
                                        settings.tell_agent_monitored)
        self.registry.on_lost = self.presence.lost
        self.worker: tuple[Worker, asyncio.Task[None]] | None = None
        self.retention: asyncio.Task[None] | None = None
        self._rules_lock = asyncio.Lock()

    @classmethod
    async def start(cls, settings: Settings, store: Store, hub: Hub) -> ScaleOutNode:
        redis = streams.connect(settings.redis)  # type: ignore[arg-type]
        node = cls(settings, store, redis, hub)
        try:
            await node.layout.check(redis)
        except OSError as exc:
            raise RuntimeError(f"cannot reach Redis at {masked(settings.redis or '')}: "
                               f"{exc}") from None
        await load_rules(settings, store)  # a rules file given here is saved for all
        await node.bus.start()
        await node.feed.start()
        await node.alert_stream.start()
        node.registry.start()
        await _start_webhooks(node.webhooks, node.alert_stream)
        if settings.worker:
            node.worker = await start_worker(settings, store, redis)
        node.retention = _retention(settings, store)
        return node

    async def current_rules(self) -> RuleSet:
        # Read each time: any node may have changed them.
        saved = await self.store.load_rules()
        return RuleSet.model_validate(saved) if saved is not None else DEFAULT_RULES

    async def change_rules(self, rules: RuleSet) -> None:
        """Tell the workers, and wait (up to RULES_WAIT_SECONDS) until every alive one
        applies them: an event accepted after this returns meets the new rules."""
        wanted = streams.fingerprint(rules.model_dump(mode="json"))
        deadline = asyncio.get_running_loop().time() + RULES_WAIT_SECONDS
        try:
            await self.redis.publish(self.layout.rules_changed, "changed")
            while asyncio.get_running_loop().time() < deadline:
                alive = await alive_worker_ids(self.redis, self.layout)
                seen = await self.redis.hgetall(self.layout.rules_seen)
                if all(seen.get(worker) == wanted for worker in alive):
                    return
                await asyncio.sleep(0.01)
            log.warning("not every worker confirmed the new rules within %ss; they apply "
                        "them within %ss", RULES_WAIT_SECONDS, RULES_CHECK_SECONDS)
        except Exception:  # workers also check every few seconds
            log.warning("telling workers of the new rules failed; they find them within "
                        "%ss", RULES_CHECK_SECONDS)

    async def health(self) -> tuple[str, dict[str, Any]]:
        database = await _answers(self.store.ping())
        redis = await _answers(self.redis.ping())
        workers = partitions_unowned = live = None
        if redis == "ok":
            with contextlib.suppress(Exception):
                workers = await alive_workers(self.redis, self.layout)
                partitions_unowned = await unowned(self.redis, self.layout)
                live = int(await self.redis.hlen(self.layout.summaries))
        stopped = self.worker is not None and self.worker[1].done()
        status = ("pipeline stopped" if stopped or workers == 0  # nothing would be acked
                  else "ok" if database == redis == "ok" and self.feed.healthy
                  else "degraded")
        fields: dict[str, Any] = {
            "dependencies": {"database": database, "redis": redis},
            "queue_depth": self.bus.depth, "workers": workers,
            "partitions": self.layout.partitions, "partitions_unowned": partitions_unowned,
            "live_conversations": live}
        if self.worker is not None:
            worker = self.worker[0]
            fields |= {"events_processed": worker.pipeline.processed,
                       "batches_committed": worker.pipeline.batches,
                       "partitions_held": sorted(worker.owned)}
        return status, fields

    def alive(self) -> bool:
        return self.worker is None or not self.worker[1].done()

    @contextlib.asynccontextmanager
    async def rules_lock(self) -> AsyncIterator[None]:
        """This node's lock, then the deployment's (a Redis lock that expires, so a node
        that dies holding it blocks no one for long)."""
        async with self._rules_lock:
            lock = self.redis.lock(f"{self.layout.namespace}:rules-lock",
                                   timeout=RULES_LOCK_SECONDS,
                                   blocking_timeout=RULES_LOCK_SECONDS)
            if not await lock.acquire():
                raise TimeoutError("another API node is changing the rules; retry")
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await lock.release()

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        entries = read_entries(await self.redis.xrevrange(self.layout.dead, count=limit))
        return [dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def stop(self) -> None:
        """Let accepted events be answered, stop this node's worker (it hands its
        partitions back), the bus (what is still waiting is answered ``unavailable``) and
        the relay, then close Redis; each step within its deadline, whatever Redis does
        (see contact_center.stopping)."""
        await stopping.step("answering accepted events", self.bus.drain(), DRAIN_SECONDS)
        if self.worker is not None:
            self.worker[0].stop()
            await stopping.step("the pipeline worker", self.worker[1], WORKER_STOP_SECONDS)
        await asyncio.gather(self.bus.stop(), stopping.cancel(
            [*self.feed.tasks, *self.alert_stream.tasks, *self.registry.tasks,
             *([self.retention] if self.retention else [])], "the live relay"),
            self.webhooks.stop())
        await stopping.step("closing Redis connections", self.redis.aclose(), CLOSE_SECONDS)
