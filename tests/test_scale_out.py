"""The scale-out deployment as users run it: API nodes and workers as separate processes
on a throwaway redis-server and a throwaway PostgreSQL database; and its parts' rules
(fencing, partition assignment, dead letters) on their own."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import asyncpg
import httpx2 as httpx
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contact_center.entries import DEAD_LETTER_AFTER
from contact_center.leases import assign
from contact_center.settings import Settings
from contact_center.stopping import WORST_CASE_SECONDS
from contact_center.stores import Fenced, PartitionMark, WriteBatch
from contact_center.stores.postgres import PostgresStore
from contact_center.stores.sqlite import SQLiteStore
from contact_center.streams import GROUP, Layout
from monitoring.feeds import Announcement
from monitoring.feeds import redis as feeds_redis
from monitoring.feeds.redis import RedisFeed, RedisOutlet
from monitoring.hub import Hub, Message
from monitoring.messages import LIVE_TOPIC, LiveMessage
from tests.conftest import (
    ANGRY,
    POSTGRES,
    Connector,
    RedisServer,
    Users,
    auth,
    free_port,
    make_app,
    make_store,
    namespace,
    on_server,
    run,
    wait_for_partitions,
)
from tests.test_alert_workflow import INSULT
from tests.test_server import PROJECT, cli, command
from tests.test_webhooks import Receiver

PARTITIONS = 8


# -- the parts ----------------------------------------------------------------------------


def test_every_partition_goes_to_one_alive_worker_and_few_move() -> None:
    workers = [f"w{i}" for i in range(5)]
    before = assign(workers, 64)
    assert set(before) == set(range(64)) and set(before.values()) == set(workers)
    assert max(list(before.values()).count(w) for w in workers) <= 64 // 5 * 2  # roughly fair
    after = assign([*workers, "w5"], 64)
    moved = {p for p in before if before[p] != after[p]}
    assert moved and all(after[p] == "w5" for p in moved)  # only to the newcomer
    gone = assign(workers[1:], 64)
    assert {p for p in before if before[p] != gone[p]} == {
        p for p in before if before[p] == "w0"}  # only the leaver's share moves
    assert assign([], 64) == {}


def test_a_fenced_out_worker_commits_nothing(postgres_database: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = PostgresStore(postgres_database, min_size=1, max_size=2,
                              schema=f"fence_{secrets.token_hex(4)}")
        await store.open()
        try:
            old = await store.claim_partition(3)
            await store.write(WriteBatch(marks=[PartitionMark(3, old.token, "e/1-0")]))
            new = await store.claim_partition(3)  # another worker took it over
            assert new.token == old.token + 1 and new.applied_through == "e/1-0"
            batch = WriteBatch(marks=[PartitionMark(3, old.token, "e/2-0")])
            batch.conversations["c"] = ({"id": "c", "channel": "chat", "queue": "q",
                                         "agent_id": None, "customer": {}, "recording": "all",
                                         "attributes": {}, "status": "live",
                                         "started_at": 1.0, "ended_at": None,
                                         "updated_at": 1.0}, {})
            with pytest.raises(Fenced) as fenced:
                await store.write(batch)
            assert fenced.value.partitions == {3}
            assert await store.live_conversation_ids() == []  # nothing of it landed
            await store.write(WriteBatch(marks=[PartitionMark(3, new.token, None)]))
            assert (await store.claim_partition(3)).applied_through == "e/1-0"  # kept
        finally:
            await store.close()

    run(scenario())


def test_a_worker_frozen_inside_a_transaction_does_not_block_a_takeover(
        postgres_database: str) -> None:
    async def scenario() -> float:
        schema = f"frozen_{secrets.token_hex(4)}"
        frozen, taker = (PostgresStore(postgres_database, min_size=1, max_size=2,
                                       schema=schema) for _ in range(2))
        await frozen.open()
        await taker.open()
        try:
            await frozen.claim_partition(5)
            db = await frozen.pool.acquire()
            transaction = db.transaction()
            await transaction.start()  # a batch in flight, row lock held, then it freezes
            await db.execute("UPDATE partitions SET token = token WHERE partition = 5")
            started = time.monotonic()
            while True:
                try:
                    await taker.claim_partition(5)
                    return time.monotonic() - started
                except asyncpg.LockNotAvailableError:  # waited CLAIM_WAIT_MS; try again
                    assert time.monotonic() - started < 15
        finally:
            await taker.close()
            await frozen.pool.expire_connections()
            await frozen.close()

    took = run(scenario())
    assert took < 10, took  # PostgreSQL ended the frozen session after 5 s idle


def test_workers_share_a_database_but_not_with_an_embedded_service(
        postgres_database: str) -> None:
    async def scenario() -> None:
        schema = f"lock_{secrets.token_hex(4)}"
        stores = [PostgresStore(postgres_database, min_size=1, max_size=1, schema=schema)
                  for _ in range(3)]
        for store in stores:
            await store.open()
        try:
            await stores[0].join_workers()
            await stores[1].join_workers()  # a second worker is welcome
            with pytest.raises(RuntimeError, match="another contact-center process"):
                await stores[2].claim_pipeline()
            await stores[0].close()
            await stores[1].close()
            await stores[2].claim_pipeline()  # all workers gone: embedded may run
            with pytest.raises(RuntimeError, match="embedded contact-center service"):
                await stores[1].join_workers()
        finally:
            for store in stores:
                await store.close()

    run(scenario())


def test_the_sqlite_store_refuses_partition_marks(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "cc.db")
        await store.open()
        try:
            with pytest.raises(ValueError, match="PostgreSQL"):
                await store.write(WriteBatch(marks=[PartitionMark(0, 1)]))
        finally:
            await store.close()

    run(scenario())


def test_a_node_that_fell_behind_the_live_stream_tells_subscribers_to_resync(
        redis_server: RedisServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        layout, hub = Layout(namespace(tmp_path), 4), Hub()
        feed = RedisFeed(redis, layout, hub)
        sub = hub.subscribe("conversation:c1")
        try:
            for i in range(50):
                await redis.xadd(layout.live, {"b": f'[["x","segment","{{}}",{i},"c1",null]]'})
            assert await feed._check_lag(50) == 50 and sub.queue.empty()  # read them all
            await redis.xtrim(layout.live, maxlen=10, approximate=False)
            assert await feed._check_lag(50) == 50 and sub.queue.empty()  # trimmed: read
            assert await feed._check_lag(30) == 40  # 10 trimmed before this node read them
            message = sub.queue.get_nowait()
            assert message is not None and message.type == "resync"
        finally:
            await redis.aclose()

    run(scenario())


def test_the_live_stream_keeps_its_last_seconds_in_one_entry_a_batch(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds_redis, "LIVE_STREAM_SECONDS", 2)
    monkeypatch.setattr(feeds_redis, "ENTRY_MESSAGES", 3)

    class Conv:  # what an outlet reads of a live conversation (`feeds.Watched`)
        def __init__(self, cid: str, status: str) -> None:
            self.id, self.status, self.published, self.shown = cid, status, 7, 7
            self.recent: list[dict[str, Any]] = []

        def summary(self, now: float) -> dict[str, Any]:
            return {"id": self.id, "status": self.status, "customer_waiting_seconds": None}

        def remember(self, entry: dict[str, Any]) -> None:
            self.recent.append(entry)

    def batch(i: int) -> Announcement:
        return Announcement([
            LiveMessage("c1", "conversation:c1", {"type": "segment", "i": i}, keep=True,
                        number=i + 1),
            LiveMessage("c2", "alerts", {"type": "alert.raised", "i": i}, event_id=i + 1,
                        match={"queue": "billing" if i % 2 else "sales"})],
            {"c1": Conv("c1", "live"), "c3": Conv("c3", "ended")})

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        layout, hub = Layout(namespace(tmp_path), 4), Hub()
        outlet, feed = RedisOutlet(redis, layout), RedisFeed(redis, layout, hub)
        monitor = hub.subscribe("conversation:c1")
        billing = hub.subscribe("alerts", accept=lambda meta: meta["queue"] == "billing")
        board = hub.subscribe(LIVE_TOPIC)
        try:
            await feed.start()
            await asyncio.sleep(0.2)  # (the relay reads from the newest entry on)
            for i in range(100):
                await outlet.publish(batch(i))
            # An entry that is not one of ours: subscribers are told to resync, and the
            # relay goes on.
            await redis.xadd(layout.live, {"b": "not json"})
            await asyncio.sleep(2.5)
            for i in range(100, 200):
                await outlet.publish(batch(i))
            info = await redis.xinfo_stream(layout.live)
            # One entry a batch (two: 4 messages, at most 3 an entry here), and the bad one
            assert info["entries-added"] == 401
            kept = await redis.xrange(layout.live)
            # The older ones are trimmed (by whole nodes: Redis trims approximately) ...
            assert 200 <= len(kept) < 401
            # ... never one of the last 2 seconds'.
            assert [json.loads(json.loads(fields["b"])[0][2]) for _, fields in kept[-200::2]] \
                == [{"type": "segment", "i": i} for i in range(100, 200)]
            assert await redis.hgetall(layout.summaries) == {"c1": ANY}  # c3 ended
            assert await redis.llen(layout.recent("c1")) == 200
            assert not await redis.exists(layout.recent("c3"))
            got: dict[str, list[Message]] = {"monitor": [], "billing": [], "board": []}
            for _ in range(200):  # the relay hands every message to its subscribers
                for name, sub in (("monitor", monitor), ("billing", billing), ("board", board)):
                    while not sub.queue.empty():
                        message = sub.queue.get_nowait()
                        assert message is not None  # (None: the subscriber overflowed)
                        got[name].append(message)
                if len(got["board"]) >= 401 and len(got["monitor"]) >= 201:
                    break
                await asyncio.sleep(0.05)
            assert [(m.type, m.number, m.conversation_id) for m in got["monitor"]] == [
                ("segment", i + 1, "c1") for i in range(100)] + [("resync", 0, None)] + [
                ("segment", i + 1, "c1") for i in range(100, 200)]
            assert [(m.type, m.number) for m in got["billing"]] == [
                ("alert.raised", i + 1) for i in range(1, 100, 2)] + [("resync", 0)] + [
                ("alert.raised", i + 1) for i in range(101, 200, 2)]
            updates = [m for m in got["board"] if m.type == "conversation.updated"]
            assert [m.conversation_id for m in updates] == ["c1", "c3"] * 200
            assert json.loads(updates[0].text) == {"type": "conversation.updated",
                                                  "conversation": {
                                                      "id": "c1", "status": "live",
                                                      "customer_waiting_seconds": None}}
        finally:
            for task in feed.tasks:
                task.cancel()
            await asyncio.gather(*feed.tasks, return_exceptions=True)
            await redis.aclose()

    run(scenario())


# -- processes ----------------------------------------------------------------------------


class Process:
    def __init__(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.name, self.args, self.env = name, args, os.environ | (env or {})
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([*command(), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=PROJECT,
                                     env=self.env)
        threading.Thread(target=self._collect, args=(self.proc,), daemon=True).start()

    def _collect(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Deployment:
    """API nodes and workers on one Redis and one PostgreSQL database."""

    def __init__(self, redis: RedisServer, database: str) -> None:
        self.redis, self.database = redis, database
        self.nodes: list[tuple[Process, str]] = []
        self.workers: list[Process] = []
        self._tokens: dict[str, str] = {}

    def common(self) -> list[str]:
        return ["--db", self.database, "--redis", self.redis.url,
                "--partitions", str(PARTITIONS)]

    def node(self, **env: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = Process(f"node{len(self.nodes)}", "serve", "--port", str(port),
                          *self.common(), env=env)
        self.nodes.append((process, url))
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").json().get("dependencies", {}).get(
                        "redis") == "ok":
                    return url
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline, "".join(process.output)
            time.sleep(0.1)

    def worker(self) -> Process:
        process = Process(f"worker{len(self.workers)}", "worker", *self.common())
        self.workers.append(process)
        return process

    def wait_until_owned(self, url: str, workers: int, timeout: float = 20) -> float:
        """Until every partition is held and ``workers`` are alive; returns the seconds."""
        started = time.monotonic()
        while True:
            health = httpx.get(f"{url}/healthz").json()
            if health["partitions_unowned"] == 0 and health["workers"] == workers:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, json.dumps(health) + "".join(
                line for w in self.workers for line in w.output[-15:])
            time.sleep(0.05)

    def wait_until_one_holds_all(self, timeout: float = 20) -> None:
        """Until a single worker is alive and holds every lease: `wait_until_owned(1)` can
        also pass while a paused worker's leases outlive its heartbeat by a moment."""
        layout = Layout(partitions=PARTITIONS)

        async def holders() -> tuple[list[str], list[str | None]]:
            redis = aioredis.from_url(self.redis.url, decode_responses=True)
            try:
                alive = await redis.zrange(layout.workers, 0, -1)
                leases = await redis.mget([layout.lease(p) for p in range(PARTITIONS)])
                return [str(w) for w in alive], [None if h is None else str(h) for h in leases]
            finally:
                await redis.aclose()

        deadline = time.monotonic() + timeout
        while True:
            alive, leases = asyncio.run(holders())
            if len(alive) == 1 and set(leases) == set(alive):
                return
            assert time.monotonic() < deadline, (alive, leases)
            time.sleep(0.05)

    def token(self, username: str, *profiles: str, agent_id: str | None = None) -> str:
        extra = ["--agent-id", agent_id] if agent_id else []
        cli("users", "create", username, *[f"--profile={p}" for p in profiles], *extra,
            "--db", self.database)
        return cli("tokens", "create", username, "--db", self.database).strip()

    def stop(self) -> None:
        for process in [*self.workers, *(n for n, _ in self.nodes)]:
            process.stop()


@pytest.fixture
def database(postgres_database: str) -> Iterator[str]:
    """A database of its own (the processes take a plain URL)."""
    name = f"cc_so_{secrets.token_hex(5)}"
    run(on_server(f'CREATE DATABASE "{name}"'))
    yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    run(on_server(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_of_test() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def deployment(redis_of_test: RedisServer, database: str) -> Iterator[Deployment]:
    d = Deployment(redis_of_test, database)
    try:
        yield d
    finally:
        d.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _recv(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 20))  # type: ignore[no-any-return]


def test_two_nodes_two_workers_one_conversation(deployment: Deployment) -> None:
    """A connector on node 1; on node 2 a supervisor monitors the conversation and an
    agent follows its alerts: every segment and alert arrives, in order."""
    node1, node2 = deployment.node(), deployment.node()
    deployment.worker(), deployment.worker()
    deployment.wait_until_owned(node1, workers=2)
    connector = deployment.token("connector", "Connector")
    supervisor = deployment.token("sue", "CallCenterManager")
    agent = deployment.token("ann", "Agent", agent_id="ann")
    ws1, ws2 = node1.replace("http", "ws"), node2.replace("http", "ws")

    async def scenario() -> None:
        async with connect(f"{ws1}/v1/ingest", additional_headers=_bearer(connector)) as ingest:
            await _recv(ingest)  # hello

            async def send(event: dict[str, Any]) -> dict[str, Any]:
                await ingest.send(json.dumps(event))
                return await _recv(ingest)

            start = {"type": "conversation.started", "conversation": {
                "id": "x1", "channel": "chat", "queue": "billing", "agent_id": "ann",
                "recording": "all"}}
            assert (await send(start))["status"] == "accepted"
            said = [await send({"type": "segment", "conversation_id": "x1",
                                "segment_id": "s0", "role": "customer",
                                "text": "Hello, I have a question."})]
            async with connect(f"{ws2}/v1/conversations/x1/monitor",
                               additional_headers=_bearer(supervisor)) as monitor, \
                    connect(f"{ws2}/v1/alerts/stream",
                            additional_headers=_bearer(agent)) as alerts:
                catch_up = await _recv(monitor)
                assert catch_up["type"] == "catch_up"
                assert [t["segment_id"] for t in catch_up["transcript"]] == ["s0"]
                assert (await _recv(monitor))["type"] == "live"
                assert (await _recv(alerts))["type"] == "subscribed"
                for i, text in enumerate([*ANGRY, "Thanks, that fixed it."], 1):
                    said.append(await send({"type": "segment", "conversation_id": "x1",
                                            "segment_id": f"s{i}", "role": "customer",
                                            "text": text}))
                assert all(r["status"] == "accepted" for r in said)
                await send({"type": "conversation.ended", "conversation_id": "x1"})
                seen = []
                while True:
                    message = await _recv(monitor)
                    seen.append(message)
                    if message["type"] == "conversation.ended":
                        break
                segments = [m["segment_id"] for m in seen if m["type"] == "segment"]
                assert segments == ["s1", "s2", "s3", "s4"]  # s0 came with the catch-up
                events = [m for m in seen if m["type"].startswith("alert.")]
                hit_events = [(i, m) for i, m in enumerate(seen) if m["type"] in (
                    "alert.raised", "alert.updated", "alert.escalated")]
                assert hit_events, "the angry turns raised alerts"
                assert hit_events[0][1]["type"] == "alert.raised"
                # Each hit right after the segment that raised it.
                for position, event in hit_events:
                    trigger = event["alert"]["hits"][-1]["evidence"]["segments"][-1][
                        "segment_id"]
                    assert seen[position - 1].get("segment_id") == trigger or \
                        seen[position - 1]["type"].startswith("alert.")
                # The end resolved the alert, pushed before the end itself.
                assert seen[-2]["type"] == "alert.resolved"
                assert seen[-2]["alert"]["resolution"] == "conversation_ended"
                # The alert stream pushes the very same events, in the same order.
                pushed = [await _recv(alerts) for _ in events]
                assert [(m["type"], m["event_id"], m["alert"]) for m in pushed] == [
                    (m["type"], m["event_id"], m["alert"]) for m in events]
                assert all(isinstance(m["event_id"], int) for m in pushed)
                assert [m["event_id"] for m in pushed] == sorted({m["event_id"] for m in pushed})
        listed = httpx.get(f"{node2}/v1/alerts", headers=_bearer(supervisor)).json()["alerts"]
        assert sorted(a["id"] for a in listed) == sorted({m["alert"]["id"] for m in events})
        for node in (node1, node2):  # the same from every node
            transcript = httpx.get(f"{node}/v1/transcripts/x1", headers=_bearer(supervisor))
            assert [t["segment_id"] for t in transcript.json()["turns"]] == [
                f"s{i}" for i in range(5)]

    asyncio.run(scenario())


class Ledger:
    """A connector that keeps a ledger: every event sent and every reply. Each
    conversation resends from its first unacknowledged event on an error or a dropped
    connection, as docs/protocol.md tells connectors to."""

    def __init__(self, urls: list[str], token: str) -> None:
        self.urls, self.token = urls, token
        self.acked: dict[str, str] = {}  # segment id -> status
        self.refused = 0
        self.reconnects = 0

    async def conversation(self, cid: str, segments: int, url: str) -> None:
        events = [{"type": "conversation.started", "conversation": {
            "id": cid, "channel": "chat", "queue": "q", "agent_id": "ann",
            "recording": "all"}}]
        events += [{"type": "segment", "conversation_id": cid, "segment_id": f"{cid}-{i}",
                    "role": "customer" if i % 2 else "agent",
                    "text": random.choice([*ANGRY, "fine", "ok thanks", "where is it?"])}
                   for i in range(segments)]
        position = 0
        while position < len(events):
            try:
                async with connect(f"{url}/v1/ingest",
                                   additional_headers=_bearer(self.token)) as ws:
                    await _recv(ws)
                    while position < len(events):
                        await ws.send(json.dumps(events[position]))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                        if reply["type"] != "ack":
                            assert reply["code"] == "unavailable", reply
                            self.refused += 1
                            break
                        if "segment_id" in events[position]:
                            self.acked[events[position]["segment_id"]] = reply["status"]
                        position += 1
            except (ConnectionClosed, OSError):
                pass
            if position < len(events):
                self.reconnects += 1
                await asyncio.sleep(0.2)

    async def run(self, conversations: int, segments: int) -> None:
        await asyncio.gather(*[
            self.conversation(f"c{i}", segments, self.urls[i % len(self.urls)].replace(
                "http", "ws")) for i in range(conversations)])


async def _stored(database: str) -> tuple[list[str], dict[str, int], dict[str, int], int]:
    db = await asyncpg.connect(database)
    try:
        segments = [r[0] for r in await db.fetch("SELECT segment_id FROM segments")]
        counted = {r[0]: json.loads(r[1])["counts"] for r in await db.fetch(
            "SELECT id, state::text FROM conversations")}
        rows = {r[0]: r[1] for r in await db.fetch(
            "SELECT conversation_id, count(*) FROM segments GROUP BY 1")}
        starts = await db.fetchval(
            "SELECT count(*) FROM conversation_events WHERE type = 'conversation.started'")
        return segments, {c: n["customer"] + n["agent"] for c, n in counted.items()}, rows, \
            starts
    finally:
        await db.close()


def _check_ledger(ledger: Ledger, database: str, conversations: int, segments: int) -> None:
    stored, counted, rows, starts = run(_stored(database))
    assert len(stored) == len(set(stored)) == conversations * segments
    assert set(ledger.acked) == set(stored), "every acked segment is stored, and only those"
    assert counted == rows, "no segment counted twice in a conversation's state"
    assert starts == conversations


def test_kill_9_a_worker_three_times_during_10000_segments(deployment: Deployment) -> None:
    node1, node2 = deployment.node(), deployment.node()
    first, second = deployment.worker(), deployment.worker()
    deployment.wait_until_owned(node1, workers=2)
    ledger = Ledger([node1, node2], deployment.token("connector", "Connector"))
    takeovers: list[float] = []

    async def scenario() -> None:
        sending = asyncio.create_task(ledger.run(conversations=50, segments=200))
        for victim in (first, second, first):
            await asyncio.sleep(2.0)
            victim.kill()
            # The survivor takes the victim's partitions over once its lease lapses.
            takeovers.append(await asyncio.to_thread(deployment.wait_until_owned, node1, 1))
            victim.start()
            await asyncio.to_thread(deployment.wait_until_owned, node1, 2)
        await sending

    asyncio.run(scenario())
    _check_ledger(ledger, deployment.database, 50, 200)
    print(f"takeovers {takeovers} s; {ledger.refused} refusals, {ledger.reconnects} resends")
    assert max(takeovers) <= 10, takeovers  # the documented bound


def test_a_paused_worker_that_lost_its_lease_applies_nothing_after(
        deployment: Deployment) -> None:
    """SIGSTOP a worker past its lease while events flow: the other takes its partitions
    over; woken up, the paused one's batch in progress is fenced out and it drops them."""
    node = deployment.node()
    paused, other = deployment.worker(), deployment.worker()
    deployment.wait_until_owned(node, workers=2)
    deadline = time.monotonic() + 20  # (the other may have taken them all first)
    while not any("took partition" in line for line in paused.output):
        assert time.monotonic() < deadline, "".join(paused.output[-20:])
        time.sleep(0.1)
    ledger = Ledger([node], deployment.token("connector", "Connector"))

    async def scenario() -> None:
        sending = asyncio.create_task(ledger.run(conversations=20, segments=100))
        await asyncio.sleep(1.0)
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        await asyncio.to_thread(deployment.wait_until_one_holds_all)  # the other
        paused.proc.send_signal(signal.SIGCONT)
        await sending

    asyncio.run(scenario())
    _check_ledger(ledger, deployment.database, 20, 100)
    deadline = time.monotonic() + 10
    while not any("lost partition" in line for line in paused.output):
        assert time.monotonic() < deadline, "".join(paused.output[-20:])
        time.sleep(0.1)
    assert other.proc is not None and other.proc.poll() is None


def test_a_streak_in_progress_survives_kill_9_of_its_worker(deployment: Deployment) -> None:
    node = deployment.node()
    admin = deployment.token("root", "Admin")
    streak = {"id": "neg", "kind": "sentiment", "metric": "turn", "below": -0.5,
              "consecutive": 2, "clear_above": 0.0, "cooldown_seconds": 0}
    assert httpx.put(f"{node}/v1/rules", headers=_bearer(admin),
                     json={"rules": [streak]}).status_code == 200
    first = deployment.worker()  # starts with the saved rules
    deployment.wait_until_owned(node, workers=1)
    connector = deployment.token("connector", "Connector")
    ws = node.replace("http", "ws")

    async def say(*events: dict[str, Any]) -> list[dict[str, Any]]:
        async with connect(f"{ws}/v1/ingest", additional_headers=_bearer(connector)) as c:
            await _recv(c)
            replies = []
            for event in events:
                await c.send(json.dumps(event))
                replies.append(await _recv(c))
            return replies

    def turn(segment: str, text: str) -> dict[str, Any]:
        return {"type": "segment", "conversation_id": "k1", "segment_id": segment,
                "role": "customer", "text": text}

    async def scenario() -> None:
        started, one = await say({"type": "conversation.started", "conversation": {
            "id": "k1", "channel": "chat", "queue": "q", "agent_id": "ann",
            "recording": "all"}}, turn("a0", ANGRY[0]))
        assert started["status"] == one["status"] == "accepted"
        first.kill()
        deployment.worker()
        await asyncio.to_thread(deployment.wait_until_owned, node, 1)
        (two,) = await say(turn("a1", ANGRY[1]))
        assert two["status"] == "accepted"

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while not (alerts := httpx.get(f"{node}/v1/alerts", headers=_bearer(admin)).json()[
            "alerts"]):
        assert time.monotonic() < deadline, "the streak did not survive the kill"
        time.sleep(0.1)
    (alert,) = alerts
    (hit,) = alert["hits"]
    assert hit["rule_id"] == alert["rule_id"] == "neg"
    assert [s["segment_id"] for s in hit["evidence"]["segments"]] == ["a0", "a1"]


def test_redis_restart_mid_stream_loses_no_acked_segment(deployment: Deployment) -> None:
    node = deployment.node()
    deployment.worker()
    deployment.wait_until_owned(node, workers=1)
    ledger = Ledger([node], deployment.token("connector", "Connector"))

    async def scenario() -> None:
        sending = asyncio.create_task(ledger.run(conversations=20, segments=100))
        await asyncio.sleep(1.5)
        deployment.redis.stop()  # SIGTERM: AOF (fsync always) holds everything
        await asyncio.sleep(1.0)
        deployment.redis.start()
        await sending

    asyncio.run(scenario())
    _check_ledger(ledger, deployment.database, 20, 100)
    assert ledger.refused + ledger.reconnects > 0, "the restart was noticed"


def test_redis_down_answers_unavailable_and_recovers(deployment: Deployment) -> None:
    node = deployment.node()
    deployment.worker()
    deployment.wait_until_owned(node, workers=1)
    connector = deployment.token("connector", "Connector")
    ws = node.replace("http", "ws")

    async def say(segment: str) -> dict[str, Any]:
        async with connect(f"{ws}/v1/ingest", additional_headers=_bearer(connector)) as c:
            await _recv(c)
            await c.send(json.dumps({"type": "segment", "conversation_id": "d1",
                                     "segment_id": segment, "role": "customer",
                                     "text": "hello"}))
            return await _recv(c)

    async def scenario() -> None:
        async with connect(f"{ws}/v1/ingest", additional_headers=_bearer(connector)) as c:
            await _recv(c)
            await c.send(json.dumps({"type": "conversation.started", "conversation": {
                "id": "d1", "channel": "chat", "queue": "q", "recording": "all"}}))
            assert (await _recv(c))["status"] == "accepted"
        deployment.redis.stop(kill=True)
        refused = await say("s1")
        assert refused["type"] == "error" and refused["code"] == "unavailable"
        health = httpx.get(f"{node}/healthz")
        assert health.status_code == 503
        assert health.json()["dependencies"]["redis"] == "unavailable"
        assert health.json()["status"] == "degraded"
        deployment.redis.start()
        await asyncio.to_thread(deployment.wait_until_owned, node, 1)
        assert (await say("s1"))["status"] == "accepted"  # drained by itself
        deadline = time.monotonic() + 10
        while httpx.get(f"{node}/healthz").status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    asyncio.run(scenario())
    stored, _, _, _ = run(_stored(deployment.database))
    assert stored == ["s1"]


def test_an_emptied_redis_is_recovered_without_manual_steps(deployment: Deployment) -> None:
    # What was in flight is gone with the data: answered unavailable after this long.
    node = deployment.node(CC_REPLY_TIMEOUT_SECONDS="3")
    deployment.worker()
    deployment.wait_until_owned(node, workers=1)
    ledger = Ledger([node], deployment.token("connector", "Connector"))

    async def empty() -> None:
        client = aioredis.Redis.from_url(deployment.redis.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()

    async def scenario() -> None:
        sending = asyncio.create_task(ledger.run(conversations=10, segments=60))
        await asyncio.sleep(1.0)
        await empty()  # streams, groups, leases, live views: all gone
        await sending

    asyncio.run(scenario())
    _check_ledger(ledger, deployment.database, 10, 60)


def test_poison_entries_go_to_the_dead_letter_stream(deployment: Deployment) -> None:
    """An entry delivered too often (it keeps killing its worker) is set aside, answered
    and listed for admins; the partition goes on."""
    node = deployment.node()
    admin = deployment.token("root", "Admin")
    layout = Layout(partitions=PARTITIONS)
    event = {"type": "conversation.started", "conversation": {
        "id": "p1", "channel": "chat", "queue": "q", "recording": "all"}}
    inbox = layout.inbox(layout.partition_of("p1"))

    async def poison() -> None:
        client = aioredis.Redis.from_url(deployment.redis.url, decode_responses=True)
        try:
            await client.xgroup_create(inbox, GROUP, id="0", mkstream=True)
            await client.xadd(inbox, {"e": json.dumps(event), "n": "gone-node", "r": "1",
                                      "s": "src", "t": str(time.time())})
            # Workers took it and died, as often as it takes: one read it, the others
            # claimed it after.
            await client.xreadgroup(GROUP, "dead-0", {inbox: ">"})
            for i in range(1, DEAD_LETTER_AFTER):
                await client.xautoclaim(inbox, GROUP, f"dead-{i}", 0, "0-0")
        finally:
            await client.aclose()

    run(poison())
    deployment.worker()
    deployment.wait_until_owned(node, workers=1)
    deadline = time.monotonic() + 10
    while not (letters := httpx.get(f"{node}/v1/admin/dead-letters",
                                    headers=_bearer(admin)).json()["dead_letters"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (letter,) = letters
    assert letter["partition"] == layout.partition_of("p1")
    assert letter["deliveries"] == DEAD_LETTER_AFTER + 1
    assert letter["event"] == event
    assert httpx.get(f"{node}/v1/admin/dead-letters").status_code == 401
    # The partition goes on: the same conversation starts normally when sent again.
    connector = deployment.token("connector", "Connector")
    result = httpx.post(f"{node}/v1/conversations", headers=_bearer(connector),
                        json=event["conversation"])
    assert result.status_code == 201


def test_a_worker_refuses_sqlite(tmp_path: Path, redis_server: RedisServer) -> None:
    done = subprocess.run([*command(), "worker", "--db", str(tmp_path / "x.db"), "--redis",
                           redis_server.url], capture_output=True, text=True, timeout=60,
                          cwd=PROJECT, env=os.environ | {"CC_DATABASE": ""})
    assert done.returncode != 0 and "postgresql://" in done.stderr


def test_an_entry_taken_by_a_departed_reader_is_applied_first(
        settings: Settings, tmp_path: Path, redis_server: RedisServer,
        postgres_database: str) -> None:
    """A read the partition's previous owner had in flight when it let go can take an
    entry the new owner never sees as new; the new owner applies it before anything
    after it."""
    users = Users(lambda: make_store("scaleout", tmp_path))
    connector, admin = users.token("Connector"), users.token("Admin")
    layout = Layout(namespace(tmp_path), 4)
    orphan = {"type": "segment", "conversation_id": "o1", "segment_id": "s1",
              "role": "customer", "text": "first"}
    inbox = layout.inbox(layout.partition_of("o1"))

    async def departed_reader_takes_one() -> None:
        redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            # One transaction: the departed reader gets it before the owner's blocked read.
            pipe = redis.pipeline(transaction=True)
            pipe.xadd(inbox, {"e": json.dumps(orphan), "n": "gone", "r": "1",
                              "s": "gone-source", "t": str(time.time())})
            pipe.xreadgroup(GROUP, "departed", {inbox: ">"}, count=1)
            taken = (await pipe.execute())[1]
            assert taken and taken[0][1][0][1]["e"] == json.dumps(orphan)
        finally:
            await redis.aclose()

    with TestClient(make_app(settings, "scaleout", tmp_path)) as client:
        wait_for_partitions(client)
        with client.websocket_connect("/v1/ingest", headers=auth(connector)) as ws:
            ingest = Connector(ws)
            assert ingest.start("o1")["status"] == "accepted"
            run(departed_reader_takes_one())
            assert ingest.say("o1", "s2", "second")["status"] == "accepted"
        turns = client.get("/v1/transcripts/o1", headers=auth(admin)).json()["turns"]
        assert [(t["segment_id"], t["seq"]) for t in turns] == [("s1", 1), ("s2", 2)]


def test_a_fenced_out_worker_lets_go_of_everything_and_takes_it_back(
        settings: Settings, tmp_path: Path, redis_server: RedisServer,
        postgres_database: str) -> None:
    """Another owner claims a partition's token under a worker's feet: its batch there
    commits nothing and it forgets the partition's conversations at once (others go
    on); once its lease lapses it takes the partition again and applies the event."""
    users = Users(lambda: make_store("scaleout", tmp_path))
    connector = users.token("Connector")
    layout = Layout(namespace(tmp_path), 4)
    fenced = "f1"
    other = next(f"g{i}" for i in range(100)
                 if layout.partition_of(f"g{i}") != layout.partition_of(fenced))
    partition = layout.partition_of(fenced)

    async def claim_elsewhere() -> None:
        store = make_store("scaleout", tmp_path)
        await store.open()
        try:
            await store.claim_partition(partition)  # type: ignore[attr-defined]
        finally:
            await store.close()

    with TestClient(make_app(settings, "scaleout", tmp_path)) as client:
        wait_for_partitions(client)
        worker = client.app.state.runtime.worker[0]  # type: ignore[attr-defined]
        with client.websocket_connect("/v1/ingest", headers=auth(connector)) as one, \
                client.websocket_connect("/v1/ingest", headers=auth(connector)) as two:
            a, b = Connector(one), Connector(two)
            assert a.start(fenced)["status"] == b.start(other)["status"] == "accepted"
            run(claim_elsewhere())
            one.send_json({"type": "segment", "conversation_id": fenced,
                           "segment_id": "s1", "role": "customer", "text": "hello"})
            assert b.say(other, "s1", "hi")["status"] == "accepted"  # its partition goes on
            deadline = time.monotonic() + 5
            while partition in worker.owned:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert b.say(other, "s2", "still here")["status"] == "accepted"
            applier = worker.pipeline.applier
            assert fenced not in applier.conversations and fenced not in applier.stale
            # Its lease lapses, it takes the partition again, and answers the event.
            reply = one.receive_json()
            assert reply["status"] == "accepted" and reply["segment_id"] == "s1"
            assert applier.conversations[fenced].counts["customer"] == 1


# -- stopping always ends (docs/operations.md#stopping) ---------------------------------


def _stop_and_time(deployment: Deployment) -> tuple[float, int | None, str]:
    process = deployment.nodes[0][0]
    assert process.proc is not None
    started = time.monotonic()
    process.proc.terminate()
    code: int | None
    try:
        code = process.proc.wait(WORST_CASE_SECONDS + 20)
    except subprocess.TimeoutExpired:
        code = None
        process.proc.kill()
    return time.monotonic() - started, code, "".join(process.output)


def _stop_with_a_reply_pending(deployment: Deployment, redis_down: bool) -> None:
    node = deployment.node(CC_REPLY_TIMEOUT_SECONDS="30")  # no worker: the reply pends
    connector = deployment.token("connector", "Connector")

    async def scenario() -> tuple[float, int | None, str]:
        async with connect(f"{node.replace('http', 'ws')}/v1/ingest",
                           additional_headers=_bearer(connector)) as c:
            await _recv(c)
            await c.send(json.dumps({"type": "conversation.started", "conversation": {
                "id": "s1", "channel": "chat", "queue": "q"}}))
            await asyncio.sleep(0.5)  # on its partition's stream, where no worker reads
            if redis_down:
                deployment.redis.stop(kill=True)
            stopped = asyncio.create_task(asyncio.to_thread(_stop_and_time, deployment))
            answers = []
            try:
                while True:  # whatever comes before the close: never an ack
                    answers.append(json.loads(await asyncio.wait_for(c.recv(), 60)))
            except ConnectionClosed:
                pass
            assert all(a.get("status") != "accepted" for a in answers), answers
            return await stopped

    elapsed, code, output = asyncio.run(scenario())
    assert code is not None, f"still running {elapsed:.0f} s after SIGTERM:\n{output}"
    assert elapsed <= WORST_CASE_SECONDS, f"took {elapsed:.1f} s:\n{output}"
    assert "stopping: answering accepted events did not finish within" in output  # said
    # Its own stop ended it (uvicorn re-raises the SIGTERM it caught), not the last resort.
    assert code == -signal.SIGTERM, f"exit code {code} (1: the last resort):\n{output}"


def test_a_node_stops_in_time_with_redis_down_and_a_reply_pending(
        deployment: Deployment) -> None:
    _stop_with_a_reply_pending(deployment, redis_down=True)


def test_a_node_stops_in_time_with_a_reply_pending(deployment: Deployment) -> None:
    _stop_with_a_reply_pending(deployment, redis_down=False)


def test_each_alert_event_reaches_a_webhook_once_from_two_nodes(deployment: Deployment) -> None:
    """Two API nodes both deliver webhooks from the shared outbox: every alert event
    reaches the endpoint once (one webhook-id each), signed, none missing."""
    allowed = {"CC_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
    node1, node2 = deployment.node(**allowed), deployment.node(**allowed)
    deployment.worker()
    deployment.wait_until_owned(node1, workers=1)
    admin = _bearer(deployment.token("root", "Admin"))
    connector = _bearer(deployment.token("feed", "Connector"))
    receiver = Receiver()
    try:
        hook = httpx.post(f"{node1}/v1/webhooks", headers=admin, json={
            "url": receiver.url, "events": ["alert.raised", "alert.updated",
                                            "alert.escalated", "alert.resolved"]}).json()
        for i in range(10):
            cid = f"h{i}"
            assert httpx.post(f"{node2}/v1/conversations", headers=connector,
                              json={"id": cid, "agent_id": "a1"}).status_code == 201
            assert httpx.post(f"{node2}/v1/conversations/{cid}/segments", headers=connector,
                              json={"segments": [{"segment_id": "s1", "role": "customer",
                                                  "text": INSULT}]}).status_code == 200
            assert httpx.post(f"{node1}/v1/events", headers=connector, json={"events": [
                {"type": "conversation.ended", "conversation_id": cid}]}).status_code == 200
        alerts = httpx.get(f"{node1}/v1/alerts?limit=100", headers=admin).json()["alerts"]
        assert len(alerts) == 10
        expected = {f"msg_{e['event_id']}_{hook['id']}"
                    for a in alerts
                    for e in httpx.get(f"{node2}/v1/alerts/{a['id']}",
                                       headers=admin).json()["history"]}
        receiver.wait_for(len(expected), seconds=20)
        time.sleep(1.5)  # (a duplicate would have arrived by now)
        ids = [headers["webhook-id"] for headers, _ in receiver.requests]
        assert sorted(ids) == sorted(expected)  # each once, none missing
        for request in receiver.requests:
            Webhook(hook["secret"]).verify(request[1], request[0])
    finally:
        receiver.close()


def test_a_change_on_one_node_or_the_cli_closes_sockets_on_another(
        deployment: Deployment) -> None:
    """Scope and revocation reach every API node: a socket on node B closes within 5 s
    of a change made through node A, or through the CLI straight in the database."""
    node_a, node_b = deployment.node(), deployment.node()
    deployment.worker()
    deployment.wait_until_owned(node_a, workers=1)
    admin = _bearer(deployment.token("root", "Admin"))
    watcher = _bearer(deployment.token("kim", "CallCenterManager"))
    connector = deployment.token("connector", "Connector")
    assert httpx.post(f"{node_a}/v1/teams", headers=admin,
                      json={"id": "emea", "name": "EMEA"}).status_code == 201
    ws_a, ws_b = node_a.replace("http", "ws"), node_b.replace("http", "ws")

    async def closed(socket: Any) -> tuple[int, str, float]:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as ended:
            while True:
                await asyncio.wait_for(socket.recv(), 5)
        assert ended.value.rcvd is not None
        return ended.value.rcvd.code, ended.value.rcvd.reason, time.monotonic() - started

    async def scenario() -> None:
        async with connect(f"{ws_a}/v1/ingest", additional_headers=_bearer(connector)) as c:
            await _recv(c)
            await c.send(json.dumps({"type": "conversation.started", "conversation": {
                "id": "x1", "channel": "chat", "queue": "sales", "agent_id": "bob",
                "recording": "all"}}))
            assert (await _recv(c))["status"] == "accepted"
        url = f"{ws_b}/v1/conversations/x1/monitor"
        async with connect(url, additional_headers=watcher) as monitor:
            assert json.loads(await monitor.recv())["type"] == "catch_up"
            answer = await asyncio.to_thread(
                httpx.patch, f"{node_a}/v1/users/kim", headers=admin,
                json={"scope": {"teams": ["emea"], "queues": []}})
            assert answer.status_code == 200
            code, reason, seconds = await closed(monitor)
            assert (code, reason) == (1008, "out_of_scope: the conversation left your scope")
            assert seconds < 5
        await asyncio.to_thread(cli, "users", "scope", "kim", "--all", "--db",
                                deployment.database)
        async with connect(f"{ws_b}/v1/live", additional_headers=watcher) as board:
            assert json.loads(await board.recv())["type"] == "snapshot"
            await asyncio.to_thread(cli, "users", "disable", "kim", "--db",
                                    deployment.database)
            code, reason, seconds = await closed(board)
            assert (code, reason) == (1008, "revoked: the token was revoked or its user "
                                            "disabled")
            assert seconds < 5

    asyncio.run(scenario())


def test_whisper_and_barge_across_nodes(deployment: Deployment) -> None:
    """The agent desktop's connector socket on node 1; a supervisor acts from node 2 and
    monitors there, a colleague monitors on node 1: every push reaches the socket, the
    agent's alert stream and both monitors, and who monitors is the same on every node."""
    node1, node2 = deployment.node(), deployment.node()
    deployment.worker()
    deployment.wait_until_owned(node1, workers=1)
    connector = _bearer(deployment.token("desk", "Connector"))
    sam = _bearer(deployment.token("sam", "CallCenterManager"))
    kim = _bearer(deployment.token("kim", "CallCenterManager"))
    ann = _bearer(deployment.token("ann", "Agent", agent_id="ann"))
    ws1, ws2 = node1.replace("http", "ws"), node2.replace("http", "ws")

    async def post(url: str, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        answer = await asyncio.to_thread(httpx.post, url, headers=headers, json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    async def until(ws: Any, wanted: str) -> dict[str, Any]:
        while (message := await _recv(ws))["type"] != wanted:
            pass
        return message

    async def scenario() -> None:
        async with connect(f"{ws1}/v1/ingest?outbound=true",
                           additional_headers=connector) as desk:
            assert (await _recv(desk))["outbound"] is True
            await desk.send(json.dumps({"type": "conversation.started", "conversation": {
                "id": "x2", "agent_id": "ann", "recording": "all"}}))
            assert (await _recv(desk))["status"] == "accepted"
            async with connect(f"{ws2}/v1/conversations/x2/monitor",
                               additional_headers=sam) as by_sam, \
                    connect(f"{ws1}/v1/conversations/x2/monitor",
                            additional_headers=kim) as by_kim, \
                    connect(f"{ws2}/v1/alerts/stream", additional_headers=ann) as agent:
                for monitor in (by_sam, by_kim):
                    assert (await _recv(monitor))["type"] == "catch_up"
                assert (await _recv(agent))["type"] == "subscribed"
                assert (await until(by_sam, "monitor.started"))["by"] == "kim"
                for node in (node1, node2):
                    listed = await asyncio.to_thread(
                        httpx.get, f"{node}/v1/conversations/x2/monitors", headers=kim)
                    assert [m["username"] for m in listed.json()["monitors"]] == [
                        "sam", "kim"]

                whispered = await post(f"{node2}/v1/conversations/x2/whisper", sam,
                                       text="Offer the discount")
                pushed = await _recv(desk)
                assert (pushed["type"], pushed["whisper_id"], pushed["text"]) == (
                    "whisper", whispered["whisper_id"], "Offer the discount")
                assert await _recv(agent) == pushed
                for monitor in (by_sam, by_kim):
                    assert await until(monitor, "whisper") == pushed

                joined = await post(f"{node2}/v1/conversations/x2/barge", sam)
                assert joined["participant"]["id"] == "supervisor:sam"
                assert (await _recv(desk))["type"] == "participant.joined"
                wrote = await post(f"{node1}/v1/conversations/x2/messages", sam,
                                   text="I will take it from here.", message_id="m1")
                said = await _recv(desk)
                assert (said["type"], said["segment_id"]) == ("supervisor.message",
                                                              wrote["segment_id"])
                turn = await until(by_kim, "segment")
                assert (turn["role"], turn["segment_id"]) == ("supervisor",
                                                              wrote["segment_id"])
                again = await post(f"{node2}/v1/conversations/x2/messages", sam,
                                   text="I will take it from here.", message_id="m1")
                assert again["status"] == "duplicate"
                left = await asyncio.to_thread(httpx.delete,
                                               f"{node1}/v1/conversations/x2/barge",
                                               headers=sam)
                assert left.status_code == 200, left.text
                assert (await _recv(desk))["type"] == "participant.left"
                assert (await until(by_sam, "participant.left"))["by"] == "sam"

    asyncio.run(scenario())
    transcript = httpx.get(f"{node2}/v1/transcripts/x2", headers=kim).json()
    assert [t["role"] for t in transcript["turns"]] == ["supervisor"]
    assert [e["type"] for e in transcript["events"]] == [
        "conversation.started", "whisper", "participant.joined", "participant.left"]
