"""Recording policies checked against the database, and the analyst's queries."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ANGRY, Connector, Stored, Users, auth

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
    alerts = stored.rows("SELECT rule_id, evidence, reason FROM alerts")
    assert {a[0] for a in alerts} >= {"churn-or-legal-threat", "negative-sentiment"}
    for rule_id, evidence, reason in alerts:
        stored_evidence = json.loads(evidence)
        for seg in stored_evidence["segments"]:
            assert (seg["text"] is not None) == (seg["role"] in kept)
            assert "compound" in seg["scores"]
        if rule_id == "churn-or-legal-threat":  # the matched words are transcript too
            assert (stored_evidence["matched"] == ["cancel my account"]) == ("customer" in kept)
            assert (stored_evidence["signals"] == {"churn": ["cancel my account"]}) == (
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
    assert [a["rule_id"] for a in body["alerts"]] == ["churn-or-legal-threat",
                                                      "very-negative-turn"]
    assert all(a["rule_version"] == 1 for a in body["alerts"])
    assert [e["type"] for e in body["events"]] == [
        "conversation.started", "conversation.transferred", "conversation.ended"]
    assert body["events"][1]["from_queue"] == "billing"
    missing = client.get("/v1/transcripts/nope", headers=analyst)
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_conversation"


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
