"""Recording policies checked against the database, and the analyst's queries."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contact_center.settings import Settings
from contact_center.stores import QueryTimeout, SearchQuery, SegmentRow, Store, WriteBatch
from contact_center.stores import postgres as postgres_store
from contact_center.stores import sqlite as sqlite_store
from contact_center.stores.sqlite import SQLiteStore
from tests.conftest import (
    ANGRY,
    HAPPY,
    Connector,
    Stored,
    Users,
    auth,
    make_app,
    make_store,
    run,
    wait_for_partitions,
)

CUSTOMER = "I want to cancel my account, this is awful and I am furious!"
AGENT = "I am sorry to hear that, let me help you with the cancellation."
CUSTOMER_2 = "This is a terrible disgrace, I hate it, horrible!"
BOT = "Your satisfaction survey link is on its way."


@pytest.mark.parametrize(("policy", "kept"), [
    ("none", set()), ("agent", {"agent"}), ("customer", {"customer"}),
    ("all", {"customer", "agent"})])
def test_recording_policy_decides_what_is_stored(
        policy: str, kept: set[str], ingest: Connector, client: TestClient, users: Users,
        stored: Stored) -> None:
    manager = auth(users.token("CallCenterManager"))
    ingest.start("r1", recording=policy)
    with client.websocket_connect("/v1/conversations/r1/monitor", headers=manager) as ws:
        ws.receive_json()
        ws.receive_json()
        ingest.say("r1", "1", CUSTOMER)
        ingest.say("r1", "2", AGENT, role="agent")
        ingest.say("r1", "3", CUSTOMER_2)
        ingest.say("r1", "4", ANGRY[0])
        ingest.say("r1", "5", BOT, role="bot")
        # Monitoring does not depend on recording: the supervisor hears every word.
        live: list[dict] = []
        while len(live) < 5:
            message = ws.receive_json()
            if message["type"] == "segment":
                live.append(message)
        assert [m["text"] for m in live] == [CUSTOMER, AGENT, CUSTOMER_2, ANGRY[0], BOT]
    ingest.end("r1")

    segments = stored.rows("SELECT role, text FROM segments ORDER BY seq")
    assert [role for role, _ in segments] == ["customer", "agent", "customer", "customer", "bot"]
    for role, text in segments:
        # The agent side includes its bot.
        assert (text is not None) == (role.replace("bot", "agent") in kept), (policy, role)

    # Alerts and metadata are always stored; their evidence follows the same policy.
    # (One alert for the conversation; each rule firing is one of its hits.)
    alerts = [json.loads(d) for d, in stored.rows("SELECT document FROM alerts")]
    assert len(alerts) == 1
    hits = alerts[0]["hits"]
    assert {h["rule_id"] for h in hits} >= {"angry-cancellation", "negative-sentiment"}
    # The top level repeats the lead hit, in the same recorded form.
    assert {k: alerts[0][k] for k in ("rule_id", "evidence", "reason")} in [
        {k: h[k] for k in ("rule_id", "evidence", "reason")} for h in hits]
    for hit in hits:
        rule_id, stored_evidence, reason = hit["rule_id"], hit["evidence"], hit["reason"]
        for seg in stored_evidence["segments"]:
            assert (seg["text"] is not None) == (seg["role"] in kept)
            assert "compound" in seg["scores"]
        if rule_id == "angry-cancellation":  # the matched words are transcript too
            assert (stored_evidence["matched"] == ["cancel my account"]) == ("customer" in kept)
            assert (stored_evidence["signals"] == {"cancellation": ["cancel my account"]}) == (
                "customer" in kept)
            assert ("cancel my account" in reason) == ("customer" in kept)
    assert stored.rows("SELECT recording, status FROM conversations") == [(policy, "ended")]

    everything = stored.everything()
    for text, role in ((CUSTOMER, "customer"), (AGENT, "agent"), (CUSTOMER_2, "customer"),
                       (BOT, "agent")):
        assert (text.encode() in everything) == (role in kept), (policy, role)


def test_analyst_fetches_a_recorded_conversation(ingest: Connector, client: TestClient,
                                                 users: Users) -> None:
    analyst = auth(users.token("Analyst"))
    ingest.start("a1", queue="billing", agent_id="ann", recording="customer")
    ingest.say("a1", "1", CUSTOMER)
    ingest.say("a1", "2", AGENT, role="agent")
    ingest.send({"type": "conversation.transferred", "conversation_id": "a1",
                 "to_queue": "retention", "reason": "cancel"})
    ingest.end("a1")
    body = client.get("/v1/transcripts/a1", headers=analyst).json()
    assert body["queue"] == "retention" and body["status"] == "ended"
    assert [(t["role"], t["text"]) for t in body["turns"]] == [
        ("customer", CUSTOMER), ("agent", None)]
    assert all(set(t["scores"]) == {"neg", "neu", "pos", "compound"} for t in body["turns"])
    # One alert for the conversation, its hits one per rule firing; the end resolved it.
    [alert] = body["alerts"]
    assert [h["rule_id"] for h in alert["hits"]] == ["angry-cancellation", "exasperation",
                                                     "very-negative-turn"]
    assert all(h["rule_version"] == 1 for h in alert["hits"])
    assert alert["hit_count"] == 3
    assert (alert["status"], alert["resolution"]) == ("resolved", "conversation_ended")
    assert [e["type"] for e in body["events"]] == [
        "conversation.started", "conversation.transferred", "conversation.ended"]
    assert body["events"][1]["from_queue"] == "billing"
    missing = client.get("/v1/transcripts/nope", headers=analyst)
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_conversation"


def test_the_conversation_view_has_alert_history_monitors_and_a_timeline(
        ingest: Connector, client: TestClient, users: Users) -> None:
    analyst = auth(users.token("Analyst"))
    kim = auth(users.token("CallCenterManager", username="kim"))
    ingest.start("v1", queue="billing", agent_id="ann")
    ingest.say("v1", "1", CUSTOMER)
    ingest.say("v1", "2", AGENT, role="agent")
    with client.websocket_connect("/v1/conversations/v1/monitor", headers=kim) as monitor:
        assert monitor.receive_json()["type"] == "catch_up"
    [alert] = client.get("/v1/alerts", headers=kim,
                         params={"conversation_id": "v1"}).json()["alerts"]
    assert client.post(f"/v1/alerts/{alert['id']}/acknowledge", headers=kim,
                       json={"version": alert["version"]}).status_code == 200
    ingest.say("v1", "3", HAPPY)
    ingest.send({"type": "conversation.transferred", "conversation_id": "v1",
                 "to_queue": "retention"})
    ingest.end("v1")
    body = client.get("/v1/transcripts/v1", headers=analyst).json()
    # Each alert with its history, oldest first: raised, acknowledged by kim, resolved.
    history = body["alerts"][0]["history"]
    changes = [(h["type"], h["by"]) for h in history]
    assert changes[0] == ("alert.raised", None) and ("alert.acknowledged", "kim") in changes
    assert changes[-1] == ("alert.resolved", None)
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    # Who monitored it, from the audit log (the end is recorded as the socket closes).
    [session] = body["monitors"]
    assert session["username"] == "kim" and session["started_at"] <= session["ended_at"]
    assert session["seconds"] >= 0
    # The customer's sentiment after each of their turns, as the rules read it.
    customer = [t for t in body["turns"] if t["role"] == "customer"]
    scores = [t["scores"]["compound"] for t in customer]
    assert [(p["seq"], p["compound"]) for p in body["timeline"]] == [
        (t["seq"], t["scores"]["compound"]) for t in customer]
    assert body["timeline"][-1]["window"] == pytest.approx(sum(scores) / 2)
    assert body["timeline"][-1]["ewma"] == pytest.approx(0.5 * scores[1] + 0.5 * scores[0])
    assert "conversation.transferred" in [e["type"] for e in body["events"]]


def test_transcript_is_in_spoken_order_even_when_segments_arrive_late(
        ingest: Connector, client: TestClient, users: Users) -> None:
    ingest.start("o1")
    ingest.say("o1", "b", "second", started_at="2026-01-01T10:00:05Z")
    assert ingest.say("o1", "a", "first", started_at="2026-01-01T10:00:00Z")["late"] is True
    ingest.say("o1", "c", "third", started_at="2026-01-01T10:00:09Z")
    turns = client.get("/v1/transcripts/o1", headers=auth(users.token("Analyst"))).json()
    assert [(t["segment_id"], t["late"]) for t in turns["turns"]] == [
        ("a", True), ("b", False), ("c", False)]


def test_keyword_search_with_filters(ingest: Connector, client: TestClient,
                                     users: Users) -> None:
    analyst = auth(users.token("Analyst"))
    ingest.start("s1", queue="billing", agent_id="ann")
    ingest.start("s2", queue="sales", agent_id="bob")
    ingest.start("s3", queue="billing", agent_id="bob", recording="none")
    ingest.say("s1", "1", "My invoice is wrong, 100% overcharged")
    ingest.say("s1", "2", "Let me look at the invoice", role="agent")
    ingest.say("s2", "1", "The INVOICE never arrived")
    ingest.say("s3", "1", "invoice problem, unrecorded")

    def search(**params) -> list[tuple[str, str]]:
        r = client.get("/v1/transcripts", headers=analyst, params=params)
        assert r.status_code == 200, r.text
        return sorted((h["conversation_id"], h["segment_id"]) for h in r.json()["hits"])

    assert search(q="invoice") == [("s1", "1"), ("s1", "2"), ("s2", "1")]
    assert search(q="invoice", queue="billing") == [("s1", "1"), ("s1", "2")]
    assert search(q="invoice", agent_id="bob") == [("s2", "1")]
    assert search(q="invoice", role="agent") == [("s1", "2")]
    assert search(q='"never arrived"') == [("s2", "1")]
    assert search(q="invoice wrong") == [("s1", "1")]
    assert search(q="100%") == [("s1", "1")]
    assert search(q="_") == []  # LIKE wildcards are literal
    assert search(q="invoice", since="2000-01-01T00:00:00Z", until="2001-01-01T00:00:00Z") == []
    assert search(q="invoice", since="2000-01-01T00:00:00Z") == [
        ("s1", "1"), ("s1", "2"), ("s2", "1")]
    assert len(client.get("/v1/transcripts", headers=analyst,
                          params={"q": "invoice", "limit": 1}).json()["hits"]) == 1
    assert client.get("/v1/transcripts", headers=analyst,
                      params={"q": "invoice", "limit": 501}).status_code == 422
    assert client.get("/v1/transcripts", headers=analyst, params={"q": ""}).status_code == 422


def test_a_search_past_its_time_limit_is_answered_query_timeout(
        client: TestClient, users: Users, monkeypatch: pytest.MonkeyPatch) -> None:
    async def too_long(query: SearchQuery) -> None:
        raise QueryTimeout

    monkeypatch.setattr(client.app.state.store, "search", too_long)  # type: ignore[attr-defined]
    stopped = client.get("/v1/transcripts?q=refund", headers=auth(users.token("Analyst")))
    assert stopped.status_code == 503 and stopped.json()["code"] == "query_timeout"


def test_the_stores_stop_a_search_past_its_time_limit(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fill(store: Store) -> None:
        meta = {"id": "big", "channel": "chat", "queue": "q", "agent_id": None,
                "customer": {}, "recording": "all", "attributes": {}, "status": "live",
                "started_at": 1.0, "ended_at": None, "updated_at": 1.0}
        batch = WriteBatch(conversations={"big": (meta, {})}, segments=[
            SegmentRow("big", f"s{i}", i, "customer", "c", f"refund number {i}",
                       {"neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": 0.0}, None, None,
                       float(i)) for i in range(20_000)])
        await store.write(batch)

    async def search(store: Store) -> list[dict[str, Any]]:
        return await store.search(SearchQuery(terms=["refund", "number 1"]))

    async def scenario() -> None:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            await fill(store)
            assert await search(store)  # within the limit
            monkeypatch.setattr(sqlite_store, "SEARCH_SECONDS", 0.0)
            monkeypatch.setattr(sqlite_store, "PROGRESS_EVERY", 1)
            monkeypatch.setattr(postgres_store, "SEARCH_SECONDS", 0.001)
            with pytest.raises(QueryTimeout):
                await search(store)
            assert await store.get_conversation("big") is not None  # the store carries on
        finally:
            await store.close()

    run(scenario())


def test_analyst_queries_never_delay_supervisor_reads(tmp_path: Path) -> None:
    """A long search (here: its connection kept busy for 1.5 s) does not hold up a
    transcript read or the user list the live agents view reads."""
    async def scenario() -> tuple[float, float]:
        store = SQLiteStore(tmp_path / "cc.db")
        await store.open()
        try:
            slow = asyncio.create_task(store._analyst.run(lambda db: time.sleep(1.5)))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await store.get_conversation("none")
            await store.list_users()
            took = time.monotonic() - started
            await slow
            return took, time.monotonic() - started
        finally:
            await store.close()

    took, slow_done = run(scenario())
    assert took < 0.5 < slow_done, (took, slow_done)


def test_words_said_while_recording_is_paused_are_kept_nowhere(
        client: TestClient, users: Users, stored: Stored) -> None:
    """recording.paused / recording.resumed (like Connect's suspended recording): the turns
    between them are scored and read by the rules, but their words are neither stored nor
    put in an alert; the gap is in the transcript's events."""
    admin = auth(users.token("Admin"))
    rule = {"id": "fruit", "kind": "keyword", "phrases": ["banana"], "severity": "low",
            "cooldown_seconds": 0}
    assert client.put("/v1/rules", headers=admin, json={"rules": [rule]}).status_code == 200
    with client.websocket_connect("/v1/ingest",
                                  headers=auth(users.token("Connector"))) as ws:
        ingest = Connector(ws)
        ingest.start("pz")
        assert ingest.say("pz", "s1", "hello there")["status"] == "accepted"
        assert ingest.send({"type": "recording.paused", "conversation_id": "pz",
                            "event_id": "p1", "reason": "card details"})["status"] == "accepted"
        live = client.get("/v1/live/conversations/pz", headers=admin).json()
        assert live["recording_paused"] is True
        assert ingest.say("pz", "s2", "my secret word is banana")["status"] == "accepted"
        assert ingest.send({"type": "recording.resumed", "conversation_id": "pz",
                            "event_id": "r1"})["status"] == "accepted"
        assert ingest.send({"type": "recording.resumed", "conversation_id": "pz",
                            "event_id": "r1"})["status"] == "duplicate"
        assert ingest.say("pz", "s3", "thanks, bye")["status"] == "accepted"
        ingest.end("pz")
    transcript = client.get("/v1/transcripts/pz", headers=admin).json()
    assert [(t["segment_id"], t["text"], t["recorded"]) for t in transcript["turns"]] == [
        ("s1", "hello there", True), ("s2", None, False), ("s3", "thanks, bye", True)]
    assert [e["type"] for e in transcript["events"] if e["type"].startswith("recording")] == [
        "recording.paused", "recording.resumed"]
    [alert] = client.get("/v1/alerts", headers=admin).json()["alerts"]
    assert alert["rule_id"] == "fruit"  # the rule read the words, in memory
    evidence = alert["evidence"]
    assert evidence["segments"][-1]["text"] is None and evidence["matched"] == []
    assert b"banana" not in stored.everything().replace(b'"banana"', b"")  # (the rule's)


@pytest.mark.app
def test_a_queue_has_a_recording_policy_that_a_conversation_may_override(
        backend: str, settings: Settings, tmp_path: Path, users: Users) -> None:
    settings = settings.model_copy(update={"recording": "none", "recording_by_queue": {
        "payments": "agent", "care": "customer"}})
    admin = auth(users.token("Admin"))
    connector = auth(users.token("Connector"))
    with TestClient(make_app(settings, backend, tmp_path)) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            ingest = Connector(ws)
            for cid, queue, asked in (("q1", "payments", None), ("q2", "care", None),
                                      ("q3", "other", None), ("q4", "payments", "all")):
                assert ingest.start(cid, queue=queue, recording=asked)["status"] == "accepted"
                for role in ("customer", "agent"):
                    ingest.say(cid, role[0], f"{role} words", role=role)
                ingest.end(cid)
        kept = {cid: [t["text"] for t in client.get(f"/v1/transcripts/{cid}",
                                                   headers=admin).json()["turns"]]
                for cid in ("q1", "q2", "q3", "q4")}
    assert kept == {"q1": [None, "agent words"], "q2": ["customer words", None],
                    "q3": [None, None], "q4": ["customer words", "agent words"]}


@pytest.mark.app
def test_a_queue_keeps_partials_or_not_and_a_conversation_may_override(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        stored: Stored) -> None:
    """Partials are kept (redacted, as `segment.partial` events) only where the queue or
    the conversation asks, for roles whose words the policy keeps, not while paused; the
    choice survives a restart."""
    settings = settings.model_copy(update={"recording_partials_by_queue": {"voice": True}})
    admin = auth(users.token("Admin"))
    connector = auth(users.token("Connector"))
    starts = {"v1": ("voice", None, "all"), "v2": ("other", None, "all"),
              "v3": ("other", True, "all"), "v4": ("voice", False, "all"),
              "v5": ("voice", None, "agent")}

    def opened() -> TestClient:
        client = TestClient(make_app(settings, backend, tmp_path))
        client.__enter__()
        if backend == "scaleout":
            wait_for_partitions(client)
        return client

    client = opened()
    with client.websocket_connect("/v1/ingest", headers=connector) as ws:
        ingest = Connector(ws)
        for cid, (queue, partials, policy) in starts.items():
            assert ingest.start(cid, queue=queue, recording=policy,
                                recording_partials=partials)["status"] == "accepted"
            live = client.get(f"/v1/live/conversations/{cid}", headers=admin).json()
            assert live["recording_partials"] == (cid in ("v1", "v3", "v5"))
    client.__exit__(None, None, None)
    client = opened()  # (what each conversation keeps was saved with it)
    with client.websocket_connect("/v1/ingest", headers=connector) as ws:
        ingest = Connector(ws)
        for cid in starts:
            for role in ("customer", "agent"):
                assert ingest.say(cid, f"{role}-1", f"{role} card 4111 1111 1111 1111",
                                  role=role, final=False)["status"] == "accepted"
                assert ingest.say(cid, f"{role}-1", f"{role} final",
                                  role=role)["status"] == "accepted"
            ingest.send({"type": "recording.paused", "conversation_id": cid})
            ingest.say(cid, "hidden", "customer while paused", final=False)
            ingest.send({"type": "recording.resumed", "conversation_id": cid})
            ingest.end(cid)
        kept = {cid: [(e["segment_id"], e["role"], e["text"])
                      for e in client.get(f"/v1/transcripts/{cid}", headers=admin).json()[
                          "events"] if e["type"] == "segment.partial"]
                for cid in starts}
    client.__exit__(None, None, None)
    both = [("customer-1", "customer", "customer card [CARD]"),
            ("agent-1", "agent", "agent card [CARD]")]
    assert kept == {"v1": both, "v2": [], "v3": both, "v4": [], "v5": both[1:]}
    # The number in any spelling (not "4111" alone: random hex ids hold it by chance).
    everything = stored.everything()
    for form in (b"4111 1111 1111 1111", b"4111111111111111", b"while paused"):
        assert form not in everything, form
