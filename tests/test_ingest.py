"""The ingest socket and REST routes: acks, every error code, duplicates, ordering."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.scoring import support_scorer
from contact_center.api import ingest as ingest_api
from contact_center.app import create_app
from contact_center.conversation import Conversation
from contact_center.settings import Settings
from tests.conftest import (
    ANGRY,
    Connector,
    Stored,
    Users,
    auth,
    make_store,
    pipeline_of,
    refused,
)


def test_hello_then_ack_with_scores(ingest: Connector) -> None:
    assert ingest.hello["type"] == "hello" and ingest.hello["protocol"] == "cc.v1"
    ack = ingest.start("c1")
    assert ack == {"type": "ack", "event": "conversation.started", "status": "accepted",
                   "conversation_id": "c1"}
    reply = ingest.say("c1", "s1", ANGRY[0], ref="r-7")
    assert reply["type"] == "ack" and reply["status"] == "accepted" and reply["ref"] == "r-7"
    # As the service scores by default: VADER with the support overlay (docs/rules.md).
    assert reply["scores"] == support_scorer().score(ANGRY[0]).as_dict()
    assert reply["scores"]["compound"] < -0.5


def test_every_error_code_keeps_the_socket_open(ingest: Connector, settings) -> None:
    assert ingest.start("c1")["status"] == "accepted"
    ingest.ws.send_text("{not json")
    assert ingest.ws.receive_json()["code"] == "malformed_json"

    bad = ingest.send({"type": "segment", "conversation_id": "c1", "segment_id": "s",
                       "role": "robot", "text": "hi", "ref": "x1"})
    assert bad["code"] == "validation_error" and bad["ref"] == "x1"
    assert bad["details"][0]["loc"][-1] == "role"

    assert ingest.send({"type": "nonsense"})["code"] == "validation_error"
    assert ingest.start("c9", attributes={"crm": "x" * 1025})["code"] == "validation_error"
    assert ingest.send({"type": "segment"})["code"] == "validation_error"
    too_long = ingest.say("c1", "s2", "x" * 8001)
    assert too_long["code"] == "validation_error" and "text" in too_long["message"]

    huge = json.dumps({"type": "segment", "pad": "y" * settings.max_message_bytes})
    ingest.ws.send_text(huge)
    assert ingest.ws.receive_json()["code"] == "message_too_large"

    unknown = ingest.say("nope", "s1", "hello")
    assert unknown["code"] == "unknown_conversation" and unknown["conversation_id"] == "nope"

    assert ingest.end("c1")["status"] == "accepted"
    assert ingest.say("c1", "s9", "hello again")["code"] == "conversation_ended"
    assert ingest.end("c1")["status"] == "duplicate"

    # The socket still works after all of that.
    assert ingest.start("c2")["status"] == "accepted"
    assert ingest.say("c2", "s1", "fine thanks")["status"] == "accepted"


def test_binary_frames_carry_json_too(ingest: Connector) -> None:
    ingest.ws.send_bytes(json.dumps({"type": "conversation.started",
                                     "conversation": {"id": "b1"}}).encode())
    assert ingest.ws.receive_json()["status"] == "accepted"


def test_duplicate_segment_has_no_second_effect(ingest: Connector, stored: Stored) -> None:
    ingest.start("c1")
    first = ingest.say("c1", "s1", ANGRY[0])
    again = ingest.say("c1", "s1", ANGRY[0])
    assert first["status"] == "accepted" and again["status"] == "duplicate"
    assert ingest.start("c1")["status"] == "duplicate"
    assert stored.rows("SELECT count(*) FROM segments") == [(1,)]
    state = json.loads(stored.rows("SELECT state FROM conversations")[0][0])
    assert state["counts"]["customer"] == 1
    assert state["rolling"]["values"] == [first["scores"]["compound"]]


def test_partials_are_not_scored_and_a_late_partial_is_stale(ingest: Connector,
                                                             stored: Stored) -> None:
    ingest.start("v1", channel="voice")
    partial = ingest.say("v1", "u1", "I want to", final=False)
    assert partial["status"] == "accepted" and "scores" not in partial
    final = ingest.say("v1", "u1", "I want to cancel", final=True)
    assert final["status"] == "accepted" and "scores" in final
    assert ingest.say("v1", "u1", "I want to canc", final=False)["status"] == "stale"
    assert stored.rows("SELECT segment_id, text FROM segments") == [("u1", "I want to cancel")]


def test_out_of_order_final_is_accepted_and_flagged_late(ingest: Connector,
                                                         stored: Stored) -> None:
    ingest.start("c1")
    on_time = ingest.say("c1", "s2", "second", started_at="2026-01-01T10:00:05Z")
    late = ingest.say("c1", "s1", "first", started_at="2026-01-01T10:00:00Z")
    assert on_time["late"] is False and late["late"] is True
    assert stored.rows("SELECT segment_id, seq, late FROM segments ORDER BY started_at") == [
        ("s1", 2, True), ("s2", 1, False)]


def test_other_conversations_carry_on(ingest: Connector) -> None:
    ingest.start("a")
    ingest.start("b")
    ingest.end("a")
    assert ingest.say("a", "s1", "hi")["code"] == "conversation_ended"
    assert ingest.say("b", "s1", "hi")["status"] == "accepted"


def test_pipelined_events_get_replies_in_order(ingest: Connector) -> None:
    ingest.start("p")
    for i in range(50):
        ingest.ws.send_json({"type": "segment", "conversation_id": "p", "segment_id": f"s{i}",
                             "role": "customer", "text": f"message {i}", "ref": str(i)})
    refs = [ingest.ws.receive_json()["ref"] for _ in range(50)]
    assert refs == [str(i) for i in range(50)]


def test_conversation_lifecycle_events(ingest: Connector, client: TestClient,
                                       users) -> None:
    ingest.start("t1", agent_id="bot-1")
    events = [
        {"type": "participant.joined", "conversation_id": "t1",
         "participant": {"id": "sup-9", "role": "agent", "name": "Sam"}},
        {"type": "bot.handover", "conversation_id": "t1", "agent_id": "agent-7"},
        {"type": "conversation.transferred", "conversation_id": "t1", "to_agent_id": "agent-8",
         "to_queue": "retention", "reason": "wants to cancel"},
        {"type": "participant.left", "conversation_id": "t1", "participant_id": "sup-9"},
    ]
    for event in events:
        assert ingest.send(event)["status"] == "accepted"
    summary = client.get("/v1/live/conversations/t1",
                         headers=auth(users.token("CallCenterManager"))).json()
    assert summary["agent_id"] == "agent-8" and summary["queue"] == "retention"
    assert summary["transfers"] == 1
    assert {p["id"] for p in summary["participants"]} >= {"agent-7", "agent-8"}
    assert "sup-9" not in {p["id"] for p in summary["participants"]}


# -- REST ---------------------------------------------------------------------------------


def test_rest_create_conversation_like_drift(client: TestClient, connector_token: str) -> None:
    created = client.post("/v1/conversations", headers=auth(connector_token),
                          json={"queue": "sales", "agent_id": "a1"})
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "accepted" and len(body["id"]) == 32
    assert body["monitor_url"] == f"/v1/conversations/{body['id']}/monitor"
    again = client.post("/v1/conversations", headers=auth(connector_token),
                        json={"id": body["id"]})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_rest_segment_batch_results_in_order(client: TestClient, connector_token: str) -> None:
    h = auth(connector_token)
    client.post("/v1/conversations", headers=h, json={"id": "r1"})
    segments = [{"segment_id": "1", "role": "customer", "text": ANGRY[0]},
                {"segment_id": "1", "role": "customer", "text": ANGRY[0]},
                {"segment_id": "2", "role": "agent", "text": "Sorry to hear that."}]
    r = client.post("/v1/conversations/r1/segments", headers=h, json={"segments": segments})
    assert r.status_code == 200
    assert [x["status"] for x in r.json()["results"]] == ["accepted", "duplicate", "accepted"]

    missing = client.post("/v1/conversations/zz/segments", headers=h,
                          json={"segments": segments[:1]})
    assert missing.status_code == 404
    assert missing.json()["results"][0]["code"] == "unknown_conversation"

    huge = client.post("/v1/events", headers={**h, "Content-Type": "application/json"},
                       content=b" " * (16 * 1024 * 1024 + 1))
    assert huge.status_code == 413 and huge.json()["code"] == "message_too_large"
    chunked = client.post("/v1/events", headers={**h, "Content-Type": "application/json"},
                          content=(b" " * 1024 * 1024 for _ in range(20)))  # no length
    assert chunked.status_code == 413
    anonymous = client.post("/v1/events", headers={"Content-Type": "application/json"},
                            content=(b" " * 1024 * 1024 for _ in range(20)))
    assert anonymous.status_code == 401  # refused before any of it is read

    broken = client.post("/v1/events", headers={**h, "Content-Type": "application/json"},
                         content=b"{nope")
    assert broken.status_code == 422 and broken.json()["code"] == "malformed_json"

    invalid = client.post("/v1/conversations/r1/segments", headers=h,
                          json={"segments": [{"segment_id": "3", "role": "x", "text": "a"}]})
    assert invalid.status_code == 422 and invalid.json()["code"] == "validation_error"


def test_rest_events_batch(client: TestClient, connector_token: str) -> None:
    h = auth(connector_token)
    r = client.post("/v1/events", headers=h, json={"events": [
        {"type": "conversation.started", "conversation": {"id": "e1"}},
        {"type": "segment", "conversation_id": "e1", "segment_id": "1", "role": "customer",
         "text": "hello"},
        {"type": "conversation.ended", "conversation_id": "e1"},
        {"type": "segment", "conversation_id": "e1", "segment_id": "2", "role": "customer",
         "text": "hello?"},
    ]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("status") or x["code"] for x in results] == [
        "accepted", "accepted", "accepted", "conversation_ended"]
    ended = client.post("/v1/conversations/e1/segments", headers=h,
                        json={"segments": [{"segment_id": "3", "role": "agent", "text": "x"}]})
    assert ended.status_code == 409


def test_partials_never_reach_rules_or_rolling_state(ingest: Connector, client: TestClient,
                                                     users) -> None:
    manager = auth(users.token("CallCenterManager"))
    ingest.start("v2", channel="voice")
    for i in range(3):
        ingest.say("v2", f"u{i}", "Get me your supervisor, this is terrible, I hate it!",
                   final=False)
    summary = client.get("/v1/live/conversations/v2", headers=manager).json()
    assert summary["sentiment"]["window"] is None and summary["alerts"] == 0
    assert summary["counts"] == {"customer": 0, "agent": 0, "bot": 0, "supervisor": 0,
                                 "partial": 3}
    assert client.get("/v1/alerts", headers=manager).json()["alerts"] == []


def test_timestamps_without_zone_are_utc_and_absurd_ones_refused(ingest: Connector,
                                                                 stored: Stored) -> None:
    ingest.start("z1")
    bad = ingest.say("z1", "s1", "hi", ended_at="0001-01-01T00:00:00")
    assert bad["code"] == "validation_error" and "1970" in bad["message"]
    ok = ingest.say("z1", "s2", "hi", started_at="2026-01-01T10:00:00")
    assert ok["status"] == "accepted"
    assert stored.rows("SELECT started_at FROM segments") == [(1767261600.0,)]  # 10:00Z


def test_a_retried_segment_after_the_end_is_a_duplicate(ingest: Connector, client: TestClient,
                                                        connector_token: str) -> None:
    ingest.start("d1")
    ingest.say("d1", "last", "thanks, bye")
    ingest.end("d1")
    assert ingest.say("d1", "last", "thanks, bye")["status"] == "duplicate"
    assert ingest.say("d1", "new", "one more thing")["code"] == "conversation_ended"
    # Also once memory has forgotten it (as after a restart): the store still knows.
    pipeline = pipeline_of(client)
    pipeline.applier._ended.clear()
    pipeline.applier._ended_applied.clear()
    assert ingest.say("d1", "last", "thanks, bye")["status"] == "duplicate"


def test_one_failing_conversation_does_not_fail_its_batch_neighbours(
        client: TestClient, connector_token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here injected) applying one conversation's event fails that conversation's
    events in the batch, not the other conversations'."""
    original = Conversation.add_final

    def add_final(self: Conversation, segment, scores, now):  # type: ignore[no-untyped-def]
        if segment.text == "explode":
            raise RuntimeError("injected bug")
        return original(self, segment, scores, now)

    monkeypatch.setattr(Conversation, "add_final", add_final)
    h = auth(connector_token)

    def seg(cid: str, sid: str, text: str) -> dict:
        return {"type": "segment", "conversation_id": cid, "segment_id": sid,
                "role": "customer", "text": text}

    results = client.post("/v1/events", headers=h, json={"events": [
        {"type": "conversation.started", "conversation": {"id": "good"}},
        {"type": "conversation.started", "conversation": {"id": "bad"}},
        seg("good", "1", "fine"), seg("bad", "1", "fine"), seg("bad", "2", "explode"),
        seg("good", "2", "still fine")]}).json()["results"]
    assert [r.get("status") or r["code"] for r in results] == [
        "accepted", "internal_error", "accepted", "internal_error", "internal_error",
        "accepted"]
    # Nothing of "bad" was kept, so a corrected retry starts it cleanly.
    retry = client.post("/v1/events", headers=h, json={"events": [
        {"type": "conversation.started", "conversation": {"id": "bad"}},
        seg("bad", "1", "fine")]}).json()["results"]
    assert [r["status"] for r in retry] == ["accepted", "accepted"]


def test_full_pipeline_answers_overloaded_over_rest_in_order(tmp_path, connector_token: str,
                                                             backend: str) -> None:
    """With the bus full and the store stalled, a REST batch waits its deadline, then the
    rest of it is refused as overloaded (503 when all are), never applied out of order.
    (The pipeline holds two batches out of the bus: one being written, the next applied.)"""
    settings = Settings(database=tmp_path / "cc.db", bus_queue_size=1, batch_size=1,
                        submit_timeout_seconds=0.2)
    stalled = threading.Event()
    store = make_store(backend, tmp_path)
    real_write = store.write

    async def slow_write(batch):  # type: ignore[no-untyped-def]
        await asyncio.to_thread(stalled.wait, 10)
        await real_write(batch)

    store.write = slow_write  # type: ignore[method-assign]
    with TestClient(create_app(settings, store)) as client:
        h = auth(connector_token)
        events = [{"type": "conversation.started", "conversation": {"id": f"o{i}"}}
                  for i in range(5)]
        first = threading.Thread(target=client.post, args=("/v1/events",),
                                 kwargs={"headers": h, "json": {"events": events[:3]}})
        first.start()
        # event 0 is in the stalled store, event 1 applied after it, event 2 fills the bus
        time.sleep(0.3)
        r = client.post("/v1/events", headers=h, json={"events": events[3:]})
        assert r.status_code == 503
        assert [x["code"] for x in r.json()["results"]] == ["overloaded", "overloaded"]
        stalled.set()
        first.join(10)
        assert client.post("/v1/events", headers=h,
                           json={"events": events[3:]}).status_code == 200


def test_keyed_events_apply_once(client: TestClient, ingest: Connector, stored: Stored,
                                 users: Users) -> None:
    """A transfer, hand-over or participant event resent with its event_id is a duplicate:
    counted once, stored once, also after the conversation ended."""
    manager = auth(users.token("CallCenterManager"))
    ingest.start("k1", agent_id=None)
    transfer = {"type": "conversation.transferred", "conversation_id": "k1",
                "to_queue": "retention", "event_id": "t-1"}
    handover = {"type": "bot.handover", "conversation_id": "k1", "agent_id": "ann",
                "event_id": "h-1"}
    joined = {"type": "participant.joined", "conversation_id": "k1", "event_id": "j-1",
              "participant": {"id": "sup-1", "role": "agent"}}
    for event in (transfer, handover, joined):
        assert ingest.send(event)["status"] == "accepted"
        assert ingest.send(event)["status"] == "duplicate"
    # The same key on a segment id space does not collide: ids and event keys differ.
    assert ingest.say("k1", "t-1", "hello")["status"] == "accepted"
    unkeyed = {"type": "conversation.transferred", "conversation_id": "k1", "to_queue": "x"}
    assert ingest.send(unkeyed)["status"] == "accepted"
    assert ingest.send(unkeyed)["status"] == "accepted"  # no key: applied each time
    live = client.get("/v1/live/conversations/k1", headers=manager).json()
    assert live["transfers"] == 3 and live["agent_id"] == "ann"
    ingest.end("k1")
    for event in (transfer, handover, joined):
        assert ingest.send(event)["status"] == "duplicate"
    assert ingest.send(transfer | {"event_id": "t-2"})["code"] == "conversation_ended"
    assert sorted(stored.rows("SELECT event_id FROM conversation_events "
                              "WHERE event_id IS NOT NULL")) == [("h-1",), ("j-1",), ("t-1",)]


def test_keyed_events_are_recognised_after_a_restart(tmp_path, backend: str,
                                                     connector_token: str) -> None:
    settings = Settings(database=tmp_path / "cc.db")
    transfer = {"type": "conversation.transferred", "conversation_id": "r1",
                "to_queue": "retention", "event_id": "t-1"}
    for expected in ("accepted", "duplicate"):
        with TestClient(create_app(settings, make_store(backend, tmp_path))) as client, \
                client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            c = Connector(ws)
            if expected == "accepted":
                c.start("r1")
            assert c.send(transfer)["status"] == expected


def test_nul_characters_are_refused_not_stored(client: TestClient, ingest: Connector,
                                               connector_token: str, users: Users) -> None:
    """No store keeps a NUL character: it is a validation error wherever it comes, and
    the connection carries on."""
    ingest.start("n1")
    bad = ingest.say("n1", "s1", "a\x00b")
    assert bad["code"] == "validation_error" and "NUL" in bad["message"]
    rest = client.post("/v1/events", headers=auth(connector_token), json={"events": [
        {"type": "conversation.started",
         "conversation": {"id": "n3", "customer": {"name": "P\x00t"}}}]})
    assert rest.status_code == 422 and rest.json()["code"] == "validation_error"
    analyst = auth(users.token("Analyst"))
    for url in ("/v1/transcripts?q=%00", "/v1/transcripts/%00", "/v1/alerts?queue=%00"):
        refused = client.get(url, headers=analyst)
        assert refused.status_code == 422 and refused.json()["code"] == "validation_error"
    admin = auth(users.token("Admin"))
    rule = {"id": "k", "kind": "keyword", "phrases": ["a\x00b"]}
    assert client.post("/v1/rules", headers=admin, json=rule).status_code == 422
    assert ingest.say("n1", "s2", "fine")["status"] == "accepted"


def test_one_pipeline_per_database(tmp_path, backend: str) -> None:
    """A second service on the same database is refused at start: two pipelines would
    overwrite each other's live state."""
    settings = Settings(database=tmp_path / "cc.db")
    with TestClient(create_app(settings, make_store(backend, tmp_path))):
        second = TestClient(create_app(settings, make_store(backend, tmp_path)))
        with pytest.raises(RuntimeError, match="another contact-center process"):
            second.__enter__()
    with TestClient(create_app(settings, make_store(backend, tmp_path))) as again:
        assert again.get("/healthz").status_code == 200  # released at shutdown


def test_batched_replies_are_the_same_replies_in_fewer_frames(client: TestClient,
                                                              connector_token: str) -> None:
    """``?replies=batched``: what settles together comes in one frame, each reply as it
    would come alone, errors in their place, every event answered once, in order."""
    with client.websocket_connect("/v1/ingest?replies=batched",
                                  headers=auth(connector_token)) as ws:
        assert Connector(ws).hello["replies"] == "batched"
        events: list[Any] = [{"type": "conversation.started", "conversation": {"id": "b"},
                              "ref": "start"}]
        for i in range(60):
            events.append({"type": "segment", "conversation_id": "b", "segment_id": f"s{i}",
                           "role": "customer", "text": f"message {i}", "ref": str(i)})
        events[20]["conversation_id"] = "nope"  # unknown_conversation, in its place
        events[40] = "{not json"  # malformed_json: no ref to echo
        events.append(events[10])  # a resend: duplicate
        for event in events:
            ws.send_text(event if isinstance(event, str) else json.dumps(event))
        frames: list[dict[str, Any]] = []
        while sum(len(f["replies"]) for f in frames) < len(events):
            frames.append(ws.receive_json())
    assert {f["type"] for f in frames} == {"replies"}
    replies = [r for f in frames for r in f["replies"]]
    assert len(replies) == len(events)
    assert [r.get("ref") for r in replies] == [
        None if isinstance(e, str) else e["ref"] for e in events]
    assert replies[20]["code"] == "unknown_conversation"
    assert replies[40]["code"] == "malformed_json"
    assert replies[-1]["status"] == "duplicate"
    assert all(r["type"] == "ack" for i, r in enumerate(replies) if i not in (20, 40))
    assert len(frames) < len(replies)  # (the pipeline commits several events at once)


def test_replies_single_or_batched_and_nothing_else(client: TestClient,
                                                    connector_token: str) -> None:
    denied = refused(client, "/v1/ingest?replies=sometimes", auth(connector_token))
    assert denied.status_code == 422 and "replies" in denied.json()["message"]
    with client.websocket_connect("/v1/ingest?replies=single",
                                  headers=auth(connector_token)) as ws:
        single = Connector(ws)
        assert "replies" not in single.hello
        assert single.start("x")["type"] == "ack"


def test_a_batched_frame_keeps_to_its_size_in_bytes(client: TestClient, connector_token: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames keep within MAX_FRAME_BYTES of UTF-8 and lose no reply (refs of two-byte
    characters here: counting characters would let a fourth reply in, past the bound)."""
    monkeypatch.setattr(ingest_api, "MAX_FRAME_BYTES", 1_400)
    with client.websocket_connect("/v1/ingest?replies=batched",
                                  headers=auth(connector_token)) as ws:
        Connector(ws)
        ws.send_json({"type": "conversation.started", "conversation": {"id": "k"}})
        refs = [f"{i:03d}" + "é" * 124 for i in range(40)]
        for i, ref in enumerate(refs):
            ws.send_json({"type": "segment", "conversation_id": "k", "segment_id": f"s{i}",
                          "role": "customer", "text": "hello", "ref": ref})
        frames: list[str] = []
        while sum(len(json.loads(f)["replies"]) for f in frames) < 1 + len(refs):
            frames.append(ws.receive_text())
    assert max(len(f.encode()) for f in frames) <= 1_400
    replies = [r for f in frames for r in json.loads(f)["replies"]]
    assert [r.get("ref") for r in replies[1:]] == refs
    assert any(len(json.loads(f)["replies"]) > 1 for f in frames)  # (3 fit, 4 by characters)
