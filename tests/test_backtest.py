"""Backtest: a rule run over recorded conversations raises what live traffic raised."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.backtest import run
from analytics.default_rules import DEFAULT_RULES
from analytics.quality import load_corpus
from analytics.rolling import RollingConfig
from contact_center.stores import HistoryQuery
from tests.conftest import ANGRY, Connector, Users, auth, make_store

SAMPLE = Path(__file__).resolve().parents[1] / "contact_center" / "samples" / \
    "conversations.jsonl"


def replay_sample(ingest: Connector, recording: str = "all", suffix: str = "") -> list[str]:
    """Stream the packaged sample through the ingest socket, as a connector would."""
    ids = []
    for c in load_corpus(SAMPLE):
        cid = c["conversation_id"] + suffix
        ingest.start(cid, queue=c["queue"], recording=recording)
        for t in c["turns"]:
            role = "customer" if t["speaker"] == "customer" else "agent"
            assert ingest.say(cid, str(t["seq"]), t["text"], role=role)["type"] == "ack"
        ingest.end(cid)
        ids.append(cid)
    return ids


@pytest.fixture
def admin(users: Users) -> dict[str, str]:
    return auth(users.token("Admin"))


def backtest(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/rules/backtest", headers=headers, json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_saved_rule_backtests_to_what_it_raised_live(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    replay_sample(ingest)
    live = client.get("/v1/alerts", headers=admin, params={"limit": 1000}).json()["alerts"]
    assert len(live) >= 10
    # Live, a conversation's hits join its alert: the backtest's alerts are the hits.
    assert all(a["hit_count"] == len(a["hits"]) for a in live)  # (every hit kept)
    hits = [h | {"conversation_id": a["conversation_id"]} for a in live for h in a["hits"]]
    for rule in DEFAULT_RULES.rules:
        result = backtest(client, admin, rule_id=rule.id)
        raised = [h for h in hits if h["rule_id"] == rule.id]
        assert result["alerts"] == len(raised), rule.id
        assert result["conversations_with_alerts"] == len({a["conversation_id"] for a in raised})
        assert result["conversations"] == 30 and result["conversations_judged"] == 30
        assert result["current"] is None and result["difference"] is None
        for sample in result["samples"]:
            assert sample["conversation_id"] in {a["conversation_id"] for a in raised}
            assert sample["segments"] and sample["reason"]


def test_a_draft_is_compared_with_the_saved_rule(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    replay_sample(ingest)
    saved = client.get("/v1/rules/very-negative-turn", headers=admin).json()
    draft = saved | {"below": -0.5}
    result = backtest(client, admin, rule=draft, samples=2)
    current, difference = result["current"], result["difference"]
    assert current["rule"]["below"] == -0.75 and result["rule"]["below"] == -0.5
    assert result["alerts"] > current["alerts"] > 0  # a looser threshold raises more
    assert difference["alerts"] == result["alerts"] - current["alerts"]
    assert difference["conversations_only_current"] == 0
    assert difference["conversations_only_draft"] + difference["conversations_both"] == \
        result["conversations_with_alerts"]
    assert len(result["samples"]) == 2
    spread = result["alerts_per_conversation"]
    assert spread["one"] + spread["two"] + spread["three_or_more"] == \
        result["conversations_with_alerts"]
    assert spread["mean"] == pytest.approx(result["alerts"] / result["conversations_with_alerts"])


def test_words_not_recorded_are_not_judged(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    replay_sample(ingest, recording="all")
    replay_sample(ingest, recording="none", suffix="-unrecorded")
    words = backtest(client, admin, rule_id="churn-or-legal-threat")
    assert words["conversations"] == 60
    assert words["conversations_judged"] == 30 and words["conversations_not_judged"] == 30
    scores = backtest(client, admin, rule_id="very-negative-turn")
    # Scores are kept under every policy: both copies are judged, and fire alike.
    assert scores["conversations_judged"] == 60 and scores["conversations_not_judged"] == 0
    once = backtest(client, admin, rule_id="very-negative-turn", queue="AppleSupport")
    assert 0 < once["conversations"] < 60
    assert all(s["conversation_id"] for s in once["samples"])
    future = backtest(client, admin, rule_id="very-negative-turn",
                      since="2100-01-01T00:00:00Z")
    assert future["conversations"] == 0 and future["alerts"] == 0


def test_backtest_errors(client: TestClient, admin: dict[str, str], users: Users) -> None:
    rule = {"id": "x", "kind": "keyword", "phrases": ["refund"]}
    both = client.post("/v1/rules/backtest", headers=admin, json={"rule": rule, "rule_id": "x"})
    assert both.status_code == 422 and both.json()["code"] == "validation_error"
    unknown = client.post("/v1/rules/backtest", headers=admin, json={"rule_id": "nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_rule"
    bad = client.post("/v1/rules/backtest", headers=admin,
                      json={"rule": {"id": "x", "kind": "sentiment", "below": 5}})
    assert bad.status_code == 422 and bad.json()["details"][0]["loc"][-1] == "below"
    manager = auth(users.token("CallCenterManager"))
    assert client.post("/v1/rules/backtest", headers=manager,
                       json={"rule_id": "abuse"}).status_code == 403


def test_a_second_backtest_is_answered_busy_at_once(client: TestClient,
                                                   admin: dict[str, str]) -> None:
    lock = client.app.state.backtest_lock  # type: ignore[attr-defined]

    async def hold() -> None:
        await lock.acquire()

    client.portal.call(hold)  # (a backtest running on this node)
    try:
        started = time.monotonic()
        busy = client.post("/v1/rules/backtest", headers=admin,
                           json={"rule_id": "very-negative-turn"})
        assert time.monotonic() - started < 1.0  # not queued behind it
        assert busy.status_code == 503 and busy.json()["code"] == "busy"
        assert int(busy.headers["retry-after"]) > 0
    finally:
        client.portal.call(lock.release)  # type: ignore[arg-type]
    done = backtest(client, admin, rule_id="very-negative-turn")
    assert done["elapsed_ms"] >= 0


def test_narrowing_by_scores_changes_no_result(
        ingest: Connector, client: TestClient, backend: str, tmp_path: Path) -> None:
    """The numpy narrowing only skips conversations that cannot fire."""
    replay_sample(ingest)

    async def history() -> Any:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            return await store.load_history(HistoryQuery(with_text=True))
        finally:
            await store.close()

    recorded = asyncio.run(history())
    for rule in DEFAULT_RULES.rules:
        narrowed = run(rule, recorded, RollingConfig())
        full = run(rule, recorded, RollingConfig(), narrow=False)
        assert (narrowed.alerts, narrowed.per_conversation) == (full.alerts,
                                                                full.per_conversation)
        if rule.kind == "sentiment":
            assert narrowed.replayed < full.replayed


def test_hand_over_rules_backtest_to_what_they_raised_live(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    """Bot-handled until an agent is assigned: at the start, by bot.handover, or by a
    transfer to an agent; the backtest reads those events as the pipeline did."""
    rule = {"id": "hand-over", "kind": "human_requested", "cooldown_seconds": 0}
    assert client.put("/v1/rules", headers=admin, json={"rules": [rule]}).status_code == 200
    ask = "Can I talk to a real person please"
    ingest.start("with-agent", agent_id="ann")
    ingest.say("with-agent", "1", ask)
    ingest.start("bot-only", agent_id=None)
    ingest.say("bot-only", "1", "Hi, how can I help?", role="bot")
    ingest.say("bot-only", "2", ask)
    ingest.start("handed-over", agent_id=None)
    ingest.say("handed-over", "1", "Hi, how can I help?", role="bot")
    ingest.send({"type": "bot.handover", "conversation_id": "handed-over",
                 "agent_id": "ann"})
    ingest.say("handed-over", "2", ask)
    ingest.start("no-bot-turns", agent_id=None)
    ingest.say("no-bot-turns", "1", ask)
    for cid in ("with-agent", "bot-only", "handed-over", "no-bot-turns"):
        ingest.end(cid)
    live = client.get("/v1/alerts", headers=admin).json()["alerts"]
    assert sorted(a["conversation_id"] for a in live) == ["bot-only", "no-bot-turns"]
    assert all(a["hit_count"] == 1 for a in live)  # one hit each, as the backtest finds
    result = backtest(client, admin, rule_id="hand-over")
    assert result["alerts"] == 2
    assert sorted(s["conversation_id"] for s in result["samples"]) == ["bot-only",
                                                                     "no-bot-turns"]


def test_samples_say_when_and_who(ingest: Connector, client: TestClient,
                                  admin: dict[str, str]) -> None:
    ingest.start("w1", customer={"id": "pat"})
    ingest.say("w1", "1", "Hello?", participant_id="pat")
    ingest.say("w1", "2", "Let me check.", role="agent")
    ingest.end("w1")
    draft = {"id": "instant", "kind": "response_time", "seconds": 0.001}
    (sample,) = backtest(client, admin, rule=draft)["samples"]
    turn = sample["segments"][0]
    assert turn["participant_id"] == "pat"
    assert sample["raised_at"] == pytest.approx(turn["at"] + 0.001)
    inverted = client.post("/v1/rules/backtest", headers=admin, json={
        "rule": draft, "since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})
    assert inverted.status_code == 422
    assert inverted.json()["details"][0]["loc"] == ["body", "until"]


def test_samples_of_a_score_rule_show_recorded_words(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    ingest.start("v1", recording="all")
    ingest.say("v1", "1", ANGRY[0])
    ingest.start("v2", recording="none")
    ingest.say("v2", "1", ANGRY[1])
    result = backtest(client, admin, rule_id="very-negative-turn")
    texts = {s["conversation_id"]: s["segments"][0]["text"] for s in result["samples"]}
    assert texts == {"v1": ANGRY[0], "v2": None}
    assert result["conversations_judged"] == 2  # scores are kept under every policy
