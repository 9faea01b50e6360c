"""The scale-out feed, both halves: workers publish (`RedisOutlet`), API nodes read and
relay (`RedisFeed`).

What Redis holds for each live conversation, written in one transaction per batch:
- ``{ns}:summaries`` field ``<id>``: ``{"n": <number>, "at": <time>, "s": <summary>}``,
  ``n`` being the number of the conversation's last monitor message;
- ``{ns}:recent:<id>``: its kept monitor messages, ``{"n": .., "m": <message>}``, oldest
  first, at most RECENT_LIMIT;
- every live message on the ``{ns}:live`` stream, which each API node reads into its hub:
  one entry per batch, ``{"b": [[topic, type, message, n, conversation id, match], ...]}``
  (``match``: what alert subscribers filter on, or null), kept LIVE_STREAM_SECONDS.
A snapshot (catch-up, board) and the messages after it are told apart by ``n``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from monitoring import codec
from monitoring.codec import dumps
from monitoring.feeds import AgentPush, CatchUp, Committed, Live, Watched
from monitoring.hub import Hub, Message
from monitoring.messages import (
    LIVE_TOPIC,
    RECENT_LIMIT,
    RELAY_RESYNC,
    conversation_topic,
    conversation_updated,
)
from monitoring.metrics import AgentLoad, load_of

log = logging.getLogger(__name__)

LIVE_STREAM_SECONDS = 10  # live messages kept for API nodes that lag (approximately)
ENTRY_MESSAGES = 1000  # at most this many live messages in one entry of the live stream
RELAY_BATCH = 100  # entries an API node reads at a time (it yields after each)
# A live message as the live stream holds it: topic, type, the message (JSON text), its
# number, its conversation's id (None: every subscriber of the topic), match (or None).
Packed = tuple[str, str, str, int, str | None, dict[str, Any] | None]

READ_BLOCK_MS = 1000  # longest blocking read; well under the Redis client's socket timeout
# (contact_center.streams reads with the same)


@dataclass(frozen=True, slots=True)
class FeedKeys:
    """The feed's Redis keys (`contact_center.streams.Layout` adds the bus's)."""

    namespace: str = "cc"

    def recent(self, conversation_id: str) -> str:
        return f"{self.namespace}:recent:{conversation_id}"

    @property
    def live(self) -> str:
        """Every live message, for every API node's hub."""
        return f"{self.namespace}:live"

    @property
    def summaries(self) -> str:
        """Hash: live conversation id -> its summary and message number."""
        return f"{self.namespace}:summaries"


class RedisOutlet:
    """A worker's outlet: one Redis transaction per committed batch, its live messages in
    one entry of the live stream."""

    def __init__(self, redis: aioredis.Redis, keys: FeedKeys) -> None:
        self.redis, self.keys = redis, keys
        # Conversations whose live messages could not be published: their summary and
        # catch-up are rewritten (`restored`) once Redis takes writes again.
        self.behind: set[str] = set()
        self._trim_before: str | None = None  # (by Redis's clock: see `_add_live`)

    async def publish(self, batch: Committed) -> None:
        pipe = self.redis.pipeline(transaction=True)
        live: list[Packed] = []
        kept: dict[str, list[str]] = {}
        for m in batch.messages:
            text = dumps(m.body)
            live.append((m.topic, m.body["type"],
                         text if m.said is None else dumps(m.published()),
                         m.number or m.event_id, m.conversation_id, m.match))
            if m.keep:
                kept.setdefault(m.conversation_id, []).append(
                    f'{{"n":{m.number},"m":{text}}}')
        for conversation_id, entries in kept.items():
            pipe.rpush(self.keys.recent(conversation_id), *entries)
        entry = self._summaries(pipe, batch.touched.values(), live)
        if not await self._execute(pipe, entry):
            self.behind.update(batch.touched)

    def _summaries(self, pipe: Any, conversations: Collection[Watched],
                   live: list[Packed]) -> int | None:
        """Store the conversations' summaries (one command for all), trim or drop their
        recent entries, and add ``live`` with their updates to the live stream (see
        `_add_live`)."""
        now = time.time()
        summaries: dict[str, str] = {}
        ended: list[str] = []
        for conv in conversations:
            summary = conv.summary(now)
            if conv.status == "live":
                summaries[conv.id] = dumps({"n": conv.published, "at": now, "s": summary})
                pipe.ltrim(self.keys.recent(conv.id), -RECENT_LIMIT, -1)
            else:
                ended.append(conv.id)
                pipe.delete(self.keys.recent(conv.id))
            live.append((LIVE_TOPIC, "conversation.updated",
                         dumps(conversation_updated(summary)), conv.published, conv.id, None))
        if summaries:
            pipe.hset(self.keys.summaries, mapping=summaries)
        if ended:
            pipe.hdel(self.keys.summaries, *ended)
        return self._add_live(pipe, live)

    def _add_live(self, pipe: Any, live: list[Packed]) -> int | None:
        """Add the messages to the live stream, ENTRY_MESSAGES an entry (one for a
        batch, as a rule); the last command's place in the pipeline (None: none)."""
        for start in range(0, len(live), ENTRY_MESSAGES):
            # Trimmed by age, reckoned from this outlet's previous entry's id (Redis's
            # clock, not this host's): an entry may hold hundreds of messages, so a
            # length bound would bound nothing.
            pipe.xadd(self.keys.live, {"b": dumps(live[start:start + ENTRY_MESSAGES])},
                      minid=self._trim_before)
        return len(pipe.command_stack) - 1 if live else None

    async def resync(self, conversation_ids: Collection[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        entry = self._add_live(pipe, [(topic, "resync", dumps(RELAY_RESYNC), 0, None, None)
                                      for topic in [*map(conversation_topic, conversation_ids),
                                                    LIVE_TOPIC]])
        await self._execute(pipe, entry)

    async def restored(self, conversations: Sequence[Watched],
                       recent: dict[str, list[dict[str, Any]]] | None = None,
                       force: bool = False) -> None:
        """Where Redis lost what was published of these conversations (an emptied Redis,
        a worker that died between commit and publish, a failed publish), rewrite their
        summary and catch-up (``recent``: their transcripts as stored, else the
        conversations' own) and make their monitors reconnect (``force``: all of them,
        whatever Redis holds). Raises if Redis fails."""
        if not conversations:
            return
        # After Redis lost what it held it may be another Redis, with another clock: no
        # trimming by the old one's ids.
        self._trim_before = None
        numbers = await self.redis.hmget(self.keys.summaries, [c.id for c in conversations])
        behind = [conv for conv, raw in zip(conversations, numbers, strict=True)
                  if force or raw is None or codec.loads(raw)["n"] != conv.published]
        if not behind:
            return
        pipe = self.redis.pipeline(transaction=True)
        for conv in behind:
            transcript = (recent or {}).get(conv.id, list(conv.recent))
            pipe.delete(self.keys.recent(conv.id))
            if transcript:
                pipe.rpush(self.keys.recent(conv.id), *[
                    dumps({"n": conv.published, "m": entry}) for entry in transcript])
        entry = self._summaries(pipe, behind, [])
        self._took(await pipe.execute(), entry)
        self.behind.difference_update(c.id for c in conversations)
        await self.resync([conv.id for conv in behind])

    async def _execute(self, pipe: Any, entry: int | None) -> bool:
        try:
            self._took(await pipe.execute(), entry)
            return True
        except Exception:
            log.warning("publishing live messages to Redis failed", exc_info=True)
            return False

    def _took(self, results: list[Any], entry: int | None) -> None:
        """Note the id of the live stream entry just added (``entry``: its command's
        place), if any: entries older than LIVE_STREAM_SECONDS before it go with the
        next one."""
        if entry is not None:
            millis = int(str(results[entry]).split("-")[0]) - LIVE_STREAM_SECONDS * 1000
            self._trim_before = f"{millis}-0"


class RedisFeed:
    """An API node's view: reads from Redis, and relays the live stream into the hub."""

    def __init__(self, redis: aioredis.Redis, keys: FeedKeys, hub: Hub) -> None:
        self.redis, self.keys, self.hub = redis, keys, hub
        self.agents = AgentPush(hub, self.agent_loads)
        self.healthy = True
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._relay(), name="live-relay")

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """What runs once started: the relay (cancelled to stop it)."""
        return [] if self._reader is None else [self._reader]

    async def _relay(self) -> None:
        last: str | None = None
        read = 0  # how many entries the stream had up to ``last``
        behind, checked, backoff = False, 0.0, 0.5
        while True:
            try:
                if last is None:  # from the newest entry on, as a definite id
                    last, read = await self._newest()
                elif behind or time.monotonic() - checked > 1.0:
                    read = await self._check_lag(read)
                    checked = time.monotonic()
                reply = await self.redis.xread({self.keys.live: last}, count=RELAY_BATCH,
                                               block=READ_BLOCK_MS)
                streams = cast(list[tuple[str, Any]], reply or [])
                entries = [e for _, stream in streams for e in stream]
                read, behind = read + len(entries), len(entries) == RELAY_BATCH
            except Exception as exc:
                if self.healthy:
                    log.warning("reading live messages from Redis failed (%r); retrying", exc)
                self.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not self.healthy:
                # Whatever was published meanwhile never reached this node's subscribers.
                log.info("reading live messages from Redis again")
                self.healthy, backoff = True, 0.5
                self.hub.broadcast(RELAY_RESYNC)
            for entry_id, fields in entries:
                last = entry_id
                self._relay_entry(entry_id, fields)
                await asyncio.sleep(0)  # an entry may hold a thousand messages

    def _relay_entry(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            messages = codec.loads(fields["b"])
        except Exception:  # not one of ours: what it held is lost to the subscribers
            log.exception("live stream entry %s could not be read", entry_id)
            self.hub.broadcast(RELAY_RESYNC)
            return
        for message in messages:
            try:
                self._offer(*message)
            except Exception:  # one bad message must not cost the others
                log.exception("relaying a live message of %s failed", entry_id)

    async def _check_lag(self, read: int) -> int:
        """If the stream was trimmed past what this node read (it fell about
        LIVE_STREAM_SECONDS behind), tell every subscriber to resync; returns how many
        entries the stream has had up to where reading goes on."""
        try:
            info = await self.redis.xinfo_stream(self.keys.live)
        except aioredis.ResponseError:  # gone (an emptied Redis): counting starts again
            return 0
        trimmed = int(info["entries-added"]) - int(info["length"])
        if trimmed > read:
            log.warning("this node fell %d live stream entries behind; subscribers resync",
                        trimmed - read)
            self.hub.broadcast(RELAY_RESYNC)
            return trimmed
        return read

    async def _newest(self) -> tuple[str, int]:
        """The live stream's newest entry id, and how many entries it has had so far."""
        try:
            info = await self.redis.xinfo_stream(self.keys.live)
        except aioredis.ResponseError:  # no such stream yet
            return "0-0", 0
        return str(info["last-generated-id"]), int(info["entries-added"])

    def _offer(self, topic: str, kind: str, text: str, number: int,
               conversation_id: str | None, match: dict[str, Any] | None) -> None:
        if not self.hub.subscribers(topic):
            return
        meta = match if match is not None else codec.loads(text) if topic == LIVE_TOPIC \
            else None
        self.hub.offer(topic, Message(kind, text, number, conversation_id or None), meta)
        if topic == LIVE_TOPIC and kind == "conversation.updated":
            self.agents.changed()

    # -- reads ---------------------------------------------------------------------------

    async def ready(self) -> None:
        """Always: the workers publish what the feed reads."""

    async def conversations(self) -> list[Live]:
        now = time.time()
        stored = cast(dict[str, str], await self.redis.hgetall(self.keys.summaries))
        return [_live(raw, now) for raw in stored.values()]

    async def conversation(self, conversation_id: str) -> Live | None:
        raw = cast(str | None, await self.redis.hget(self.keys.summaries, conversation_id))
        return None if raw is None else _live(raw, time.time())

    async def catch_up(self, conversation_id: str) -> CatchUp | None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.keys.summaries, conversation_id)
        pipe.lrange(self.keys.recent(conversation_id), 0, -1)
        raw, recent = await pipe.execute()
        if raw is None:
            return None
        live = _live(raw, time.time())
        return CatchUp(live.summary, [codec.loads(e)["m"] for e in recent], live.number)

    async def agent_loads(self) -> list[AgentLoad]:
        return [load_of(live.summary) for live in await self.conversations()]


def _live(raw: str, now: float) -> Live:
    """A stored summary, with the customer's wait brought up to ``now``."""
    stored = codec.loads(raw)
    summary = stored["s"]
    if summary["customer_waiting_seconds"] is not None:
        summary["customer_waiting_seconds"] += max(0.0, now - stored["at"])
    return Live(summary, stored["n"])
