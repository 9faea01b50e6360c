"""Supervisors and agents: live lists, agent metrics, monitor streams, alert streams."""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from analytics.default_rules import DEFAULT_RULES
from contact_center.app import create_app
from contact_center.settings import Settings
from tests.conftest import (
    ANGRY,
    HAPPY,
    Connector,
    Users,
    auth,
    make_store,
    read_replies,
    refused,
)


@pytest.fixture
def manager(users: Users) -> str:
    return users.token("CallCenterManager", username="manager")


def escalate(ingest: Connector, cid: str, prefix: str = "a") -> list[dict]:
    return [ingest.say(cid, f"{prefix}{i}", text) for i, text in enumerate(ANGRY)]


def test_live_list_filters(ingest: Connector, client: TestClient, manager: str) -> None:
    ingest.start("c1", queue="billing", agent_id="ann", channel="chat")
    ingest.start("c2", queue="sales", agent_id="bob", channel="voice")
    ingest.start("c3", queue="billing", agent_id="bob", channel="chat")
    escalate(ingest, "c1")
    ingest.say("c2", "h1", HAPPY)

    def ids(**params) -> list[str]:
        r = client.get("/v1/live/conversations", headers=auth(manager), params=params)
        assert r.status_code == 200
        return [c["id"] for c in r.json()["conversations"]]

    assert ids() == ["c1", "c2", "c3"]  # worst sentiment first, unscored last
    assert ids(queue="billing") == ["c1", "c3"]
    assert ids(agent_id="bob") == ["c2", "c3"]
    assert ids(channel="voice") == ["c2"]
    assert ids(escalated="true") == ["c1"]
    assert ids(escalated="false") == ["c2", "c3"]
    assert ids(sentiment_below=-0.5) == ["c1"]
    assert client.get("/v1/live/conversations", headers=auth(manager),
                      params={"sentiment_below": 5}).status_code == 422

    c1 = client.get("/v1/live/conversations/c1", headers=auth(manager)).json()
    assert c1["escalated"] and c1["alerts"] >= 1
    # Its one alert, unresolved, at the highest severity of its hits.
    assert c1["alert"] is not None and c1["alert"]["status"] == "open"
    assert c1["alert"]["severity"] == "high"
    assert c1["counts"]["customer"] == 3
    assert c1["sentiment"]["window"] < -0.5 and c1["sentiment"]["start"] < -0.5
    assert c1["customer_waiting_seconds"] >= 0  # nobody answered the customer yet
    ingest.say("c1", "ag1", "I am sorry, let me fix that for you.", role="agent")
    c1 = client.get("/v1/live/conversations/c1", headers=auth(manager)).json()
    assert c1["customer_waiting_seconds"] is None
    assert c1["sentiment"]["last"]["ann"]["role"] == "agent"

    ingest.end("c3")
    assert ids() == ["c1", "c2"]
    assert client.get("/v1/live/conversations/c3", headers=auth(manager)).status_code == 404


def test_agent_metrics(ingest: Connector, client: TestClient, manager: str,
                       users: Users) -> None:
    users.token("Agent", agent_id="cy")  # an agent with nothing to do yet
    ingest.start("c1", agent_id="ann")
    ingest.start("c2", agent_id="ann")
    ingest.start("c3", agent_id="bob")
    escalate(ingest, "c1")
    ingest.say("c2", "h", HAPPY)
    agents = client.get("/v1/live/agents", headers=auth(manager)).json()["agents"]
    ann, bob, cy = agents
    assert ann["agent_id"] == "ann" and ann["conversations"] == 2
    # (Unresolved alerts: one per conversation in trouble, however many hits.)
    assert ann["open_alerts"] == 1 and ann["escalated_conversations"] == 1
    assert -1 < ann["average_customer_sentiment"] < 0.5
    assert bob == {"agent_id": "bob", "conversations": 1, "open_alerts": 0,
                   "escalated_conversations": 0, "average_customer_sentiment": None}
    assert cy["agent_id"] == "cy" and cy["conversations"] == 0


def heard(ws) -> dict:  # type: ignore[no-untyped-def]
    """The next message on a monitor socket, passing over other monitors coming and
    going (test_supervision.py checks those)."""
    while (message := ws.receive_json())["type"] in ("monitor.started", "monitor.ended"):
        pass
    return message  # type: ignore[no-any-return]


def test_monitor_catch_up_then_live_then_end(ingest: Connector, client: TestClient,
                                             manager: str, users: Users) -> None:
    ingest.start("m1")
    ingest.say("m1", "s1", "Hi, my order never arrived.")
    ingest.say("m1", "s2", "Sorry about that, let me check.", role="agent")
    other = users.token("CallCenterManager")
    url = "/v1/conversations/m1/monitor"
    with client.websocket_connect(url, headers=auth(manager)) as one, \
            client.websocket_connect(url, headers=auth(other)) as two:
        for ws in (one, two):
            catch_up = ws.receive_json()
            assert catch_up["type"] == "catch_up"
            assert [t["segment_id"] for t in catch_up["transcript"]] == ["s1", "s2"]
            assert all("compound" in t["scores"] for t in catch_up["transcript"])
            assert catch_up["conversation"]["id"] == "m1"
            assert ws.receive_json() == {"type": "live"}

        ingest.say("m1", "s3", "I want to", final=False)
        ingest.say("m1", "s3", ANGRY[0])
        ingest.say("m1", "s4", ANGRY[1])
        ingest.say("m1", "s5", ANGRY[2])
        for ws in (one, two):
            partial = heard(ws)
            assert partial["final"] is False and "scores" not in partial
            live = [heard(ws) for _ in range(5)]
            # Each rule's hit, as the newest hit of the conversation's one alert: the
            # second (high, above medium) escalates it.
            assert [(m["type"], m.get("segment_id") or m["alert"]["hits"][-1]["rule_id"])
                    for m in live] == [
                ("segment", "s3"), ("alert.raised", "very-negative-turn"), ("segment", "s4"),
                ("segment", "s5"), ("alert.escalated", "negative-sentiment")]
            assert live[1]["alert"]["id"] == live[4]["alert"]["id"]
        ingest.end("m1")
        for ws in (one, two):
            # The end resolves the alert, pushed before the end itself.
            resolved = heard(ws)
            assert resolved["type"] == "alert.resolved"
            assert resolved["alert"]["resolution"] == "conversation_ended"
            assert heard(ws)["type"] == "conversation.ended"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1000
    hub = client.app.state.hub  # type: ignore[attr-defined]
    assert hub.subscribers("conversation:m1") == 0


def test_monitor_refuses_unknown_and_ended(ingest: Connector, client: TestClient,
                                           manager: str) -> None:
    assert refused(client, "/v1/conversations/zz/monitor", auth(manager)).status_code == 404
    ingest.start("gone")
    ingest.end("gone")
    ended = refused(client, "/v1/conversations/gone/monitor", auth(manager))
    assert ended.status_code == 410 and ended.json()["code"] == "conversation_ended"


def test_alerts_reach_the_agent_and_supervisors_with_evidence(
        ingest: Connector, client: TestClient, manager: str, users: Users) -> None:
    ann = users.token("Agent", agent_id="ann")
    bob = users.token("Agent", agent_id="bob")
    ingest.start("x1", agent_id="ann")
    ingest.start("x2", agent_id="bob")
    ingest.start("x3", agent_id="ann")
    with client.websocket_connect("/v1/alerts/stream", headers=auth(ann)) as ann_ws, \
            client.websocket_connect("/v1/alerts/stream", headers=auth(bob)) as bob_ws, \
            client.websocket_connect("/v1/alerts/stream", headers=auth(manager)) as sup_ws:
        assert ann_ws.receive_json()["agent_id"] == "ann"
        bob_ws.receive_json()
        sup_ws.receive_json()
        replies = escalate(ingest, "x1")
        ingest.say("x2", "k1", "Let me speak to your supervisor right now")
        # Two hits on x1: the first raises its alert, the second (high) escalates it.
        raised, escalated = (ann_ws.receive_json() for _ in range(2))
        assert (raised["type"], escalated["type"]) == ("alert.raised", "alert.escalated")
        turn_alert, ann_alert = raised["alert"], escalated["alert"]
        assert turn_alert["id"] == ann_alert["id"]
        turn_hit, ann_hit = turn_alert["hits"][-1], ann_alert["hits"][-1]
        assert turn_hit["rule_id"] == "very-negative-turn"
        assert [s["segment_id"] for s in turn_hit["evidence"]["segments"]] == ["a0"]
        assert ann_alert["conversation_id"] == "x1" and ann_alert["agent_id"] == "ann"
        assert ann_alert["hits"] == [turn_hit, ann_hit]
        evidence = ann_hit["evidence"]
        assert ann_alert["evidence"] == evidence  # the lead hit: the highest severity's
        assert evidence["rule"]["id"] == "negative-sentiment"
        assert evidence["metric"] < -0.5
        assert [s["segment_id"] for s in evidence["segments"]] == ["a0", "a1"]
        assert [s["scores"] for s in evidence["segments"]] == [r["scores"] for r in replies[:2]]
        assert evidence["segments"][0]["text"] == ANGRY[0]

        seen = [sup_ws.receive_json()["alert"] for _ in range(3)]
        assert [a["id"] for a in seen[:2]] == [turn_alert["id"], ann_alert["id"]]
        assert [a["hits"][-1] for a in seen[:2]] == [turn_hit, ann_hit]
        assert seen[2]["hits"][-1]["rule_id"] == "escalation-phrases"
        assert seen[2]["hits"][-1]["evidence"]["matched"] == ["supervisor"]
        # Each agent gets their own alerts and nothing else: the next alert Ann sees is
        # her sentinel on x3, not Bob's on x2; Bob's first and only one is his.
        ingest.say("x3", "k1", "Let me speak to your manager")
        assert ann_ws.receive_json()["alert"]["conversation_id"] == "x3"
        bobs_alert = bob_ws.receive_json()["alert"]
        assert bobs_alert["conversation_id"] == "x2" and bobs_alert["id"] == seen[2]["id"]
    # Bob never saw Ann's alert; the REST list agrees.
    bobs = client.get("/v1/alerts", headers=auth(bob)).json()["alerts"]
    assert [a["conversation_id"] for a in bobs] == ["x2"]
    every = client.get("/v1/alerts", headers=auth(manager)).json()["alerts"]
    assert {a["conversation_id"] for a in every} == {"x1", "x2", "x3"}
    # Bob's alert is not crowded out of his list by everyone else's.
    for i in range(5):
        ingest.start(f"other{i}", agent_id="cy")
        ingest.say(f"other{i}", "1", "refund please")
    assert [a["conversation_id"] for a in client.get(
        "/v1/alerts", headers=auth(bob), params={"limit": 1}).json()["alerts"]] == ["x2"]


def next_update(ws) -> dict:  # type: ignore[no-untyped-def]
    """The next conversation update on the live board (agent metrics are skipped)."""
    while (message := ws.receive_json())["type"] == "agents.updated":
        pass
    assert message["type"] == "conversation.updated", message
    return message  # type: ignore[no-any-return]


def test_live_board_filters(ingest: Connector, client: TestClient, manager: str) -> None:
    ingest.start("f1", queue="billing")
    ingest.start("f2", queue="sales")
    with client.websocket_connect("/v1/live?escalated=false&queue=billing",
                                  headers=auth(manager)) as ws:
        assert [c["id"] for c in ws.receive_json()["conversations"]] == ["f1"]
        ingest.say("f2", "s1", "hello")  # other queue: not sent
        ingest.say("f1", "s1", ANGRY[0])  # escalates: one last update, then silence
        last = next_update(ws)["conversation"]
        assert last["id"] == "f1" and last["escalated"] is True
        ingest.say("f1", "s2", "still here")
        ingest.start("f3", queue="billing")
        assert next_update(ws)["conversation"]["id"] == "f3"


def test_live_board_snapshot_then_updates(ingest: Connector, client: TestClient,
                                          manager: str) -> None:
    ingest.start("b1")
    with client.websocket_connect("/v1/live", headers=auth(manager)) as ws:
        snapshot = ws.receive_json()
        assert snapshot["type"] == "snapshot"
        assert [c["id"] for c in snapshot["conversations"]] == ["b1"]
        ingest.say("b1", "s1", ANGRY[0])
        update = next_update(ws)
        assert update["conversation"]["counts"]["customer"] == 1
        ingest.end("b1")
        assert next_update(ws)["conversation"]["status"] == "ended"


def test_live_board_pushes_agent_metrics(ingest: Connector, client: TestClient,
                                         manager: str) -> None:
    ingest.start("g1", agent_id="ann")
    with client.websocket_connect("/v1/live", headers=auth(manager)) as ws:
        assert [a["agent_id"] for a in ws.receive_json()["agents"]] == ["ann"]
        ingest.start("g2", agent_id="bob")
        ingest.say("g2", "s1", ANGRY[0])
        while (message := ws.receive_json())["type"] != "agents.updated" or \
                len(message["agents"]) < 2 or message["agents"][1]["open_alerts"] == 0:
            pass
        bob = message["agents"][1]
        assert bob["agent_id"] == "bob" and bob["conversations"] == 1
        assert bob["average_customer_sentiment"] < -0.5


def test_one_alert_per_bad_patch_end_to_end(ingest: Connector, client: TestClient,
                                            users: Users) -> None:
    admin = auth(users.token("Admin"))
    rules = {"rules": [{"id": "neg", "kind": "sentiment", "below": -0.5, "consecutive": 2,
                        "clear_above": 0.0, "cooldown_seconds": 0}]}
    assert client.put("/v1/rules", headers=admin, json=rules).status_code == 200
    ingest.start("h1")
    texts = ANGRY * 3  # one long bad patch: nine angry turns
    for i, text in enumerate(texts):
        ingest.say("h1", f"s{i}", text)

    def alerts() -> int:  # the rule's hits (each a firing), on the conversation's alerts
        return sum(a["hit_count"] for a in client.get(
            "/v1/alerts", headers=admin, params={"conversation_id": "h1"}).json()["alerts"])

    assert alerts() == 1
    for i in range(5):  # recover above the clear threshold
        ingest.say("h1", f"h{i}", HAPPY)
    # (The customer recovered: that resolved the first alert.)
    [first] = client.get("/v1/alerts", headers=admin, params={"conversation_id": "h1"}).json()[
        "alerts"]
    assert (first["status"], first["resolution"]) == ("resolved", "recovered")
    for i, text in enumerate(ANGRY * 2):  # a window of 5 needs 4 to turn negative
        ingest.say("h1", f"t{i}", text)
    assert alerts() == 2

    rules["rules"][0]["cooldown_seconds"] = 3600
    client.put("/v1/rules", headers=admin, json=rules)
    for i in range(5):
        ingest.say("h1", f"j{i}", HAPPY)
    for i, text in enumerate(ANGRY * 2):
        ingest.say("h1", f"u{i}", text)
    assert alerts() == 2  # re-armed, but still cooling down


def test_rules_api_validates_and_rules_file_loads(client: TestClient, users: Users,
                                                  tmp_path, backend) -> None:
    admin = auth(users.token("Admin"))
    default = client.get("/v1/rules", headers=admin).json()["rules"]
    assert [r["id"] for r in default] == [r.id for r in DEFAULT_RULES.rules]
    bad = client.put("/v1/rules", headers=admin, json={"rules": [
        {"id": "x", "kind": "sentiment", "below": -0.2, "clear_above": -0.9}]})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    assert client.get("/v1/rules", headers=admin).json()["rules"] == default

    rules_file = tmp_path / "rules.json"
    rules_file.write_text('{"rules": [{"id": "only", "kind": "keyword", "phrases": ["x"]}]}')
    settings = Settings(database=tmp_path / "other.db", rules_file=rules_file)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    with TestClient(create_app(settings, make_store(backend, other_dir))) as other:
        token = Users(lambda: make_store(backend, other_dir)).token("Admin")
        loaded = other.get("/v1/rules", headers=auth(token)).json()["rules"]
        assert [r["id"] for r in loaded] == ["only"]


def _pushed(ws, until) -> list[dict]:  # type: ignore[no-untyped-def]
    """Messages from a live socket, one a frame or several (``?pushes=batched``), up to
    the first for which ``until`` holds; presence and agent metrics left out (they depend
    on which sockets were open when)."""
    seen: list[dict] = []
    while not (seen and until(seen[-1])):
        frame = ws.receive_json()
        seen += frame["pushes"] if frame["type"] == "pushes" else [frame]
    return [m for m in seen if m["type"] not in (
        "monitor.started", "monitor.ended", "agents.updated")]


def test_batched_pushes_carry_what_single_ones_do(ingest: Connector, client: TestClient,
                                                  manager: str) -> None:
    """``?pushes=batched`` on the board, a monitor and the alert stream: the messages of
    one a frame, in the same order, in ``pushes`` frames; any other value is refused."""
    streams = {"/v1/live": lambda m: m["type"] == "conversation.updated"
               and m["conversation"]["status"] == "ended",
               "/v1/conversations/p1/monitor": lambda m: m["type"] == "conversation.ended",
               "/v1/alerts/stream": lambda m: m["type"] == "alert.resolved"}
    ingest.start("p1")
    for url in streams:
        denied = refused(client, f"{url}?pushes=sometimes", auth(manager))
        assert denied.status_code == 422 and "pushes" in denied.json()["message"]
    with contextlib.ExitStack() as stack:
        sockets = {(url, mode): stack.enter_context(client.websocket_connect(
            f"{url}?pushes={mode}", headers=auth(manager)))
            for url in streams for mode in ("single", "batched")}
        openings = {"/v1/live": 1, "/v1/conversations/p1/monitor": 2, "/v1/alerts/stream": 1}
        for (url, mode), ws in sockets.items():
            said = [ws.receive_json() for _ in range(openings[url])]
            assert all(m["type"] != "pushes" for m in said)  # (openings come alone)
            assert said[0].get("pushes") == ("batched" if mode == "batched" else None)
        for i, text in enumerate([*ANGRY, *ANGRY]):  # sent at once: batches of several
            ingest.ws.send_json({"type": "segment", "conversation_id": "p1",
                                 "segment_id": f"s{i}", "role": "customer", "text": text})
        assert all(r["status"] == "accepted" for r in read_replies(ingest.ws, 6))
        assert ingest.end("p1")["status"] == "accepted"
        for url, until in streams.items():
            single = _pushed(sockets[(url, "single")], until)
            batched = _pushed(sockets[(url, "batched")], until)
            assert batched == single, url
            assert len(single) > 1
        monitor = sockets[("/v1/conversations/p1/monitor", "batched")]
        with pytest.raises(WebSocketDisconnect) as closed:
            monitor.receive_json()
        assert closed.value.code == 1000
