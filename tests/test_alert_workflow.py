"""The alert workflow end to end, on every deployment (docs/alerts.md): one alert per
conversation in trouble, its lifecycle over the API, what the service resolves itself,
re-notification, and the alert stream resuming from a cursor."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from analytics.rules import RuleSet
from contact_center.settings import Settings
from tests.conftest import ANGRY, HAPPY, Connector, Users, auth, make_app, wait_for_partitions

INSULT = "You are useless idiots, this is a scam and I am furious!"
# Two rules without cooldown: a medium keyword and a high very negative turn.
RULES = RuleSet.model_validate({"rules": [
    {"id": "insult", "name": "Insult", "kind": "keyword", "phrases": ["idiots"],
     "severity": "medium", "cooldown_seconds": 0},
    {"id": "negative", "name": "Negative", "kind": "sentiment", "below": -0.3,
     "consecutive": 1, "metric": "turn", "severity": "high", "cooldown_seconds": 0}]})


def use_rules(client: TestClient, users: Users, rules: RuleSet) -> None:
    answer = client.put("/v1/rules", headers=auth(users.token("Admin")),
                        json=rules.model_dump(mode="json"))
    assert answer.status_code == 200, answer.text


def receive(ws: Any, seconds: float = 5.0) -> dict[str, Any]:
    """The next message on a socket within ``seconds`` (else the test fails, not hangs)."""

    async def get() -> Any:
        with anyio.fail_after(seconds):
            return await ws._send_rx.receive()

    message = ws.portal.call(get)
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])  # type: ignore[no-any-return]


def events_until(ws: Any, wanted: str, seconds: float = 5.0) -> list[dict[str, Any]]:
    """Alert events up to the first of type ``wanted``."""
    seen = []
    while not seen or seen[-1]["type"] != wanted:
        seen.append(receive(ws, seconds))
    return seen


def change(client: TestClient, alert: dict[str, Any], action: str, headers: dict[str, str],
           **body: Any) -> Any:
    return client.post(f"/v1/alerts/{alert['id']}/{action}", headers=headers,
                       json={"version": alert["version"]} | body)


def _client(settings: Settings, backend: str, tmp_path: Any, **update: Any) -> TestClient:
    return TestClient(make_app(settings.model_copy(update=update), backend, tmp_path))


def _started(client: TestClient, backend: str) -> None:
    if backend == "scaleout":
        wait_for_partitions(client)


@pytest.mark.app
def test_hits_join_one_alert_which_people_move_through_its_lifecycle(
        backend: str, settings: Settings, tmp_path: Any, users: Users) -> None:
    manager = auth(users.token("CallCenterManager", username="sam"))
    other = auth(users.token("CallCenterManager", username="kim"))
    agent = auth(users.token("Agent", agent_id="agent-1", username="ann"))
    stranger = auth(users.token("Agent", agent_id="agent-9"))
    connector = auth(users.token("Connector"))
    with _client(settings, backend, tmp_path) as client:
        _started(client, backend)
        use_rules(client, users, RULES)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws, \
                client.websocket_connect("/v1/alerts/stream", headers=manager) as stream:
            hello = receive(stream)
            assert hello["type"] == "subscribed" and isinstance(hello["event_id"], int)
            c = Connector(ws)
            c.start("c1")
            assert c.say("c1", "s0", "You idiots, please check my order")["status"] == \
                "accepted"
            raised = events_until(stream, "alert.raised")[-1]["alert"]
            assert raised["conversation_id"] == "c1" and raised["severity"] == "medium"
            assert c.say("c1", "s1", "Fine, whatever, you idiots")["status"] == "accepted"
            assert events_until(stream, "alert.updated")[-1]["alert"]["hit_count"] == 2
            assert c.say("c1", "s2", INSULT)["status"] == "accepted"
            escalated = events_until(stream, "alert.escalated")[-1]["alert"]
            assert escalated["id"] == raised["id"] and escalated["severity"] == "high"
            assert escalated["rule_id"] == "negative"  # the lead hit, at the top level

        listed = client.get("/v1/alerts?conversation_id=c1", headers=manager).json()["alerts"]
        assert len(listed) == 1, "hits on one conversation join one alert"
        alert = listed[0]
        assert alert["hit_count"] == 4 and len(alert["hits"]) == 4  # 2 turns, then 2 rules
        assert alert["severity"] == "high" and alert["notifications"] == 2
        assert alert["status"] == "open" and alert["first_raised_at"] <= alert["last_hit_at"]

        # Visibility: another agent does not learn it exists; its own agent sees it.
        assert client.get(f"/v1/alerts/{alert['id']}", headers=stranger).status_code == 404
        assert change(client, alert, "acknowledge", stranger).status_code == 404
        assert client.get(f"/v1/alerts/{alert['id']}", headers=agent).status_code == 200
        assert change(client, alert, "resolve", agent).status_code == 403  # not alerts-manage

        # The agent acknowledges; a change against the old version is refused.
        acked = change(client, alert, "acknowledge", agent)
        assert acked.status_code == 200, acked.text
        acked_alert = acked.json()
        assert acked_alert["status"] == "acknowledged" and acked_alert["acknowledged_by"] == "ann"
        assert acked_alert["version"] == alert["version"] + 1
        stale = change(client, alert, "resolve", manager)
        assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
        again = change(client, acked_alert, "acknowledge", other)
        assert again.status_code == 409 and again.json()["code"] == "invalid_transition"

        nobody = change(client, acked_alert, "assign", manager, username="nobody-here")
        assert nobody.status_code == 422 and nobody.json()["code"] == "unknown_user"
        assigned = change(client, acked_alert, "assign", manager, username="kim").json()
        assert assigned["assignee"] == "kim" and assigned["assigned_by"] == "sam"
        mine = client.get("/v1/alerts?assignee=kim", headers=manager).json()["alerts"]
        assert [a["id"] for a in mine] == [alert["id"]]

        resolved = change(client, assigned, "resolve", other, note="called back").json()
        assert resolved["status"] == "resolved" and resolved["resolution"] == "manual"
        assert resolved["resolved_by"] == "kim" and resolved["note"] == "called back"

        # A new hit after resolution opens a new alert; only the newest may be reopened.
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            c = Connector(ws)
            assert c.say("c1", "s9", INSULT)["status"] == "accepted"
        deadline = time.monotonic() + 5
        while len(client.get("/v1/alerts?conversation_id=c1",
                             headers=manager).json()["alerts"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        newest, first = client.get("/v1/alerts?conversation_id=c1",
                                   headers=manager).json()["alerts"]
        assert first["id"] == alert["id"] and newest["status"] == "open"
        older = change(client, first, "reopen", manager)
        assert older.status_code == 409 and older.json()["code"] == "invalid_transition"

        history = client.get(f"/v1/alerts/{alert['id']}", headers=manager).json()["history"]
        assert [h["type"] for h in history][-3:] == ["alert.acknowledged", "alert.assigned",
                                                      "alert.resolved"]
        assert [h["by"] for h in history][-3:] == ["ann", "sam", "kim"]
        assert all(h["from"] for h in history[-3:])  # the client's address
        ids = [h["event_id"] for h in history]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        # Filters and pages.
        resolved_only = client.get("/v1/alerts?status=resolved", headers=manager).json()
        assert [a["id"] for a in resolved_only["alerts"]] == [alert["id"]]
        by_rule = client.get("/v1/alerts?rule_id=insult", headers=manager).json()["alerts"]
        assert [a["id"] for a in by_rule] == [newest["id"], alert["id"]]
        page = client.get("/v1/alerts?limit=1", headers=manager).json()
        assert page["alerts"][0]["id"] == newest["id"] and page["next_cursor"] == newest["id"]
        rest = client.get(f"/v1/alerts?limit=1&cursor={page['next_cursor']}",
                          headers=manager).json()
        assert [a["id"] for a in rest["alerts"]] == [alert["id"]]


@pytest.mark.app
def test_the_end_of_a_conversation_resolves_its_alert_and_people_can_still_change_it(
        backend: str, settings: Settings, tmp_path: Any, users: Users) -> None:
    manager = auth(users.token("CallCenterManager", username="sam"))
    connector = auth(users.token("Connector"))
    with _client(settings, backend, tmp_path) as client:
        _started(client, backend)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws, \
                client.websocket_connect("/v1/alerts/stream", headers=manager) as stream:
            receive(stream)
            c = Connector(ws)
            c.start("c2")
            c.say("c2", "s1", INSULT)
            events_until(stream, "alert.raised")
            assert c.end("c2")["status"] == "accepted"
            resolved = events_until(stream, "alert.resolved")[-1]["alert"]
            assert resolved["resolution"] == "conversation_ended"
            assert resolved["resolved_by"] is None

            # After the end, the API node changes the stored alert, and the stream says so.
            reopened = change(client, resolved, "reopen", manager)
            assert reopened.status_code == 200, reopened.text
            assert reopened.json()["status"] == "open"
            pushed = events_until(stream, "alert.reopened")[-1]
            assert pushed["alert"]["version"] == reopened.json()["version"]
            done = change(client, reopened.json(), "resolve", manager, note="followed up")
            assert done.status_code == 200 and done.json()["resolved_by"] == "sam"
            assert events_until(stream, "alert.resolved")[-1]["alert"]["note"] == "followed up"


@pytest.mark.app
def test_a_recovered_customer_resolves_the_alert_and_an_unacknowledged_one_renotifies(
        backend: str, settings: Settings, tmp_path: Any, users: Users) -> None:
    manager = auth(users.token("CallCenterManager"))
    connector = auth(users.token("Connector"))
    # Happy turns raise nothing under these rules; re-notify after 1 s.
    with _client(settings, backend, tmp_path, alert_renotify_seconds={"high": 1.0},
                 alert_recovered_turns=2) as client:
        _started(client, backend)
        use_rules(client, users, RULES)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws, \
                client.websocket_connect("/v1/alerts/stream", headers=manager) as stream:
            receive(stream)
            c = Connector(ws)
            c.start("c3")
            c.say("c3", "s1", ANGRY[0])
            raised = events_until(stream, "alert.raised")[-1]["alert"]
            renotified = events_until(stream, "alert.renotified", seconds=5)[-1]["alert"]
            assert renotified["id"] == raised["id"] and renotified["notifications"] == 2
            for i in range(6):  # the rolling window climbs back above the threshold
                c.say("c3", f"h{i}", HAPPY)
            recovered = events_until(stream, "alert.resolved")[-1]["alert"]
            assert recovered["resolution"] == "recovered"


@pytest.mark.app
def test_a_client_resumes_from_its_cursor_exactly_once_or_resyncs(
        backend: str, settings: Settings, tmp_path: Any, users: Users) -> None:
    manager = auth(users.token("CallCenterManager"))
    agent = auth(users.token("Agent", agent_id="agent-2"))
    connector = auth(users.token("Connector"))
    with _client(settings, backend, tmp_path) as client:
        _started(client, backend)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            c = Connector(ws)
            with client.websocket_connect("/v1/alerts/stream", headers=manager) as stream:
                receive(stream)
                c.start("r1")
                c.say("r1", "s1", INSULT)
                cursor = events_until(stream, "alert.raised")[-1]["event_id"]
            # Missed while away: another conversation's alert (agent-2's), an end.
            c.start("r2", agent_id="agent-2")
            c.say("r2", "s1", INSULT)
            c.end("r1")
            deadline = time.monotonic() + 5
            while not any(a["status"] == "resolved" for a in client.get(
                    "/v1/alerts", headers=manager).json()["alerts"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            with client.websocket_connect(f"/v1/alerts/stream?after={cursor}",
                                          headers=manager) as stream:
                hello = receive(stream)
                missed = events_until(stream, "alert.resolved")
                ids = [e["event_id"] for e in missed]
                assert ids == sorted(set(ids)) and ids[0] > cursor
                assert {e["alert"]["conversation_id"] for e in missed} == {"r1", "r2"}
                assert hello["event_id"] >= ids[-1]
                c.say("r2", "s2", INSULT)  # then live, no repeat
                live = receive(stream)
                assert live["event_id"] > ids[-1]
            # An agent resuming gets only what it may see.
            with client.websocket_connect(f"/v1/alerts/stream?after={cursor}",
                                          headers=agent) as stream:
                receive(stream)
                first = receive(stream)
                assert first["alert"]["conversation_id"] == "r2"
            # A cursor this deployment never gave: a snapshot of the unresolved alerts.
            with client.websocket_connect("/v1/alerts/stream?after=999999999",
                                          headers=manager) as stream:
                receive(stream)
                snapshot = receive(stream)
                assert snapshot["type"] == "resync"
                assert [a["conversation_id"] for a in snapshot["alerts"]] == ["r2"]
