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
# The alert events pushed on an alert stream (docs/alerts.md).
EVENT_TYPES = ("alert.raised", "alert.updated", "alert.escalated", "alert.renotified",
               "alert.acknowledged", "alert.assigned", "alert.resolved", "alert.reopened")
# The hit fields an alert repeats at its top level: its lead hit's.
LEAD_FIELDS = ("rule_id", "rule_version", "rule_name", "kind", "reason", "evidence")


def next_event(ws: Any, seconds: float = 5.0) -> dict[str, Any]:
    """The next message on an alert stream, which must be an alert event
    (``{"type": "alert.…", "event_id": …, "alert": …}``), within ``seconds`` (a missing
    event fails the test instead of hanging it)."""

    async def get() -> Any:
        with anyio.fail_after(seconds):
            return await ws._send_rx.receive()

    message = ws.portal.call(get)
    assert message["type"] == "websocket.send", message
    body: dict[str, Any] = json.loads(message["text"])
    assert body["type"] in EVENT_TYPES, body
    assert isinstance(body["event_id"], int), body
    return body


def next_alert(ws: Any, seconds: float = 5.0, kind: str | None = None) -> dict[str, Any]:
    """The alert of the next event on an alert stream (of type ``kind`` if given): the
    whole alert, its newest hit last in ``hits``."""
    event = next_event(ws, seconds)
    assert kind is None or event["type"] == kind, event
    return event["alert"]  # type: ignore[no-any-return]


def hit(alert: dict[str, Any]) -> dict[str, Any]:
    """The alert's newest hit: the rule firing that the event was pushed for."""
    return alert["hits"][-1]  # type: ignore[no-any-return]


def leads(alert: dict[str, Any], found: dict[str, Any]) -> bool:
    """Whether the alert repeats this hit at its top level (it is the lead hit)."""
    return all(alert[k] == found[k] for k in LEAD_FIELDS)


def raised_by(streams: list[Any], rule_id: str, version: int, kind: str | None = None,
              severity: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next event on every stream raises a new alert of one hit, this rule's (of
    this kind and severity, if given): the alert and the hit."""
    alert = both(streams, "alert.raised")
    fired = hit(alert)
    assert alert["hit_count"] == 1 and leads(alert, fired)
    assert fired["rule_id"] == rule_id and fired["rule_version"] == version
    assert kind is None or fired["kind"] == kind
    assert severity is None or fired["severity"] == alert["severity"] == severity
    return alert, fired


@contextlib.contextmanager
def alert_streams(client: TestClient, *tokens: str) -> Iterator[list[Any]]:
    """Alert streams for each token, their greeting read."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for token in tokens:
            ws = stack.enter_context(client.websocket_connect("/v1/alerts/stream",
                                                              headers=auth(token)))
            greeting = ws.receive_json()
            assert greeting["type"] == "subscribed" and isinstance(greeting["event_id"], int)
            sockets.append(ws)
        yield sockets


def configure(client: TestClient, admin: str, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.put("/v1/rules", headers=auth(admin), json={"rules": list(rules)})
    assert r.status_code == 200, r.text
    return r.json()["rules"]  # type: ignore[no-any-return]


def both(streams: list[Any], kind: str | None = None) -> dict[str, Any]:
    """The alert of the next event on every stream (of type ``kind`` if given): the same
    event everywhere."""
    events = [next_event(ws) for ws in streams]
    assert all(e == events[0] for e in events), events
    assert kind is None or events[0]["type"] == kind, events[0]
    return events[0]["alert"]  # type: ignore[no-any-return]


def segments(found: dict[str, Any]) -> list[str]:
    """The segment ids of a hit's (or an alert's lead hit's) evidence."""
    return [s["segment_id"] for s in found["evidence"]["segments"]]


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
        alert, fired = raised_by(streams, "neg-turns", 1, "sentiment", "high")
        assert rule["version"] == 1
        assert alert["status"] == "open"
        assert alert["conversation_id"] == "s1" and alert["agent_id"] == "ann"
        evidence = fired["evidence"]
        assert segments(fired) == ["a1", "a2"]
        assert [s["scores"] for s in evidence["segments"]] == [a1["scores"], a2["scores"]]
        assert [s["text"] for s in evidence["segments"]] == [ANGRY[1], ANGRY[2]]
        assert evidence["metric"] == a2["scores"]["compound"]
        assert evidence["window"] == [a2["scores"]["compound"]]
        assert evidence["rule"] == rule
        assert evidence["matched"] == [] and evidence["signals"] == {}
        # Disarmed (hysteresis) until the turn climbs back to 0.0; then it fires again:
        # a second hit, joining the conversation's open alert.
        ingest.say("s1", "a3", ANGRY[0])
        ingest.say("s1", "a4", ANGRY[1])
        assert ingest.say("s1", "h1", HAPPY)["scores"]["compound"] >= 0.0
        ingest.say("s1", "a5", ANGRY[0])
        ingest.say("s1", "a6", ANGRY[1])
        again = both(streams, "alert.updated")
        assert again["id"] == alert["id"] and again["hit_count"] == 2
        assert [segments(h) for h in again["hits"]] == [["a1", "a2"], ["a5", "a6"]]
        assert hit(again)["rule_id"] == "neg-turns"


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
        _, fired = raised_by(streams, "drop", 1, "sentiment_drop", "medium")
        assert rule["version"] == 1
        assert segments(fired) == ["x"]
        assert fired["evidence"]["segments"][0]["scores"] == low
        assert fired["evidence"]["metric"] == low["compound"]
        assert fired["evidence"]["window"] == [low["compound"]]
        assert "peak" in fired["reason"]


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
        _, fired = raised_by(streams, "ask-boss", 1, "keyword", "medium")
        assert rule["version"] == 1
        assert segments(fired) == ["m1"]
        assert fired["evidence"]["matched"] == ["escalate", "supervisor"]
        assert fired["evidence"]["segments"][0]["scores"] == ack["scores"]
        assert fired["evidence"]["segments"][0]["text"] == \
            "Please ESCALATE this to a Supervisor now"
        assert fired["evidence"]["metric"] is None and fired["evidence"]["window"] is None


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
        _, fired = raised_by(streams, "leaving", 2, "signal", "high")
        assert segments(fired) == ["m1"]
        evidence = fired["evidence"]
        assert evidence["signals"] == {"churn": ["i am cancelling my subscription"]}
        assert evidence["matched"] == ["i am cancelling my subscription"]
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
        alert, fired = raised_by(streams, "conduct", 1, "agent_conduct", "medium")
        assert rule["version"] == 1
        assert alert["agent_id"] == "ann" and segments(fired) == ["m1"]
        segment = fired["evidence"]["segments"][0]
        assert segment["role"] == "agent" and segment["participant_id"] == "ann"
        assert segment["text"] == hostile_text and segment["scores"] == hostile["scores"]
        assert fired["evidence"]["metric"] == hostile["scores"]["compound"]
        assert fired["evidence"]["matched"] == []

        # Each further firing is a hit joining the conversation's open alert.
        swear = ingest.say("a1", "m2", "Damn, that is a great result, well done!", role="agent")
        assert swear["scores"]["compound"] >= -0.6  # words alone
        updated = both(streams, "alert.updated")
        fired = hit(updated)
        assert updated["id"] == alert["id"] and updated["hit_count"] == 2
        assert fired["rule_id"] == "conduct" and segments(fired) == ["m2"]
        assert fired["evidence"]["matched"] == ["damn"]
        assert fired["evidence"]["signals"] == {"profanity": ["damn"]}
        assert fired["evidence"]["metric"] is None

        ingest.say("a1", "m3", "Sir, please calm down.", role="agent")
        updated = both(streams, "alert.updated")
        fired = hit(updated)
        assert updated["id"] == alert["id"] and updated["hit_count"] == 3
        assert fired["rule_id"] == "conduct"
        assert segments(fired) == ["m3"] and fired["evidence"]["matched"] == ["calm down"]
        assert leads(updated, alert["hits"][0])  # the first hit still leads


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
        alert = next_alert(sup_ws, kind="alert.raised")
        failed = hit(alert)
        assert alert["hit_count"] == 1 and leads(alert, failed)
        assert failed["rule_id"] == "handover" and failed["rule_version"] == rule["version"]
        assert failed["kind"] == "human_requested" and failed["severity"] == "low"
        assert alert["conversation_id"] == "h1" and alert["agent_id"] is None
        assert segments(failed) == ["b1", "b2"]
        assert [s["role"] for s in failed["evidence"]["segments"]] == ["bot", "bot"]
        failures = failed["evidence"]["signals"]["bot_failure"]
        assert sorted(failures) == ["could you rephrase", "do not understand"]
        assert failed["evidence"]["signals"] == {"bot_failure": failures}
        # Once raised, the conversation is being handed over: no second hit (the next
        # event on the stream is h2's alert).
        ingest.say("h1", "c2", "Can I talk to a real person please")

        # The customer asks for a person.
        ingest.start("h2", agent_id=None)
        ingest.say("h2", "c1", NEUTRAL)
        ingest.say("h2", "c2", "Can I talk to a real person please")
        alert = next_alert(sup_ws, kind="alert.raised")
        asked = hit(alert)
        assert alert["hit_count"] == 1 and leads(alert, asked)
        assert asked["rule_id"] == "handover" and alert["conversation_id"] == "h2"
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
            alert = next_alert(ws, kind="alert.raised")
            sentinel = hit(alert)
            assert alert["hit_count"] == 1 and leads(alert, sentinel)
            assert sentinel["rule_id"] == "sentinel" and alert["conversation_id"] == "h3"
            assert alert["agent_id"] == "ann" and segments(sentinel) == ["c2"]


def test_response_time_rule(ingest: Connector, client: TestClient, admin: str, ann: str,
                            supervisor: str) -> None:
    (rule,) = configure(client, admin, {
        "id": "slow", "kind": "response_time", "seconds": 0.3, "cooldown_seconds": 0,
        "severity": "low"})
    ingest.start("t1", agent_id="ann")
    with alert_streams(client, ann, supervisor) as streams:
        ingest.say("t1", "s1", NEUTRAL)
        # Nothing else arrives: the alert comes on the clock.
        alert, fired = raised_by(streams, "slow", 1, "response_time", "low")
        assert rule["version"] == 1
        assert segments(fired) == ["s1"]
        assert alert["raised_at"] == fired["raised_at"] == alert["first_raised_at"]
        waited = fired["raised_at"] - fired["evidence"]["segments"][0]["at"]
        assert waited >= 0.3
        assert fired["evidence"]["metric"] == pytest.approx(waited)
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
        # The next event is s3's wait: a second hit, joining the open alert.
        updated = both(streams, "alert.updated")
        assert updated["id"] == alert["id"] and updated["hit_count"] == 2
        assert hit(updated)["rule_id"] == "slow" and segments(hit(updated)) == ["s3"]


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
        fired = hit(alert)
        assert alert["hit_count"] == 1 and leads(alert, fired)
        assert fired["rule_id"] == "slow" and fired["rule_version"] == 1
        assert fired["kind"] == "response_time" and alert["conversation_id"] == "r1"
        assert alert["agent_id"] == "ann"
        assert fired["raised_at"] > stopped_at and alert["raised_at"] == fired["raised_at"]
        assert segments(fired) == ["s1"]
        assert fired["evidence"]["segments"][0]["text"] == NEUTRAL
        assert fired["evidence"]["segments"][0]["scores"] == ack["scores"]
        assert fired["evidence"]["metric"] >= 1.0

    # It fired once for that wait (one hit), and a second restart knows it.
    with _client(settings, backend, tmp_path) as client:
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            Connector(ws).say("r1", "s2", "Still there?")  # the pipeline has ticked since
        assert [(a["id"], a["hit_count"], [segments(h) for h in a["hits"]]) for a in
                client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]] == [
            (alert["id"], 1, [["s1"]])]


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
        alert = both(streams, "alert.raised")
        fired = hit(alert)
        assert alert["hit_count"] == 1 and leads(alert, fired)
        assert fired["rule_id"] == "neg" and fired["rule_version"] == 1
        assert alert["conversation_id"] == "b1" and alert["agent_id"] == "ann"
        assert segments(fired) == ["a0", "a1"]
        assert [s["scores"] for s in fired["evidence"]["segments"]] == [
            first["scores"], second["scores"]]
        assert [s["text"] for s in fired["evidence"]["segments"]] == [ANGRY[0], ANGRY[1]]
        stored = client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]
        assert [(a["id"], a["hit_count"]) for a in stored] == [(alert["id"], 1)]
        assert stored[0]["hits"][0]["evidence"]["segments"] == fired["evidence"]["segments"]
        assert stored[0]["evidence"]["segments"] == fired["evidence"]["segments"]


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
        assert [[h["rule_id"] for h in a["hits"]] for a in
                client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]] == [["once"]]
        assert client.delete("/v1/rules/once", headers=auth(admin)).status_code == 204
        assert client.patch("/v1/rules/streak", headers=auth(admin),
                            json={"enabled": False}).status_code == 200
    with _client(settings, backend, tmp_path) as client:
        configure(client, admin, once, streak)  # back, and enabled again
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            Connector(ws).say("e1", "a1", ANGRY[1])
        (alert,) = client.get("/v1/alerts", headers=auth(admin)).json()["alerts"]
        # "once" starts afresh and fires (a second hit on the conversation's open alert);
        # "streak" forgot a0, so a1 alone is not a streak.
        assert alert["hit_count"] == 2
        assert [(h["rule_id"], segments(h)) for h in alert["hits"]] == [("once", ["a0"]),
                                                                        ("once", ["a1"])]


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
        alert = both(streams, "alert.raised")
        fired = hit(alert)
        assert alert["hit_count"] == 1 and leads(alert, fired)
        assert fired["rule_id"] == "slow-retention" and alert["queue"] == "retention"
        assert segments(fired) == ["s1"]
