"""The store protocol, restarts, storage faults and bounded queues."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from analytics.fulltext import parse
from contact_center import protocol as p
from contact_center.app import create_app
from contact_center.buses import InMemoryBus, Source
from contact_center.settings import Settings
from contact_center.stores import AlertEventRow, FullTextQuery, SegmentRow, Store, WriteBatch
from contact_center.stores import sqlite as sqlite_store
from contact_center.stores.postgres import IDLE_IN_TRANSACTION_MS
from contact_center.stores.sqlite import SQLiteStore
from monitoring.hub import Hub
from tests.conftest import (
    ANGRY,
    Connector,
    Stored,
    Users,
    auth,
    make_store,
    pipeline_of,
    run,
    runner_of,
)

META = {"id": "c1", "channel": "chat", "queue": "q", "agent_id": "a", "customer": {},
        "recording": "all", "attributes": {}, "status": "live", "started_at": 1.0,
        "ended_at": None, "updated_at": 1.0}


def segment(sid: str, seq: int) -> SegmentRow:
    return SegmentRow("c1", sid, seq, "customer", "cust", f"text {sid}",
                      {"neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": 0.0}, None, None, 2.0)


def test_store_writes_are_idempotent_and_load_back(backend: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        store: Store = make_store(backend, tmp_path)
        await store.open()
        try:
            batch = WriteBatch(conversations={"c1": (META, {"next_seq": 3})},
                               segments=[segment("s1", 1), segment("s2", 2)])
            await store.write(batch)
            await store.write(batch)  # a replayed batch changes nothing
            [loaded] = await store.load_conversations(None)
            assert loaded.applied == {"s1", "s2"}
            assert loaded.state == {"next_seq": 3}
            assert [t["segment_id"] for t in loaded.recent] == ["s1", "s2"]
            ended = META | {"status": "ended", "ended_at": 3.0}
            await store.write(WriteBatch(conversations={"c1": (ended, {})}))
            assert await store.load_conversations(None) == []
            [again] = await store.load_conversations(["c1", "missing"])
            assert again.meta["status"] == "ended"
            assert (await store.get_conversation("c1"))["turns"][1]["text"] == "text s2"
        finally:
            await store.close()

    run(scenario())


def test_restart_resumes_live_state(tmp_path: Path, users: Users, connector_token: str,
                                    backend: str) -> None:
    settings = Settings(database=tmp_path / "cc.db")
    manager = auth(users.token("CallCenterManager"))
    admin = auth(users.token("Admin"))
    with TestClient(create_app(settings, make_store(backend, tmp_path))) as client:
        client.put("/v1/rules", headers=admin, json={"rules": [
            {"id": "kw", "kind": "keyword", "phrases": ["refund"]}]})
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            c = Connector(ws)
            c.start("live-1")
            c.say("live-1", "s1", ANGRY[0])
            c.say("live-1", "s2", "I want a refund")
        before = client.get("/v1/live/conversations/live-1", headers=manager).json()

    with TestClient(create_app(settings, make_store(backend, tmp_path))) as client:
        after = client.get("/v1/live/conversations/live-1", headers=manager).json()
        assert after["counts"] == before["counts"] and after["alerts"] == 1
        assert after["alert"] == before["alert"] and after["alert"]["status"] == "open"
        assert after["sentiment"]["window"] == before["sentiment"]["window"]
        assert [r["id"] for r in client.get("/v1/rules", headers=admin).json()["rules"]] == ["kw"]
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            c = Connector(ws)
            assert c.say("live-1", "s1", ANGRY[0])["status"] == "duplicate"
            assert c.say("live-1", "s3", "refund now")["status"] == "accepted"
        with client.websocket_connect("/v1/conversations/live-1/monitor",
                                      headers=manager) as ws:
            catch_up = ws.receive_json()
            assert [t["segment_id"] for t in catch_up["transcript"]] == ["s1", "s2", "s3"]
        # The keyword rule's cooldown survived the restart: still one hit (hits would join
        # the one open alert: count them).
        assert client.get("/v1/live/conversations/live-1", headers=manager).json()["alerts"] == 1
        (alert,) = client.get("/v1/alerts", headers=manager,
                              params={"conversation_id": "live-1"}).json()["alerts"]
        assert [h["rule_id"] for h in alert["hits"]] == ["kw"] and alert["hit_count"] == 1


class HeldRestore:
    """A real store whose first read of live conversations by `Pipeline.restore` (a list
    of ids; events' loads pass a set) waits, once read, until ``release`` is set."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.read, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def load_conversations(self, ids=None):  # type: ignore[no-untyped-def]
        loaded = await self._store.load_conversations(ids)
        if isinstance(ids, list) and not self.read.is_set():
            self.read.set()
            await asyncio.to_thread(self.release.wait, 30)
        return loaded


class FirstListingFails:
    """A real store whose first listing of the live conversations fails."""

    def __init__(self, store: Store) -> None:
        self._store, self.failed = store, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def live_conversation_ids(self) -> list[str]:
        if not self.failed:
            self.failed = True
            raise OSError("database is locked")
        return await self._store.live_conversation_ids()  # type: ignore[no-any-return]


def test_the_restore_retries_a_failed_read(tmp_path: Path, users: Users,
                                           connector_token: str, backend: str) -> None:
    """A read that fails at start is retried: the live views answer, with everything."""
    settings = Settings(database=tmp_path / "cc.db")
    with (TestClient(create_app(settings, make_store(backend, tmp_path))) as client,
          client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws):
        Connector(ws).start("r1")
    store = FirstListingFails(make_store(backend, tmp_path))
    with TestClient(create_app(settings, store)) as client:  # type: ignore[arg-type]
        live = client.get("/v1/live/conversations",
                          headers=auth(users.token("CallCenterManager"))).json()
        assert store.failed and [c["id"] for c in live["conversations"]] == ["r1"]


def test_events_are_taken_while_live_conversations_are_restored(
        tmp_path: Path, users: Users, connector_token: str, backend: str) -> None:
    """After a restart the service takes events at once: a conversation not restored yet
    is loaded by its event, and the restore, whose copy is older, leaves it alone. The
    live views answer once every live conversation is back."""
    settings = Settings(database=tmp_path / "cc.db")
    manager = auth(users.token("CallCenterManager"))
    with (TestClient(create_app(settings, make_store(backend, tmp_path))) as client,
          client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws):
        c = Connector(ws)
        for cid in ("live-1", "live-2", "live-3"):
            c.start(cid)
            c.say(cid, f"{cid}-s1", ANGRY[0])

    store = HeldRestore(make_store(backend, tmp_path))
    with TestClient(create_app(settings, store)) as client:  # type: ignore[arg-type]
        assert store.read.wait(30), "the restore read the live conversations"
        assert client.get("/readyz").status_code == 200
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            c = Connector(ws)
            assert c.say("live-1", "live-1-s1", ANGRY[0])["status"] == "duplicate"
            assert c.say("live-1", "live-1-s2", ANGRY[1])["status"] == "accepted"
        assert not pipeline_of(client).restored.is_set()
        store.release.set()
        live = client.get("/v1/live/conversations", headers=manager).json()["conversations"]
        assert pipeline_of(client).restored.is_set()
        assert sorted(row["id"] for row in live) == ["live-1", "live-2", "live-3"]
        counts = {row["id"]: row["counts"]["customer"] for row in live}
        assert counts == {"live-1": 2, "live-2": 1, "live-3": 1}
        with client.websocket_connect("/v1/conversations/live-1/monitor",
                                      headers=manager) as ws:
            catch_up = ws.receive_json()
            turns = [t["segment_id"] for t in catch_up["transcript"] if t["type"] == "segment"]
            assert turns == ["live-1-s1", "live-1-s2"]


class FlakyStore:
    """A real store whose next write (or load) fails, as a full disk or a lost database
    connection would; everything else goes to the real store."""

    fail_next = False
    fail_next_load = False
    ping_fails = False
    fail_next_save = False

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(self, batch: WriteBatch) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        await self._store.write(batch)

    async def save_rules(self, document: dict[str, Any]) -> None:
        if self.fail_next_save:
            self.fail_next_save = False
            raise OSError("disk full")
        await self._store.save_rules(document)

    async def ping(self) -> None:
        if self.ping_fails:
            raise OSError("connection refused")
        await self._store.ping()

    async def load_conversations(self, ids=None):  # type: ignore[no-untyped-def]
        if self.fail_next_load:
            self.fail_next_load = False
            raise OSError("I/O error")
        return await self._store.load_conversations(ids)


def test_failed_commit_is_not_acked_and_a_retry_applies_once(tmp_path: Path, users: Users,
                                                             connector_token: str,
                                                             backend: str) -> None:
    store = FlakyStore(make_store(backend, tmp_path))
    manager = auth(users.token("CallCenterManager"))
    ingest = auth(connector_token)
    with TestClient(create_app(Settings(database=tmp_path / "cc.db"), store)) as client:
        pipeline = pipeline_of(client)
        with client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            c = Connector(ws)
            c.start("f1")
            assert c.say("f1", "s1", "first")["status"] == "accepted"
            store.fail_next = True
            failed = c.say("f1", "s2", ANGRY[0])
            assert failed["code"] == "unavailable" and failed["segment_id"] == "s2"
            # The connection closes: resend from the first event without an ack.
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1011
        # The conversation is still live for supervisors, from what was committed.
        live = client.get("/v1/live/conversations/f1", headers=manager).json()
        assert live["counts"]["customer"] == 1

        with client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            c = Connector(ws)
            assert c.say("f1", "s2", ANGRY[0])["status"] == "accepted"
            assert c.say("f1", "s2", ANGRY[0])["status"] == "duplicate"
            assert pipeline.conversations["f1"].counts["customer"] == 2

        store.fail_next_load = True  # looking up a conversation not in memory fails
        with client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            assert Connector(ws).say("f9", "s1", "hi")["code"] == "unavailable"
        with client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            assert Connector(ws).say("f9", "s1", "hi")["code"] == "unknown_conversation"

        # A monitor that may have seen uncommitted state is told to start over.
        with client.websocket_connect("/v1/conversations/f1/monitor", headers=manager) as mon, \
                client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            assert mon.receive_json()["type"] == "catch_up"
            mon.receive_json()
            store.fail_next = True
            assert Connector(ws).say("f1", "s3", "lost")["code"] == "unavailable"
            assert mon.receive_json()["type"] == "resync"
            with pytest.raises(WebSocketDisconnect) as closed:
                mon.receive_json()
            assert closed.value.code == 1012
        with client.websocket_connect("/v1/conversations/f1/monitor", headers=manager) as mon:
            assert [t["segment_id"] for t in mon.receive_json()["transcript"]] == ["s1", "s2"]


class HeldWrites:
    """A real store whose writes, while ``hold`` is set, wait for ``release`` (and then
    fail, with ``fail``); with ``one_at_a_time``, a release lets one write through."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.hold, self.release, self.fail = threading.Event(), threading.Event(), False
        self.waiting = threading.Event()  # a write is held
        self.one_at_a_time = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write(self, batch: WriteBatch) -> None:
        if self.hold.is_set():
            self.waiting.set()
            await asyncio.to_thread(self.release.wait, 30)
            if self.one_at_a_time:
                self.release.clear()
            if self.fail:
                self.fail = False
                raise OSError("disk full")
        await self._store.write(batch)


@contextlib.contextmanager
def held_ingest(store: HeldWrites, settings: Settings,
                token: str) -> Iterator[tuple[TestClient, Any, Any, Connector]]:
    """A service on ``store`` and an ingest socket: the client, the socket, the pipeline
    and a `Connector` on the socket."""
    with (TestClient(create_app(settings, store)) as client,  # type: ignore[arg-type]
          client.websocket_connect("/v1/ingest", headers=auth(token)) as ws):
        yield client, ws, pipeline_of(client), Connector(ws)


def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_batch_is_applied_while_the_one_before_is_written_and_answered_after_it(
        tmp_path: Path, users: Users, connector_token: str, backend: str) -> None:
    """The next batch is applied while a batch is being written; both are answered in
    order once written. A monitor that joins meanwhile catches up to what was published
    and gets the rest live: nothing numbered before it is skipped."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", batch_size=1)
    manager = auth(users.token("CallCenterManager"))
    with held_ingest(store, settings, connector_token) as (client, ws, pipeline, c):
        c.start("p1")
        answered = pipeline.processed
        store.hold.set()
        for sid in ("s1", "s2"):
            ws.send_json({"type": "segment", "conversation_id": "p1", "segment_id": sid,
                          "role": "customer", "text": ANGRY[0]})
        assert store.waiting.wait(10)
        _until(lambda: pipeline.conversations["p1"].counts["customer"] == 2)  # s2 applied
        assert pipeline.processed == answered  # ... and nothing answered
        with client.websocket_connect("/v1/conversations/p1/monitor", headers=manager) as mon:
            catch_up = mon.receive_json()
            assert [t for t in catch_up["transcript"] if t["type"] == "segment"] == []
            assert mon.receive_json()["type"] == "live"
            store.hold.clear()
            store.release.set()
            assert [ws.receive_json()["segment_id"] for _ in range(2)] == ["s1", "s2"]
            assert c.say("p1", "s3", "thanks")["status"] == "accepted"
            live: list[str] = []
            while live[-1:] != ["s3"]:  # (alerts come between them)
                message = mon.receive_json()
                if message["type"] == "segment":
                    live.append(message["segment_id"])
            assert live == ["s1", "s2", "s3"]
        assert pipeline.processed == answered + 3


@pytest.mark.parametrize("written", [True, False])
def test_a_conversation_leaves_the_live_views_once_its_end_is_stored(
        tmp_path: Path, users: Users, connector_token: str, backend: str,
        written: bool) -> None:
    """While its end is being written it is listed as it stood (live); then it is gone
    and its transcript holds the end, or, if the write failed, it is still live."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", batch_size=1)
    manager, analyst = auth(users.token("CallCenterManager")), auth(users.token("Analyst"))

    def listed() -> list[tuple[str, str]]:
        answer = client.get("/v1/live/conversations", headers=manager).json()
        return [(c["id"], c["status"]) for c in answer["conversations"]]

    def ends() -> list[str]:
        events = client.get("/v1/transcripts/e1", headers=analyst).json()["events"]
        return [e["type"] for e in events if e["type"] == "conversation.ended"]

    with held_ingest(store, settings, connector_token) as (client, ws, pipeline, c):
        c.start("e1")
        store.hold.set()
        store.fail = not written
        ws.send_json({"type": "conversation.ended", "conversation_id": "e1"})
        assert store.waiting.wait(10)
        _until(lambda: "e1" not in pipeline.conversations)  # applied: ended in memory
        assert listed() == [("e1", "live")]
        one = client.get("/v1/live/conversations/e1", headers=manager)
        assert one.status_code == 200 and one.json()["status"] == "live"
        assert ends() == []
        store.hold.clear()
        store.release.set()
        reply = ws.receive_json()
        if written:
            assert reply["status"] == "accepted"
            assert listed() == [] and ends() == ["conversation.ended"]
            gone = client.get("/v1/live/conversations/e1", headers=manager)
            assert gone.status_code == 404
        else:
            assert reply["code"] == "unavailable"
            _until(lambda: "e1" in pipeline.conversations)  # reloaded from the store
            assert listed() == [("e1", "live")] and ends() == []
        assert pipeline.ending == {}


def test_a_conversation_ended_after_a_turn_stays_listed_until_the_end_itself_is_stored(
        tmp_path: Path, users: Users, connector_token: str, backend: str) -> None:
    """A turn's batch is written while the end's batch is applied: that write, which
    touched the conversation, does not take it off the live list; the end's does."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", batch_size=1)
    manager, analyst = auth(users.token("CallCenterManager")), auth(users.token("Analyst"))
    with held_ingest(store, settings, connector_token) as (client, ws, pipeline, c):
        c.start("e2")
        store.hold.set()
        store.one_at_a_time = True
        ws.send_json({"type": "segment", "conversation_id": "e2", "segment_id": "s1",
                      "role": "customer", "text": "hello"})
        assert store.waiting.wait(10)
        ws.send_json({"type": "conversation.ended", "conversation_id": "e2"})
        _until(lambda: "e2" not in pipeline.conversations)  # the end applied, not written
        store.release.set()  # the turn's write alone
        assert ws.receive_json()["segment_id"] == "s1"
        live = client.get("/v1/live/conversations", headers=manager).json()
        assert [(s["id"], s["status"]) for s in live["conversations"]] == [("e2", "live")]
        events = client.get("/v1/transcripts/e2", headers=analyst).json()["events"]
        assert "conversation.ended" not in [e["type"] for e in events]
        store.release.set()  # the end's write
        assert ws.receive_json()["status"] == "accepted"
        live = client.get("/v1/live/conversations", headers=manager).json()
        assert live["conversations"] == []
        events = client.get("/v1/transcripts/e2", headers=analyst).json()["events"]
        assert "conversation.ended" in [e["type"] for e in events]


@pytest.mark.parametrize("replies", ["single", "batched"])
def test_when_a_write_fails_the_batch_applied_after_it_is_refused_too(
        tmp_path: Path, users: Users, connector_token: str, backend: str,
        replies: str) -> None:
    """It was applied on top of what the failure undid: refused, and memory is back in
    line with the store; the resend applies each segment once. Batched, the refusal is
    the last reply of its frame: s2's is never sent."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", batch_size=1)
    ingest = auth(connector_token)
    with TestClient(create_app(settings, store)) as client:  # type: ignore[arg-type]
        pipeline = pipeline_of(client)
        with client.websocket_connect(f"/v1/ingest?replies={replies}", headers=ingest) as ws:
            c = Connector(ws)
            c.start("p2")
            store.hold.set()
            store.fail = True
            for sid in ("s1", "s2"):
                ws.send_json({"type": "segment", "conversation_id": "p2", "segment_id": sid,
                              "role": "customer", "text": ANGRY[0]})
            assert store.waiting.wait(10)
            _until(lambda: pipeline.conversations["p2"].counts["customer"] == 2)
            store.hold.clear()
            store.release.set()
            frame = ws.receive_json()
            refused = frame["replies"] if replies == "batched" else [frame]
            assert [(r["code"], r["segment_id"]) for r in refused] == [("unavailable", "s1")]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1011
        _until(lambda: "p2" in pipeline.conversations)  # reloaded from the store
        assert pipeline.conversations["p2"].counts["customer"] == 0
        with client.websocket_connect("/v1/ingest", headers=ingest) as ws:
            c = Connector(ws)
            assert [c.say("p2", sid, ANGRY[0])["status"] for sid in ("s1", "s2")] == [
                "accepted", "accepted"]
        assert pipeline.conversations["p2"].counts["customer"] == 2
        stored = client.portal.call(store.get_conversation, "p2")  # type: ignore[union-attr]
        assert [t["segment_id"] for t in stored["turns"]] == ["s1", "s2"]


def test_nothing_after_a_refused_event_is_applied_before_the_resend(
        tmp_path: Path, connector_token: str, backend: str, stored: Stored) -> None:
    """Events already sent behind a refused one are refused too, so a resend from the
    gap applies everything in order (the end does not overtake the lost segment)."""
    store = FlakyStore(make_store(backend, tmp_path))
    with TestClient(create_app(Settings(database=tmp_path / "cc.db", batch_size=1),
                               store)) as client:
        h = auth(connector_token)
        client.post("/v1/conversations", headers=h, json={"id": "g1"})
        store.fail_next = True
        results = client.post("/v1/events", headers=h, json={"events": [
            {"type": "segment", "conversation_id": "g1", "segment_id": "s1",
             "role": "customer", "text": "one"},
            {"type": "conversation.ended", "conversation_id": "g1"}]}).json()["results"]
        assert [r["code"] for r in results] == ["unavailable", "unavailable"]
        again = client.post("/v1/events", headers=h, json={"events": [
            {"type": "segment", "conversation_id": "g1", "segment_id": "s1",
             "role": "customer", "text": "one"},
            {"type": "conversation.ended", "conversation_id": "g1"}]}).json()["results"]
        assert [r["status"] for r in again] == ["accepted", "accepted"]
    assert stored.rows("SELECT segment_id FROM segments") == [("s1",)]
    assert stored.rows("SELECT status FROM conversations") == [("ended",)]


def test_health_reports_a_stopped_pipeline(client: TestClient, connector_token: str) -> None:
    client.post("/v1/conversations", headers=auth(connector_token), json={"id": "h"})
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["live_conversations"] == 1
    assert client.get("/livez").json() == {"status": "ok"}
    assert health["events_processed"] == 1 and health["batches_committed"] == 1
    runner = runner_of(client)
    runner.cancel()
    deadline = time.monotonic() + 5
    while not runner.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = client.get("/healthz")
    assert stopped.status_code == 503 and stopped.json()["status"] == "pipeline stopped"
    assert client.get("/readyz").json() == stopped.json()
    # Restarting would help: liveness fails too.
    assert client.get("/livez").status_code == 503


def test_full_bus_answers_overloaded() -> None:
    async def scenario() -> None:
        bus = InMemoryBus(maxsize=1)
        event = p.ConversationStarted(conversation=p.ConversationInfo(id="x"), ref="r")
        await bus.submit(event, Source(), max_wait=0.05)
        with pytest.raises(p.ProtocolError) as exc:
            await bus.submit(event, Source(), max_wait=0.05)
        assert exc.value.code == p.ErrorCode.OVERLOADED and exc.value.ref == "r"
        assert len(await bus.take(10)) == 1

    run(scenario())


def test_slow_subscriber_is_cut_off_without_slowing_others() -> None:
    async def scenario() -> None:
        hub = Hub(queue_size=3)
        slow = hub.subscribe("t")
        fast = hub.subscribe("t")
        received = []
        for i in range(10):
            hub.publish("t", {"type": "n", "i": i})
            received.append(await fast.next())
        assert [m.type for m in received] == ["n"] * 10
        assert slow.overflowed and await slow.next() is None
        assert slow.queue.qsize() == 0
        hub.unsubscribe(slow)
        hub.unsubscribe(fast)
        assert hub.subscribers("t") == 0

    run(scenario())


def test_alert_filter_applies_per_subscriber() -> None:
    async def scenario() -> None:
        hub = Hub()
        ann = hub.subscribe("alerts", accept=lambda meta: meta["agent_id"] == "ann")
        hub.publish("alerts", {"type": "alert"}, {"agent_id": "bob"})
        hub.publish("alerts", {"type": "alert", "n": 2}, {"agent_id": "ann"})
        message = await asyncio.wait_for(ann.next(), 1)
        assert message is not None and '"n":2' in message.text

    run(scenario())


def test_health_says_when_the_database_is_unavailable(tmp_path: Path, backend: str,
                                                      connector_token: str) -> None:
    store = FlakyStore(make_store(backend, tmp_path))
    with TestClient(create_app(Settings(database=tmp_path / "cc.db"), store)) as client:
        healthy = client.get("/healthz")
        assert healthy.status_code == 200
        assert healthy.json()["dependencies"] == {"database": "ok"}
        store.ping_fails = True
        down = client.get("/healthz")
        assert down.status_code == 503
        assert down.json()["status"] == "degraded"
        assert down.json()["dependencies"] == {"database": "unavailable"}
        assert client.get("/readyz").status_code == 503
        # Restarting would not bring the database back: the process is alive.
        assert client.get("/livez").status_code == 200
        store.ping_fails = False
        assert client.get("/healthz").json()["status"] == "ok"


def test_a_rules_change_that_cannot_be_saved_changes_nothing(tmp_path: Path, backend: str,
                                                              users: Users) -> None:
    store = FlakyStore(make_store(backend, tmp_path))
    admin = auth(users.token("Admin"))
    with TestClient(create_app(Settings(database=tmp_path / "cc.db"), store)) as client:
        before = client.get("/v1/rules", headers=admin).json()
        store.fail_next_save = True
        refused = client.patch("/v1/rules/insult", headers=admin, json={"enabled": False})
        assert refused.status_code == 503 and refused.json()["code"] == "unavailable"
        assert client.get("/v1/rules", headers=admin).json() == before


def test_a_full_disk_is_reported_as_such(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself when the disk is full; the error says
    "full", not a second rollback's "no transaction is active"."""
    async def scenario() -> str:
        store = SQLiteStore(tmp_path / "cc.db")
        await store.open()
        try:
            await store._writer.run(lambda db: db.execute(
                "PRAGMA max_page_count = " + str(db.execute(
                    "PRAGMA page_count").fetchone()[0] + 2)))
            meta = {"id": "f", "channel": "chat", "queue": "q", "agent_id": None,
                    "customer": {}, "recording": "all", "attributes": {}, "status": "live",
                    "started_at": 1.0, "ended_at": None, "updated_at": 1.0}
            batch = WriteBatch(conversations={"f": (meta, {})}, segments=[
                SegmentRow("f", f"s{i}", i, "customer", "c", "words " * 500,
                           {"neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": 0.0}, None, None,
                           1.0) for i in range(200)])
            with pytest.raises(sqlite3.OperationalError) as full:
                await store.write(batch)
            return str(full.value)
        finally:
            await store.close()

    assert "full" in run(scenario())


def test_a_pooled_postgres_connection_comes_back_as_it_went_out(
        tmp_path: Path, postgres_database: str) -> None:
    """The pool skips RESET ALL on release (a round trip fewer), so nothing the store runs
    may outlive its transaction: after a batch written (transaction-level advisory locks),
    a search and an export (SET LOCAL timeouts, a cursor) and a partition claimed (SET
    LOCAL lock_timeout), every pooled connection has the server's settings, no lock and
    no transaction."""
    alert = {"id": "a1", "conversation_id": "c1", "status": "open", "version": 1}
    batch = WriteBatch(conversations={"c1": (META, {"next_seq": 1})},
                       segments=[segment("s1", 1)],
                       alert_events=[AlertEventRow(alert, "alert.raised", 2.0)])

    async def scenario() -> list[tuple[Any, ...]]:
        store = make_store("postgres", tmp_path)
        await store.open()
        try:
            await store.write(batch)
            await store.search_turns(FullTextQuery(query=parse("hello")))
            async for _ in store.export_found(FullTextQuery(query=parse("hello")), "turns"):
                pass
            await store.claim_partition(0)  # type: ignore[attr-defined]
            pool = store.pool  # type: ignore[attr-defined]
            held = [await pool.acquire() for _ in range(pool.get_max_size())]
            try:
                return [(await db.fetchval("SHOW statement_timeout"),
                         await db.fetchval("SHOW lock_timeout"),
                         await db.fetchval("SHOW idle_in_transaction_session_timeout"),
                         await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = "
                                           "'advisory' AND pid = pg_backend_pid()"),
                         db.is_in_transaction()) for db in held]
            finally:
                for db in held:
                    await pool.release(db)
        finally:
            await store.close()

    as_set = f"{IDLE_IN_TRANSACTION_MS // 1000}s"  # (the store's, for every connection)
    assert set(run(scenario())) == {("0", "0", as_set, 0, False)}


def test_a_batch_is_written_in_a_few_statements_a_table_and_reads_back_exactly(
        tmp_path: Path) -> None:
    """The SQLite writer sends a table's rows as multi-row statements of a power of two
    rows, at most 256 (its thread gives up the interpreter lock once a statement, not
    once a row): numbers, text and the alert events' numbering come back as written."""
    texts = ["plain", "é😀\u2028 \"quoted\" \\ back", "x" * 5000, "٣٤٥ digits"]
    alert = {"id": "a1", "conversation_id": "c0", "rule_id": "r", "rule_version": 1,
             "rule_name": "R", "kind": "keyword", "severity": "high", "reason": "why",
             "first_raised_at": 1733530000.123456, "agent_id": None, "queue": "q",
             "status": "open", "version": 1, "last_hit_at": 1733530000.5, "assignee": None,
             "rule_ids": ["r"]}
    batch = WriteBatch(
        conversations={f"c{i}": (META | {"id": f"c{i}"}, {"next_seq": i, "f": 0.1 * i})
                       for i in range(300)},
        segments=[SegmentRow(f"c{i % 300}", f"s{i}", i, "customer", "cust",
                             texts[i % len(texts)],
                             {"neg": 0.1 * i, "neu": 1 / 3, "pos": 1e-7, "compound": -0.9999},
                             1733530000.0 + i / 7, None, 1733530000.123456789 + i)
                  for i in range(600)],
        alerts={"a1": alert},
        alert_events=[AlertEventRow(alert | {"version": n}, f"t{n}", 2.0 + n)
                      for n in range(5)])

    async def scenario() -> tuple[list[str], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        store = SQLiteStore(tmp_path / "cc.db")
        await store.open()
        try:
            statements: list[str] = []

            class Counted:
                """The writer's connection, counting what it is asked to run."""

                def __init__(self, db: sqlite3.Connection) -> None:
                    self.db, self.in_transaction = db, False

                def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                    statements.append(sql)
                    cursor = self.db.execute(sql, *args)
                    self.in_transaction = self.db.in_transaction
                    return cursor

                def executemany(self, sql: str, rows: list[Any]) -> sqlite3.Cursor:
                    statements.extend([sql] * len(rows))  # (a step, and the lock, a row)
                    return self.db.executemany(sql, rows)

                def getlimit(self, category: int) -> int:
                    return self.db.getlimit(category)

            await store._writer.run(lambda db: sqlite_store._write(Counted(db), batch))
            segments = await store._writer.run(lambda db: [tuple(r) for r in db.execute(
                "SELECT conversation_id, segment_id, seq, text, neg, neu, pos, compound, "
                "started_at, received_at FROM segments ORDER BY seq")])
            events = await store._writer.run(lambda db: [tuple(r) for r in db.execute(
                "SELECT id, type, at FROM alert_events ORDER BY id")])
            return statements, segments, events
        finally:
            await store.close()

    statements, segments, events = run(scenario())
    # BEGIN; 300 conversations: 256 + 32 + 8 + 4; 600 segments: 256 + 256 + 64 + 16 + 8;
    # 1 alert; 5 alert events: 4 + 1; COMMIT
    assert [s.split(" (")[0] for s in statements] == [
        "BEGIN IMMEDIATE", *["INSERT INTO conversations"] * 4, *["INSERT INTO segments"] * 5,
        "INSERT INTO alerts", *["INSERT INTO alert_events"] * 2, "COMMIT"]
    assert [s.count("), (") + 1 for s in statements if s.startswith("INSERT")] == [
        256, 32, 8, 4, 256, 256, 64, 16, 8, 1, 4, 1]
    assert segments == [(s.conversation_id, s.segment_id, s.seq, s.text, s.scores["neg"],
                         s.scores["neu"], s.scores["pos"], s.scores["compound"],
                         s.started_at, s.received_at) for s in batch.segments]
    assert events == [(e.event_id, e.type, e.at) for e in batch.alert_events]
    assert [e.event_id for e in batch.alert_events] == [1, 2, 3, 4, 5]


def test_the_commit_window_holds_back_neither_answers_nor_one_source_turn_by_turn(
        tmp_path: Path, connector_token: str, backend: str) -> None:
    """After a batch of several events, the next gathers until the window after its write
    started, that write answered as soon as it is done; one source sending turn by turn,
    each after its answer, is never held for the window."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", commit_window_ms=300)
    with held_ingest(store, settings, connector_token) as (_, ws, pipeline, c):
        window = 3.0  # (longer than the setting allows: far above any noise)

        def say(sid: str) -> None:
            ws.send_json({"type": "segment", "conversation_id": "w2", "segment_id": sid,
                          "role": "customer", "text": "hello"})

        pipeline.commit_window = window
        sent = time.monotonic()
        c.start("w2")
        for n in range(1, 4):  # (each waits for its answer)
            assert c.say("w2", f"t{n}", "hello")["status"] == "accepted"
        assert time.monotonic() - sent < window  # four round trips, none held

        pipeline.commit_window = 0.3  # s2 and s3 are taken behind s1's held write ...
        before = pipeline.batches
        store.hold.set()
        say("s1")
        assert store.waiting.wait(10)
        say("s2")
        say("s3")
        _until(lambda: pipeline.conversations["w2"].counts["customer"] == 6)
        pipeline.commit_window = window  # ... as one batch; its write starts once s1's ends
        store.hold.clear()
        store.release.set()
        released = time.monotonic()
        assert [ws.receive_json()["segment_id"] for _ in range(3)] == ["s1", "s2", "s3"]
        assert time.monotonic() - released < window / 2  # answered, not held
        say("s4")  # (within the window after s2 and s3's write started)
        time.sleep(0.2)
        say("s5")
        assert [ws.receive_json()["segment_id"] for _ in range(2)] == ["s4", "s5"]
        assert pipeline.batches == before + 3  # s1; s2 and s3; s4 and s5 together


def test_a_full_batch_is_taken_without_waiting_out_the_commit_window(
        tmp_path: Path, connector_token: str, backend: str) -> None:
    """Whether a write is in flight or done, a full batch waiting ends the window."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", batch_size=3)
    with held_ingest(store, settings, connector_token) as (_, ws, pipeline, c):
        c.start("w3")
        pipeline.commit_window = 30.0  # (far longer than the test may take)
        before, started = pipeline.batches, time.monotonic()

        def say(*sids: str) -> None:
            for sid in sids:
                ws.send_json({"type": "segment", "conversation_id": "w3", "segment_id": sid,
                              "role": "customer", "text": "hello"})

        store.hold.set()
        say("s1")
        assert store.waiting.wait(10)  # s1's write is in flight ...
        say("s2", "s3", "s4")  # ... and a full batch is taken behind it
        _until(lambda: pipeline.conversations["w3"].counts["customer"] == 4)
        store.hold.clear()
        store.release.set()
        assert [ws.receive_json()["segment_id"] for _ in range(4)] == ["s1", "s2", "s3", "s4"]
        say("s5", "s6", "s7")  # (the window after s2 to s4's write has 30 s to run)
        assert [ws.receive_json()["segment_id"] for _ in range(3)] == ["s5", "s6", "s7"]
        assert time.monotonic() - started < 15
        assert pipeline.batches == before + 3


def test_the_next_batch_gathers_behind_a_write_in_flight_for_the_commit_window(
        tmp_path: Path, connector_token: str, backend: str) -> None:
    """With a commit window, what arrives while a write is in flight waits for the
    window (here longer than the sends take) and is then applied as one batch."""
    store = HeldWrites(make_store(backend, tmp_path))
    settings = Settings(database=tmp_path / "cc.db", commit_window_ms=300)
    with held_ingest(store, settings, connector_token) as (_, ws, pipeline, c):
        c.start("w1")
        before = pipeline.batches
        store.hold.set()

        def say(sid: str) -> None:
            ws.send_json({"type": "segment", "conversation_id": "w1", "segment_id": sid,
                          "role": "customer", "text": "hello"})

        say("s1")
        assert store.waiting.wait(10)  # s1's batch is being written
        for n in range(2, 6):
            say(f"s{n}")
        _until(lambda: pipeline.conversations["w1"].counts["customer"] == 5)
        store.hold.clear()
        store.release.set()
        assert [ws.receive_json()["segment_id"] for _ in range(5)] == [
            "s1", "s2", "s3", "s4", "s5"]
        assert pipeline.batches == before + 2  # s1; then s2 to s5 together
