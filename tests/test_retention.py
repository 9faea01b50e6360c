"""Retention: which conversations are due (pure), what removing their words leaves, and
the job on every deployment with a clock the test controls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from contact_center.cli import main
from contact_center.retention import run_once
from contact_center.stores import AuditQuery, SegmentRow, WriteBatch
from contact_center.stores.sqlite import SQLiteStore
from monitoring import codec, webhooks
from monitoring.retention import DAY, Due, RetentionPolicy, due, is_due
from monitoring.words import (
    alert_without_words,
    event_without_words,
    webhook_payload_without_words,
)
from tests.conftest import Connector, Stored, Users, auth, make_store, run

POLICY = RetentionPolicy(default_days=365, by_queue={"billing": 30, "claims": 30,
                                                      "vip": 3650})


# -- deciding (pure) ------------------------------------------------------------------------


def test_each_queue_keeps_words_for_its_own_days_the_rest_for_the_default() -> None:
    now = 1_000_000_000.0
    assert is_due(POLICY, "billing", now - 31 * DAY, now)
    assert not is_due(POLICY, "billing", now - 29 * DAY, now)
    assert not is_due(POLICY, "sales", now - 31 * DAY, now)  # the default: a year
    assert is_due(POLICY, "sales", now - 366 * DAY, now)
    assert not is_due(POLICY, "vip", now - 366 * DAY, now)
    # Queues that keep words as long share one selection; the default covers the rest.
    assert due(POLICY, now) == [
        Due(now - 30 * DAY, ("billing", "claims")), Due(now - 3650 * DAY, ("vip",)),
        Due(now - 365 * DAY, ("billing", "claims", "vip"), others=True)]


def test_without_a_default_only_the_queues_named_lose_words() -> None:
    policy = RetentionPolicy(by_queue={"billing": 1})
    assert not is_due(policy, "sales", 0.0, 10**12)
    assert [d.others for d in due(policy, 10**9)] == [False]
    assert RetentionPolicy().keeps_everything and due(RetentionPolicy(), 10**9) == []


@given(queue=st.sampled_from(["billing", "claims", "vip", "sales", "other"]),
       age_days=st.floats(0, 5000), default=st.sampled_from([None, 1.0, 365.0]))
def test_the_selections_select_exactly_the_conversations_due(
        queue: str, age_days: float, default: float | None) -> None:
    policy = RetentionPolicy(default, dict(POLICY.by_queue))
    now = 2_000_000_000.0
    ended_at = now - age_days * DAY
    covering = [d for d in due(policy, now) if d.covers(queue, ended_at)]
    assert len(covering) == int(is_due(policy, queue, ended_at, now))


# -- what removing words leaves (pure) ----------------------------------------------------


HIT = {"rule_id": "churn", "rule_version": 1, "rule_name": "Churn", "kind": "signal",
       "severity": "high", "raised_at": 5.0,
       "reason": "customer turn shows cancellation: 'cancel my account'",
       "evidence": {"metric": None, "window": [-0.5], "matched": ["cancel my account"],
                    "signals": {"cancellation": ["cancel my account"]},
                    "segments": [{"segment_id": "1", "role": "customer", "participant_id": "c",
                                  "text": "cancel my account", "scores": {"compound": -0.5},
                                  "at": 5.0}]}}
SENTIMENT = {**HIT, "rule_id": "neg", "kind": "sentiment",
             "reason": "customer sentiment (turn) -0.500 below -0.4",
             "evidence": {**HIT["evidence"], "matched": [], "signals": {}}}


def test_an_alert_without_words_keeps_its_scores_status_and_reasons_that_quote_nothing(
) -> None:
    alert = {"id": "a1", "status": "resolved", "note": "customer said cancel my account",
             **HIT, "hits": [HIT, SENTIMENT]}
    kept = alert_without_words(alert)
    assert kept["status"] == "resolved" and kept["note"] is None
    assert kept["reason"] == "customer turn matched signal rule (words removed)"
    first, second = kept["hits"]
    assert first["evidence"]["matched"] == [] and first["evidence"]["signals"] == {
        "cancellation": []}
    assert first["evidence"]["segments"][0]["text"] is None
    assert first["evidence"]["segments"][0]["scores"] == {"compound": -0.5}
    assert second["reason"] == SENTIMENT["reason"]  # (it quotes no word)
    assert "my account" not in codec.dumps(kept)
    assert alert_without_words(kept) == kept  # (a second run changes nothing)


def test_events_lose_free_text_and_names_and_webhook_bodies_their_alert_words() -> None:
    assert event_without_words({"participant": {"id": "p", "role": "agent", "name": "Ann"}}
                               ) == {"participant": {"id": "p", "role": "agent", "name": None}}
    assert event_without_words({"whisper_id": "w", "by": "sam", "text": "offer a refund"}
                               ) == {"whisper_id": "w", "by": "sam", "text": None}
    assert event_without_words({"to_queue": "billing", "reason": "angry"}) == {
        "to_queue": "billing", "reason": None}
    body = webhooks.payload({"type": "alert.raised", "event_id": 3,
                             "alert": {"id": "a1", **HIT, "hits": [HIT], "note": None}}, 5.0)
    kept = codec.loads(webhook_payload_without_words(body))
    assert kept["data"]["event_id"] == 3 and "my account" not in codec.dumps(kept)


# -- the job, on every deployment ---------------------------------------------------------

OLD = "quixotically"  # a word said in the billing conversation only
OTHER = "zephyrean"  # ... in the sales one only
LIVE = "marmalading"  # ... in the live one only


def converse(ingest: Connector, cid: str, queue: str, word: str, end: bool = True,
             customer: dict[str, Any] | None = None) -> None:
    """A conversation whose every kind of stored text holds ``word`` (turns, alert
    evidence and reason, event texts, a participant's name)."""
    assert ingest.start(cid, queue=queue, customer=customer or {
        "id": f"cust-{cid}", "name": "Pat Quinn", "email": "pat@example.com"})["status"] == \
        "accepted"
    ingest.say(cid, "1", f"I want to cancel my account {word}, this is awful and I am "
                         "furious!")
    ingest.say(cid, "2", f"I am sorry, {word}, let me help you.", role="agent")
    ingest.send({"type": "participant.joined", "conversation_id": cid, "event_id": "j1",
                 "participant": {"id": "p2", "role": "agent", "name": f"Jo {word}"}})
    if end:
        assert ingest.send({"type": "conversation.ended", "conversation_id": cid,
                            "reason": f"hung up {word}"})["status"] == "accepted"


def deliveries(backend: str, tmp_path: Path) -> int:
    """A (disabled: never tried) endpoint with a delivery of every alert event so far."""
    async def add() -> int:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            now = time.time()
            await store.add_webhook({
                "id": "wh-1", "url": "https://example.com/hook", "events": ["alert.raised"],
                "min_severity": "low", "queues": None, "secret": "whsec_x", "enabled": False,
                "disabled_reason": "test", "failing_since": None, "created_at": now,
                "created_by": "test"})
            events = (await store.alert_events_after(0, 1000)).events
            added = await store.add_deliveries([
                ("wh-1", e["event_id"], webhooks.message_id(e["event_id"], "wh-1"), e["type"],
                 webhooks.payload(e, now), 0, now, now, None) for e in events],
                events[-1]["event_id"])
            return len(added)
        finally:
            await store.close()

    return int(run(add()))


def _retention(backend: str, tmp_path: Path, days_later: float) -> dict[str, Any]:
    async def work() -> dict[str, Any]:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            removed = await run_once(store, POLICY, clock=lambda: time.time() + days_later * DAY)
            audit = await store.list_audit(AuditQuery(action="retention.run"))
            return {"removed": removed, "audit": audit}
        finally:
            await store.close()

    return dict(run(work()))


TEXT_COLUMNS = [("segments", "text"), ("alerts", "document"), ("alerts", "reason"),
                ("alert_events", "alert"), ("conversation_events", "payload"),
                ("webhook_deliveries", "payload"), ("conversations", "customer"),
                ("conversations", "state")]


def holding(stored: Stored, word: str) -> list[str]:
    """The columns that still hold ``word`` somewhere."""
    return [f"{table}.{column}" for table, column in TEXT_COLUMNS if stored.rows(
        f"SELECT count(*) FROM {table} WHERE CAST({column} AS TEXT) LIKE '%{word}%'")[0][0]]


def test_retention_removes_the_words_of_conversations_due_and_nothing_else(
        ingest: Connector, client: TestClient, users: Users, stored: Stored, backend: str,
        tmp_path: Path) -> None:
    converse(ingest, "old-billing", "billing", OLD)
    converse(ingest, "old-sales", "sales", OTHER)
    converse(ingest, "live-billing", "billing", LIVE, end=False)
    assert deliveries(backend, tmp_path) > 0
    analyst = auth(users.token("Analyst"))
    before = client.get("/v1/transcripts/old-billing", headers=analyst).json()
    assert before["words_removed_at"] is None and before["alerts"]
    for word in (OLD, OTHER, LIVE):
        assert "segments.text" in holding(stored, word)
    assert "webhook_deliveries.payload" in holding(stored, OLD)

    # A month on: billing's words (30 days) go; sales keeps them (a year); live ones stay.
    month = _retention(backend, tmp_path, 31)
    assert month["removed"].conversations == ["old-billing"]
    assert holding(stored, OLD) == []
    assert "segments.text" in holding(stored, OTHER)
    assert "segments.text" in holding(stored, LIVE)
    after = client.get("/v1/transcripts/old-billing", headers=analyst).json()
    assert after["words_removed_at"] is not None
    assert [t["text"] for t in after["turns"]] == [None, None]
    assert [t["scores"] for t in after["turns"]] == [t["scores"] for t in before["turns"]]
    assert after["customer"] == {"id": "cust-old-billing", "name": None, "email": None}
    assert [(a["id"], a["status"], a["hit_count"]) for a in after["alerts"]] == [
        (a["id"], a["status"], a["hit_count"]) for a in before["alerts"]]
    assert all(s["text"] is None for a in after["alerts"] for h in a["hits"]
               for s in h["evidence"]["segments"])
    assert [e["type"] for e in after["events"]] == [e["type"] for e in before["events"]]
    searched = client.get("/v1/search/turns", headers=analyst, params={"q": OLD})
    assert searched.status_code == 200 and searched.json()["hits"] == []
    assert client.get("/v1/search/turns", headers=analyst,
                      params={"q": OTHER}).json()["hits"]
    # Counted once, recorded once; a second run finds nothing and records nothing.
    counts = month["removed"].counts()
    assert counts["turns"] == 2 and counts["alerts"] == 1 and counts["events"] >= 2
    assert counts["alert_events"] >= 1 and counts["webhook_deliveries"] >= 1
    [entry] = month["audit"]
    assert entry.actor == "system" and entry.details["turns"] == 2
    again = _retention(backend, tmp_path, 31)
    assert again["removed"].conversations == [] and len(again["audit"]) == 1

    # Past a year, sales' words go too; the live conversation is never touched.
    year = _retention(backend, tmp_path, 400)
    assert year["removed"].conversations == ["old-sales"]
    assert holding(stored, OTHER) == []
    assert "segments.text" in holding(stored, LIVE)
    assert stored.rows("SELECT status, words_removed_at FROM conversations WHERE id = "
                       "'live-billing'") == [("live", None)]


def test_the_command_line_runs_it_once_and_prints_what_it_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fill() -> None:
        store = SQLiteStore(tmp_path / "cc.db")
        await store.open()
        try:
            meta = {"id": "c1", "channel": "chat", "queue": "billing", "agent_id": None,
                    "customer": {"id": "k", "name": "Pat", "email": None}, "recording": "all",
                    "attributes": {}, "status": "ended", "started_at": time.time() - 60,
                    "ended_at": time.time() - 30, "updated_at": time.time()}
            await store.write(WriteBatch(conversations={"c1": (meta, {})}, segments=[
                SegmentRow("c1", "1", 1, "customer", "k", f"so {OLD}", {
                    "neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": 0.0}, None, None,
                    time.time() - 50)]))
        finally:
            await store.close()

    run(fill())
    database = str(tmp_path / "cc.db")
    refused = CliRunner().invoke(main, ["retention", "run", "--db", database])
    assert refused.exit_code == 1 and "no retention is set" in refused.output
    monkeypatch.setenv("CC_RETENTION_BY_QUEUE", '{"billing": 0.0001}')  # about 9 seconds
    done = CliRunner().invoke(main, ["retention", "run", "--db", database])
    assert done.exit_code == 0, done.output
    assert "conversations: 1\nturns: 1\n" in done.output
    stored = Stored("sqlite", tmp_path)
    assert holding(stored, OLD) == []
    assert stored.rows("SELECT actor, source FROM audit_log WHERE action = 'retention.run'"
                       ) == [("cli", "local")]
