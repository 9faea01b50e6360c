"""Every rule kind end to end: a rule set over the API, events on the ingest socket, the
alert on the conversation's agent's stream and on a supervisor's, with its evidence."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from analytics import signals
from contact_center.settings import Settings
from tests.conftest import ANGRY, HAPPY, Connector, Users, auth, make_app

NEUTRAL = "Hello, I have a question about my bill"


def next_alert(ws: Any, seconds: float = 5.0) -> dict[str, Any]:
    """The next message on an alert stream, which must be an alert, within ``seconds``
    (a missing alert fails the test instead of hanging it)."""

    async def get() -> Any:
        with anyio.fail_after(seconds):
            return await ws._send_rx.receive()

    message = ws.portal.call(get)
    assert message["type"] == "websocket.send", message
    body = json.loads(message["text"])
    assert body["type"] == "alert", body
    return body["alert"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def alert_streams(client: TestClient, *tokens: str) -> Iterator[list[Any]]:
    """Alert streams for each token, their greeting read."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for token in tokens:
            ws = stack.enter_context(client.websocket_connect("/v1/alerts/stream",
                                                              headers=auth(token)))
            assert ws.receive_json()["type"] == "subscribed"
            sockets.append(ws)
        yield sockets


def configure(client: TestClient, admin: str, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.put("/v1/rules", headers=auth(admin), json={"rules": list(rules)})
    assert r.status_code == 200, r.text
    return r.json()["rules"]  # type: ignore[no-any-return]


def both(streams: list[Any]) -> dict[str, Any]:
    """The next alert on every stream: the same alert everywhere."""
    alerts = [next_alert(ws) for ws in streams]
    assert all(a == alerts[0] for a in alerts), alerts
    return alerts[0]


def segments(alert: dict[str, Any]) -> list[str]:
    return [s["segment_id"] for s in alert["evidence"]["segments"]]


@pytest.fixture
def ann(users: Users) -> str:
    return users.token("Agent", agent_id="ann")


@pytest.fixture
def supervisor(users: Users) -> str:
    return users.token("CallCenterManager")


@pytest.fixture
def admin(users: Users) -> str:
    return users.token("Admin")


def test_sentiment_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                        supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "neg-turns", "kind": "sentiment", "metric": "turn", "below": -0.5,
        "consecutive": 2, "clear_above": 0.0, "cooldown_seconds": 0, "severity": "high"})
    ingest.start("s1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        first = ingest.say("s1", "a0", ANGRY[0])
        assert first["scores"]["compound"] < -0.5
        # A neutral customer turn breaks the streak: a0 is not counted with a1 and a2.
        assert ingest.say("s1", "n1", NEUTRAL)["scores"]["compound"] >= -0.5
        a1 = ingest.say("s1", "a1", ANGRY[1])
        assert a1["scores"]["compound"] < -0.5
        # An agent turn, however negative, neither counts nor breaks the streak.
        agent = ingest.say("s1", "g1", ANGRY[2], role="agent")
        assert agent["scores"]["compound"] < -0.5
        a2 = ingest.say("s1", "a2", ANGRY[2])
        assert a2["scores"]["compound"] < -0.5
        alert = both(streams)
        assert alert["rule_id"] == "neg-turns" and alert["rule_version"] == rule["version"] == 1
        assert alert["kind"] == "sentiment" and alert["severity"] == "high"
        assert alert["conversation_id"] == "s1" and alert["agent_id"] == "ann"
        evidence = alert["evidence"]
        assert segments(alert) == ["a1", "a2"]
        assert [s["scores"] for s in evidence["segments"]] == [a1["scores"], a2["scores"]]
        assert [s["text"] for s in evidence["segments"]] == [ANGRY[1], ANGRY[2]]
        assert evidence["metric"] == a2["scores"]["compound"]
        assert evidence["window"] == [a2["scores"]["compound"]]
        assert evidence["rule"] == rule
        assert evidence["matched"] == [] and evidence["signals"] == {}
        # Disarmed (hysteresis) until the turn climbs back to 0.0; then it fires again.
        ingest.say("s1", "a3", ANGRY[0])
        ingest.say("s1", "a4", ANGRY[1])
        assert ingest.say("s1", "h1", HAPPY)["scores"]["compound"] >= 0.0
        ingest.say("s1", "a5", ANGRY[0])
        ingest.say("s1", "a6", ANGRY[1])
        assert segments(both(streams)) == ["a5", "a6"]


def test_sentiment_drop_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                             supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "drop", "kind": "sentiment_drop", "metric": "turn", "drop": 1.0,
        "reference": "peak", "min_turns": 2, "cooldown_seconds": 0, "severity": "medium"})
    ingest.start("d1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        peak = ingest.say("d1", "p", HAPPY)["scores"]["compound"]
        assert peak > 0.9
        # A fall of under 1.0 from the peak raises nothing.
        neutral = ingest.say("d1", "n", NEUTRAL)["scores"]["compound"]
        assert 0 < peak - neutral <= 1.0
        low = ingest.say("d1", "x", ANGRY[0])["scores"]
        assert peak - low["compound"] > 1.0
        alert = both(streams)
        assert alert["rule_id"] == "drop" and alert["rule_version"] == rule["version"] == 1
        assert alert["kind"] == "sentiment_drop" and alert["severity"] == "medium"
        assert segments(alert) == ["x"]
        assert alert["evidence"]["segments"][0]["scores"] == low
        assert alert["evidence"]["metric"] == low["compound"]
        assert alert["evidence"]["window"] == [low["compound"]]
        assert "peak" in alert["reason"]


def test_keyword_rule_negation_aware(ingest: Connector, client: TestClient, admin: str,
                                     ann: str, supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "ask-boss", "kind": "keyword", "phrases": ["supervisor", "escalate"],
        "negation_aware": True, "cooldown_seconds": 0, "severity": "medium"})
    ingest.start("k1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        ingest.say("k1", "n1", "I do not want a supervisor, just help")  # negated
        ingest.say("k1", "n2", "I am not going to escalate this")  # negated
        ingest.say("k1", "g1", "I can get a supervisor if you like", role="agent")  # role
        ingest.say("k1", "n3", "The supervisors were kind")  # not the whole word
        ack = ingest.say("k1", "m1", "Please ESCALATE this to a Supervisor now")
        alert = both(streams)
        assert alert["rule_id"] == "ask-boss" and alert["rule_version"] == rule["version"] == 1
        assert alert["kind"] == "keyword" and alert["severity"] == "medium"
        assert segments(alert) == ["m1"]
        assert alert["evidence"]["matched"] == ["escalate", "supervisor"]
        assert alert["evidence"]["segments"][0]["scores"] == ack["scores"]
        assert alert["evidence"]["segments"][0]["text"] == \
            "Please ESCALATE this to a Supervisor now"
        assert alert["evidence"]["metric"] is None and alert["evidence"]["window"] is None


def test_signal_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                     supervisor: str) -> None:
    definition = {"id": "leaving", "kind": "signal", "any_of": ["churn", "threat"],
                  "sentiment_below": 0.5, "cooldown_seconds": 0, "severity": "low"}
    configure(client, admin, definition)
    (rule,) = configure(client, admin, definition | {"severity": "high"})
    assert rule["version"] == 2
    ingest.start("g1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        # Churn words in a happy turn: the sentiment gate holds.
        happy = ingest.say("g1", "n1", "Great news, I am switching to your premium plan, "
                                       "thank you so much, love it!")
        assert happy["scores"]["compound"] >= 0.5
        ingest.say("g1", "n2", "I will not cancel my account, I just want help")  # negated
        ingest.say("g1", "n3", "You are an idiot, this is damn stupid")  # other signals
        ingest.say("g1", "n4", "I am cancelling my subscription", role="agent")  # role
        text = "Your service is useless and I am cancelling my subscription"
        ack = ingest.say("g1", "m1", text)
        assert ack["scores"]["compound"] < 0.5
        alert = both(streams)
        assert alert["rule_id"] == "leaving" and alert["rule_version"] == 2
        assert alert["kind"] == "signal" and alert["severity"] == "high"
        assert segments(alert) == ["m1"]
        evidence = alert["evidence"]
        assert evidence["signals"] == {"churn": ["cancelling my subscription"]}
        assert evidence["matched"] == ["cancelling my subscription"]
        assert evidence["metric"] == ack["scores"]["compound"]
        assert evidence["segments"][0]["text"] == text
        assert evidence["rule"]["version"] == 2 and evidence["rule"]["severity"] == "high"


def test_agent_conduct_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                            supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "conduct", "kind": "agent_conduct", "below": -0.6, "profanity": True,
        "phrases": ["calm down"], "cooldown_seconds": 0, "severity": "medium"})
    ingest.start("a1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        polite = ingest.say("a1", "n1", "I am sorry, let me fix that for you.", role="agent")
        assert polite["scores"]["compound"] >= -0.6
        ingest.say("a1", "n2", "You are an idiot, this is damn stupid")  # the customer
        hostile_text = "That is a stupid, terrible, awful question, I hate this!"
        hostile = ingest.say("a1", "m1", hostile_text, role="agent")
        assert hostile["scores"]["compound"] < -0.6
        alert = both(streams)
        assert alert["rule_id"] == "conduct" and alert["rule_version"] == rule["version"] == 1
        assert alert["kind"] == "agent_conduct" and alert["severity"] == "medium"
        assert alert["agent_id"] == "ann" and segments(alert) == ["m1"]
        segment = alert["evidence"]["segments"][0]
        assert segment["role"] == "agent" and segment["participant_id"] == "ann"
        assert segment["text"] == hostile_text and segment["scores"] == hostile["scores"]
        assert alert["evidence"]["metric"] == hostile["scores"]["compound"]
        assert alert["evidence"]["matched"] == []

        swear = ingest.say("a1", "m2", "Damn, that is a great result, well done!", role="agent")
        assert swear["scores"]["compound"] >= -0.6  # words alone
        alert = both(streams)
        assert segments(alert) == ["m2"]
        assert alert["evidence"]["matched"] == ["damn"]
        assert alert["evidence"]["signals"] == {"profanity": ["damn"]}
        assert alert["evidence"]["metric"] is None

        ingest.say("a1", "m3", "Sir, please calm down.", role="agent")
        alert = both(streams)
        assert segments(alert) == ["m3"] and alert["evidence"]["matched"] == ["calm down"]


def test_human_requested_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                              supervisor: str) -> None:
    # A bot conversation has no agent, so no agent sees its hand-over alerts; a keyword
    # sentinel shows what Ann's stream receives once the conversation is hers.
    rule, _ = configure(
        client, admin,
        {"id": "handover", "kind": "human_requested", "bot_failures": 2,
         "cooldown_seconds": 0, "severity": "low"},
        {"id": "sentinel", "kind": "keyword", "phrases": ["sentinel"], "cooldown_seconds": 0})
    with alert_streams(client, ann, supervisor) as (ann_ws, sup_ws):
        # The bot fails twice: one hand-over alert with both failures as evidence.
        assert ingest.start("h1", agent_id=None)["status"] == "accepted"
        ingest.say("h1", "b1", "Sorry, I did not understand that.", role="bot")
        ingest.say("h1", "c1", "Could you check my order status?")
        ingest.say("h1", "b2", "Sorry, I do not understand. Could you rephrase?", role="bot")
        failed = next_alert(sup_ws)
        assert failed["rule_id"] == "handover" and failed["rule_version"] == rule["version"]
        assert failed["kind"] == "human_requested" and failed["severity"] == "low"
        assert failed["conversation_id"] == "h1" and failed["agent_id"] is None
        assert segments(failed) == ["b1", "b2"]
        assert [s["role"] for s in failed["evidence"]["segments"]] == ["bot", "bot"]
        failures = failed["evidence"]["signals"]["bot_failure"]
        assert sorted(failures) == ["could you rephrase", "do not understand"]
        assert failed["evidence"]["signals"] == {"bot_failure": failures}
        # Once raised, the conversation is being handed over: no second alert.
        ingest.say("h1", "c2", "Can I talk to a real person please")

        # The customer asks for a person.
        ingest.start("h2", agent_id=None)
        ingest.say("h2", "c1", NEUTRAL)
        ingest.say("h2", "c2", "Can I talk to a real person please")
        asked = next_alert(sup_ws)
        assert asked["rule_id"] == "handover" and asked["conversation_id"] == "h2"
        assert segments(asked) == ["c2"]
        request = signals.detect("Can I talk to a real person please")["human_request"]
        assert request[0] == "talk to a real person"
        assert asked["evidence"]["matched"] == request
        assert asked["evidence"]["signals"] == {"human_request": request}

        # Handed over to Ann: asking for a person raises nothing now.
        ingest.start("h3", agent_id=None)
        assert ingest.send({"type": "bot.handover", "conversation_id": "h3",
                            "agent_id": "ann"})["status"] == "accepted"
        ingest.say("h3", "c1", "Can I talk to a real person please")
        ingest.say("h3", "c2", "sentinel")
        for ws in (ann_ws, sup_ws):
            sentinel = next_alert(ws)
            assert sentinel["rule_id"] == "sentinel" and sentinel["conversation_id"] == "h3"
            assert sentinel["agent_id"] == "ann" and segments(sentinel) == ["c2"]


def test_response_time_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                            supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "slow", "kind": "response_time", "seconds": 0.3, "cooldown_seconds": 0,
        "severity": "low"})
    ingest.start("t1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        ingest.say("t1", "s1", NEUTRAL)
        # Nothing else arrives: the alert comes on the clock.
        alert = both(streams)
        assert alert["rule_id"] == "slow" and alert["rule_version"] == rule["version"] == 1
        assert alert["kind"] == "response_time" and alert["severity"] == "low"
        assert segments(alert) == ["s1"]
        waited = alert["raised_at"] - alert["evidence"]["segments"][0]["at"]
        assert waited >= 0.3
        assert alert["evidence"]["metric"] == pytest.approx(waited)
        time.sleep(0.4)  # the same wait goes on: it fired once for it
        ingest.say("t1", "a1", "Happy to help you with that today!", role="agent")

        # A wait answered in time raises nothing (both events sent at once).
        ingest.ws.send_json({"type": "segment", "conversation_id": "t1", "segment_id": "s2",
                             "role": "customer", "text": "Could you check my order status?"})
        ingest.ws.send_json({"type": "segment", "conversation_id": "t1", "segment_id": "a2",
                             "role": "agent", "text": "One moment please."})
        assert [ingest.ws.receive_json()["status"] for _ in range(2)] == ["accepted"] * 2
        time.sleep(0.5)
        ingest.say("t1", "s3", "Are you there?")
        assert segments(both(streams)) == ["s3"]


def _client(settings: Settings, backend: str, tmp_path: Path) -> TestClient:
    return TestClient(make_app(settings, backend, tmp_path))


@pytest.mark.app
def test_response_time_fires_after_a_restart(settings: Settings, backend: str,
                                             tmp_path: Path, users: Users, admin: str,
                                             connector_token: str) -> None:
    with _client(settings, backend, tmp_path) as client:
        configure(client, admin, {"id": "slow", "kind": "response_time", "seconds": 1.0,
                                  "cooldown_seconds": 0})
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            ingest = Connector(ws)
            ingest.start("r1", agent_id="ann")
            ack = ingest.say("r1", "s1", NEUTRAL)
            assert ack["status"] == "accepted"
        said_at = time.time()
        assert client.get("/v1/alerts", headers=auth(admin)).json()["alerts"] == []
    stopped_at = time.time()
    assert stopped_at - said_at < 0.9, "the app took too long to stop for this test"
    time.sleep(max(0.0, said_at + 1.1 - time.time()))  # overdue while nobody runs

    with _client(settings, backend, tmp_path) as client:
        deadline = time.time() + 5
        while not (alerts := client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]):
            assert time.time() < deadline, "the overdue alert never fired after the restart"
            time.sleep(0.05)
        (alert,) = alerts
        assert alert["rule_id"] == "slow" and alert["rule_version"] == 1
        assert alert["kind"] == "response_time" and alert["conversation_id"] == "r1"
        assert alert["agent_id"] == "ann"
        assert alert["raised_at"] > stopped_at
        assert segments(alert) == ["s1"]
        assert alert["evidence"]["segments"][0]["text"] == NEUTRAL
        assert alert["evidence"]["segments"][0]["scores"] == ack["scores"]
        assert alert["evidence"]["metric"] >= 1.0

    # It fired once for that wait, and a second restart knows it.
    with _client(settings, backend, tmp_path) as client:
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            Connector(ws).say("r1", "s2", "Still there?")  # the pipeline has ticked since
        assert [a["id"] for a in client.get("/v1/alerts", headers=auth(admin)).json()[
            "alerts"]] == [alert["id"]]


@pytest.mark.app
def test_breach_streak_survives_a_restart(settings: Settings, backend: str, tmp_path: Path,
                                          users: Users, admin: str, ann: str, supervisor: str,
                                          connector_token: str) -> None:
    with _client(settings, backend, tmp_path) as client:
        configure(client, admin, {"id": "neg", "kind": "sentiment", "metric": "turn",
                                  "below": -0.5, "consecutive": 2, "clear_above": 0.0,
                                  "cooldown_seconds": 0})
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            ingest = Connector(ws)
            ingest.start("b1", agent_id="ann")
            first = ingest.say("b1", "a0", ANGRY[0])
            assert first["scores"]["compound"] < -0.5
        assert client.get("/v1/alerts", headers=auth(admin)).json()["alerts"] == []

    with _client(settings, backend, tmp_path) as client, \
            alert_streams(client, ann, supervisor) as streams, \
            client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
        second = Connector(ws).say("b1", "a1", ANGRY[1])
        assert second["scores"]["compound"] < -0.5
        alert = both(streams)
        assert alert["rule_id"] == "neg" and alert["rule_version"] == 1
        assert alert["conversation_id"] == "b1" and alert["agent_id"] == "ann"
        assert segments(alert) == ["a0", "a1"]
        assert [s["scores"] for s in alert["evidence"]["segments"]] == [
            first["scores"], second["scores"]]
        assert [s["text"] for s in alert["evidence"]["segments"]] == [ANGRY[0], ANGRY[1]]
        stored = client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]
        assert [a["id"] for a in stored] == [alert["id"]]
        assert stored[0]["evidence"]["segments"] == alert["evidence"]["segments"]


def test_rule_edits_reach_the_stored_state(settings: Settings, backend: str, tmp_path: Path,
                                           admin: str, connector_token: str) -> None:
    """A delete, a disable and a change of kind are saved with the conversations' rule
    state at once, so a restart does not bring back what the edit dropped."""
    once = {"id": "once", "kind": "sentiment", "metric": "turn", "below": -0.5,
            "consecutive": 1, "clear_above": 0.9, "cooldown_seconds": 0}
    streak = {"id": "streak", "kind": "sentiment", "metric": "turn", "below": -0.5,
              "consecutive": 2, "clear_above": 0.0, "cooldown_seconds": 0}
    with _client(settings, backend, tmp_path) as client:
        configure(client, admin, once, streak)
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            ingest = Connector(ws)
            ingest.start("e1")
            ingest.say("e1", "a0", ANGRY[0])  # "once" fires and disarms; "streak" is at 1
        assert [a["rule_id"] for a in
                client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]] == ["once"]
        assert client.delete("/v1/rules/once", headers=auth(admin)).status_code == 204
        assert client.patch("/v1/rules/streak", headers=auth(admin),
                            json={"enabled": False}).status_code == 200
    with _client(settings, backend, tmp_path) as client:
        configure(client, admin, once, streak)  # back, and enabled again
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            Connector(ws).say("e1", "a1", ANGRY[1])
        alerts = client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]
        # "once" starts afresh and fires; "streak" forgot a0, so a1 alone is not a streak.
        assert [(a["rule_id"], segments(a)) for a in alerts] == [("once", ["a1"]),
                                                                 ("once", ["a0"])]


def test_a_transfer_into_scope_starts_the_response_clock(
        ingest: Connector, client: TestClient, admin: str, supervisor: str) -> None:
    configure(client, admin, {"id": "slow-retention", "kind": "response_time",
                              "seconds": 0.3, "scope": {"queues": ["retention"]}})
    with alert_streams(client, supervisor) as streams:
        ingest.start("x1", queue="billing")
        ingest.say("x1", "s1", NEUTRAL)
        time.sleep(0.5)  # out of scope: nothing yet
        ingest.send({"type": "conversation.transferred", "conversation_id": "x1",
                     "to_queue": "retention"})
        alert = both(streams)
        assert alert["rule_id"] == "slow-retention" and alert["queue"] == "retention"
        assert segments(alert) == ["s1"]
