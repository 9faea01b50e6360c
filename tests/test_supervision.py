"""Governed supervision on every deployment (docs/protocol.md#supervision): who monitors a
conversation, whisper to its agent, barge in and write to the customer, leave; through a
connector socket that takes pushes, the agent's alert stream and the monitors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contact_center.settings import Settings
from monitoring.presence import Listener
from monitoring.presence.redis import RedisPresence
from tests.conftest import (
    ANGRY,
    Connector,
    RedisServer,
    Stored,
    Users,
    auth,
    make_app,
    namespace,
    refused,
    wait_for_partitions,
)
from tests.test_alert_workflow import receive

NOTE = "Offer the retention discount now"
UNKEPT = "Do not promise a refund on this one"
WORDS = ("Hello, I am the team lead; I will gladly sort this out for you today, thank you "
         "for your patience.")
PRESENCE = ("monitor.started", "monitor.ended")


class Desk:
    """An agent desktop's connector socket, taking pushes: replies to its events, and the
    pushes that come between them."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.hello = receive(ws)
        self.pushes: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        self.ws.send_json(event)
        while (message := receive(self.ws))["type"] not in ("ack", "error", "replies"):
            self.pushes.append(message)
        if message["type"] == "replies":  # (?replies=batched: one event, one reply)
            [message] = message["replies"]
        return message

    def start(self, cid: str, **conversation: Any) -> dict[str, Any]:
        return self.send({"type": "conversation.started", "conversation": {
            "id": cid, "agent_id": "agent-1", "recording": "all"} | conversation})

    def say(self, cid: str, sid: str, text: str, role: str = "customer") -> dict[str, Any]:
        return self.send({"type": "segment", "conversation_id": cid, "segment_id": sid,
                          "role": role, "text": text})

    def push(self) -> dict[str, Any]:
        return self.pushes.pop(0) if self.pushes else receive(self.ws)


def until(ws: Any, wanted: str) -> dict[str, Any]:
    """The next message of type ``wanted`` on a socket (others are passed over)."""
    while (message := receive(ws))["type"] != wanted:
        pass
    return message


def _desk_url() -> str:
    return "/v1/ingest?outbound=true"


@pytest.fixture
def sam(users: Users) -> dict[str, str]:
    return auth(users.token("CallCenterManager", username="sam"))


@pytest.fixture
def kim(users: Users) -> dict[str, str]:
    return auth(users.token("CallCenterManager", username="kim"))


@pytest.mark.parametrize("replies", ["single", "batched"])
def test_a_whisper_reaches_the_agent_alone_and_is_kept_as_a_note(
        client: TestClient, connector_token: str, users: Users, sam: dict[str, str],
        kim: dict[str, str], stored: Stored, replies: str) -> None:
    ann = auth(users.token("Agent", agent_id="agent-1", username="ann"))
    bob = auth(users.token("Agent", agent_id="agent-9", username="bob"))
    with client.websocket_connect(f"{_desk_url()}&replies={replies}",
                                  headers=auth(connector_token)) as ws, \
            client.websocket_connect("/v1/alerts/stream", headers=ann) as ann_ws, \
            client.websocket_connect("/v1/alerts/stream", headers=bob) as bob_ws, \
            client.websocket_connect("/v1/alerts/stream", headers=kim) as kim_ws:
        desk = Desk(ws)
        assert desk.hello["outbound"] is True
        for stream in (ann_ws, bob_ws, kim_ws):
            assert receive(stream)["type"] == "subscribed"
        assert desk.start("w1")["status"] == "accepted"
        assert desk.start("w9", agent_id="agent-9", recording="customer")["status"] == \
            "accepted"
        assert desk.say("w1", "s1", "Where is my refund?")["status"] == "accepted"
        with client.websocket_connect("/v1/conversations/w1/monitor", headers=kim) as mon:
            assert receive(mon)["type"] == "catch_up" and receive(mon)["type"] == "live"
            sent = client.post("/v1/conversations/w1/whisper", headers=sam,
                               json={"text": NOTE, "request_id": "r1"})
            assert sent.status_code == 200, sent.text
            assert sent.json()["status"] == "accepted"
            whisper_id = sent.json()["whisper_id"]
            pushed = desk.push()
            assert pushed == {"type": "whisper", "conversation_id": "w1",
                              "whisper_id": whisper_id, "agent_id": "agent-1", "by": "sam",
                              "text": NOTE, "at": pushed["at"]}
            assert receive(ann_ws) == pushed  # the agent's own stream
            assert until(mon, "whisper") == pushed  # other supervisors see it
            again = client.post("/v1/conversations/w1/whisper", headers=sam,
                                json={"text": NOTE, "request_id": "r1"})
            assert again.json() == {"conversation_id": "w1", "status": "duplicate",
                                    "whisper_id": whisper_id}
        # Nobody else's alert stream had it: the next thing each sees is its own.
        assert desk.say("w1", "s2", ANGRY[0])["status"] == "accepted"
        assert receive(kim_ws)["alert"]["conversation_id"] == "w1"
        told = client.post("/v1/conversations/w9/whisper", headers=sam,
                           json={"text": UNKEPT})
        assert told.status_code == 200, told.text
        assert (receive(bob_ws)["type"], desk.push()["conversation_id"]) == ("whisper", "w9")
        assert receive(ann_ws)["type"] == "alert.raised"

    transcript = client.get("/v1/transcripts/w1", headers=kim).json()
    assert [t["role"] for t in transcript["turns"]] == ["customer", "customer"]
    notes = [e for e in transcript["events"] if e["type"] == "whisper"]
    assert notes == [{"type": "whisper", "at": notes[0]["at"], "whisper_id": whisper_id,
                      "by": "sam", "agent_id": "agent-1", "text": NOTE}]
    # Under recording "customer" the agent side's words, the whisper's too, are not kept.
    [note] = [e for e in client.get("/v1/transcripts/w9", headers=kim).json()["events"]
              if e["type"] == "whisper"]
    assert note["text"] is None and note["by"] == "sam"
    assert UNKEPT.encode() not in stored.everything()
    live = client.get("/v1/live/conversations/w1", headers=kim).json()
    assert live["counts"]["customer"] == 2 and live["counts"]["supervisor"] == 0


def test_whisper_and_barge_refusals(client: TestClient, connector_token: str,
                                    sam: dict[str, str], users: Users) -> None:
    agent = auth(users.token("Agent", agent_id="agent-1"))
    with client.websocket_connect(_desk_url(), headers=auth(connector_token)) as ws, \
            client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as plain:
        desk, quiet = Desk(ws), Connector(plain)
        assert "outbound" not in quiet.hello
        desk.start("bot-only", agent_id=None)
        desk.start("gone")
        desk.send({"type": "conversation.ended", "conversation_id": "gone"})
        quiet.start("no-push")

        def post(path: str, body: dict[str, Any] | None = None,
                 headers: dict[str, str] = sam) -> tuple[int, str]:
            answer = client.post(path, headers=headers, json=body or {})
            return answer.status_code, answer.json().get("code", "")

        assert post("/v1/conversations/bot-only/whisper", {"text": NOTE}) == (409, "no_agent")
        assert post("/v1/conversations/nope/whisper", {"text": NOTE}) == (
            404, "unknown_conversation")
        assert post("/v1/conversations/gone/whisper", {"text": NOTE}) == (
            410, "conversation_ended")
        assert post("/v1/conversations/gone/barge") == (410, "conversation_ended")
        assert post("/v1/conversations/nope/barge") == (404, "unknown_conversation")
        assert post("/v1/conversations/bot-only/whisper", {"text": ""})[0] == 422
        assert post("/v1/conversations/bot-only/whisper", {"text": "a\u0000b"})[0] == 422
        # Nobody would pass a supervisor's words on: a connector without pushes, or REST.
        assert post("/v1/conversations/no-push/barge") == (409, "no_connector")
        assert client.post("/v1/conversations", headers=auth(connector_token),
                           json={"id": "rest"}).status_code == 201
        assert post("/v1/conversations/rest/barge") == (409, "no_connector")
        # Writing needs barging in first; leaving too.
        assert post("/v1/conversations/bot-only/messages", {"text": WORDS}) == (
            409, "not_barged")
        left = client.delete("/v1/conversations/bot-only/barge", headers=sam)
        assert (left.status_code, left.json()["code"]) == (409, "not_barged")
        assert post("/v1/conversations/bot-only/whisper", {"text": NOTE}, agent)[0] == 403
        assert post("/v1/conversations/bot-only/barge", headers=agent)[0] == 403
        assert desk.pushes == []
    denied = refused(client, "/v1/ingest?outbound=maybe", auth(connector_token))
    assert denied.status_code == 422 and denied.json()["code"] == "validation_error"


def test_barge_in_write_to_the_customer_and_leave(
        client: TestClient, connector_token: str, sam: dict[str, str],
        kim: dict[str, str], stored: Stored) -> None:
    with client.websocket_connect(_desk_url(), headers=auth(connector_token)) as ws:
        desk = Desk(ws)
        desk.start("b1", recording="agent")
        desk.say("b1", "s1", "I have been waiting for an hour!")
        with client.websocket_connect("/v1/conversations/b1/monitor", headers=kim) as mon:
            assert receive(mon)["type"] == "catch_up" and receive(mon)["type"] == "live"
            joined = client.post("/v1/conversations/b1/barge", headers=sam)
            assert joined.status_code == 200, joined.text
            participant = joined.json()["participant"]
            assert participant["id"] == "supervisor:sam"
            assert participant["role"] == "supervisor" and participant["name"] == "sam"
            told = desk.push()
            assert told["type"] == "participant.joined" and told["by"] == "sam"
            assert told["participant"] == {"id": "supervisor:sam", "role": "supervisor",
                                           "name": "sam"}
            assert until(mon, "participant.joined")["participant"] == told["participant"]
            assert client.post("/v1/conversations/b1/barge", headers=sam).json()[
                "status"] == "duplicate"
            who = client.get("/v1/conversations/b1/monitors", headers=kim).json()
            assert [(m["username"], m["mode"]) for m in who["monitors"]] == [
                ("kim", "listening"), ("sam", "barged")]
            summary = client.get("/v1/live/conversations/b1", headers=kim).json()
            assert summary["monitors"] == who["monitors"]
            assert {"id": "supervisor:sam", "role": "supervisor", "name": "sam",
                    "joined_at": participant["joined_at"]} in summary["participants"]

            wrote = client.post("/v1/conversations/b1/messages", headers=sam,
                                json={"text": WORDS, "message_id": "m1"})
            assert wrote.status_code == 200, wrote.text
            turn = wrote.json()
            assert turn["status"] == "accepted" and turn["segment_id"].startswith(
                "supervisor.")
            assert turn["scores"]["compound"] > 0
            said = desk.push()
            assert said == {"type": "supervisor.message", "conversation_id": "b1",
                            "segment_id": turn["segment_id"],
                            "participant_id": "supervisor:sam", "text": WORDS,
                            "at": said["at"]}
            shown = until(mon, "segment")
            assert (shown["role"], shown["text"], shown["scores"]) == (
                "supervisor", WORDS, turn["scores"])
            retried = client.post("/v1/conversations/b1/messages", headers=sam,
                                  json={"text": WORDS, "message_id": "m1"}).json()
            assert (retried["status"], retried["segment_id"]) == ("duplicate",
                                                                  turn["segment_id"])
            # The connector echoing it back is a duplicate too: one turn.
            assert desk.say("b1", turn["segment_id"], WORDS, role="supervisor")[
                "status"] == "duplicate"
            assert client.get("/v1/live/conversations/b1", headers=kim).json()[
                "counts"]["supervisor"] == 1

            assert client.delete("/v1/conversations/b1/barge", headers=sam).json()[
                "status"] == "accepted"
            gone = desk.push()
            assert (gone["type"], gone["participant_id"]) == ("participant.left",
                                                              "supervisor:sam")
            assert until(mon, "participant.left")["by"] == "sam"
            late = client.post("/v1/conversations/b1/messages", headers=sam,
                               json={"text": WORDS})
            assert (late.status_code, late.json()["code"]) == (409, "not_barged")
        desk.send({"type": "conversation.ended", "conversation_id": "b1"})
    transcript = client.get("/v1/transcripts/b1", headers=kim).json()
    assert [(t["role"], t["text"]) for t in transcript["turns"]] == [
        ("customer", None), ("supervisor", WORDS)]  # recording "agent": its side's words
    assert [e["type"] for e in transcript["events"] if e["type"].startswith(
        "participant.")] == ["participant.joined", "participant.left"]
    assert stored.rows("SELECT role FROM segments WHERE role = 'supervisor'") == [
        ("supervisor",)]


@pytest.mark.app
def test_who_monitors_is_listed_and_told_to_other_monitors(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        sam: dict[str, str], kim: dict[str, str]) -> None:
    connector = auth(users.token("Connector"))
    told = settings.model_copy(update={"tell_agent_monitored": True})
    with TestClient(make_app(told, backend, tmp_path)) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        with client.websocket_connect(_desk_url(), headers=connector) as ws, \
                client.websocket_connect("/v1/live", headers=sam) as board:
            desk = Desk(ws)
            desk.start("m1")
            assert receive(board)["type"] == "snapshot"
            with client.websocket_connect("/v1/conversations/m1/monitor",
                                          headers=sam) as first:
                catch_up = receive(first)
                assert [m["username"] for m in catch_up["conversation"]["monitors"]] == [
                    "sam"]
                assert receive(first)["type"] == "live"
                pushed = desk.push()
                assert pushed == {"type": "monitor.started", "conversation_id": "m1",
                                  "at": pushed["at"], "monitors": 1}
                with client.websocket_connect("/v1/conversations/m1/monitor",
                                              headers=kim) as second:
                    receive(second)
                    started = receive(first)  # the other's socket; never its own
                    assert started["type"] == "monitor.started" and started["by"] == "kim"
                    assert [m["username"] for m in started["monitors"]] == ["sam", "kim"]
                    assert desk.push()["monitors"] == 2  # how many, not who
                    listed = client.get("/v1/conversations/m1/monitors", headers=sam)
                    assert [(m["username"], m["mode"]) for m in listed.json()[
                        "monitors"]] == [("sam", "listening"), ("kim", "listening")]
                    rows = client.get("/v1/live/conversations", headers=sam).json()[
                        "conversations"]
                    assert [m["username"] for m in rows[0]["monitors"]] == ["sam", "kim"]
                ended = until(first, "monitor.ended")
                assert ended["by"] == "kim" and [m["username"] for m in ended[
                    "monitors"]] == ["sam"]
                assert desk.push()["type"] == "monitor.ended"
                updates = [until(board, "monitors.updated") for _ in range(3)]
                assert [len(u["monitors"]) for u in updates] == [1, 2, 1]
            assert desk.push()["monitors"] == 0  # (once the last has gone)
            assert client.get("/v1/conversations/m1/monitors", headers=kim).json()[
                "monitors"] == []
        assert client.get("/v1/conversations/zz/monitors", headers=sam).status_code == 404


def test_a_dead_nodes_monitors_lapse(redis_server: RedisServer, tmp_path: Path) -> None:
    """Scale-out: a node that dies stops renewing its entries; they vanish from every
    listing at their time, and one node reports each lost, once."""

    async def scenario() -> None:
        from contact_center.streams import connect

        lost: list[tuple[str, Listener]] = []

        async def report(cid: str, listener: Listener) -> None:
            lost.append((cid, listener))

        redis = connect(redis_server.url)
        dead = RedisPresence(redis, namespace(tmp_path), ttl=0.3)
        alive = [RedisPresence(redis, namespace(tmp_path), on_lost=report) for _ in range(2)]
        try:
            await dead.add("c1", Listener("m-dead", "sam", 1.0))
            await alive[0].add("c1", Listener("m-live", "kim", 2.0))
            assert {x.username for x in await alive[1].listeners("c1")} == {"sam", "kim"}
            await asyncio.sleep(0.4)
            assert [x.username for x in await alive[1].listeners("c1")] == ["kim"]
            results = await asyncio.gather(alive[0].renew(), alive[1].renew())
            assert sorted(len(r) for r in results) == [0, 1]
            assert [(cid, x.monitor_id) for cid, x in lost] == [("c1", "m-dead")]
            assert await alive[1].everyone() == {"c1": [Listener("m-live", "kim", 2.0)]}
        finally:
            await redis.aclose()

    asyncio.run(scenario())


@pytest.mark.app
def test_a_barged_supervisor_is_still_in_after_a_restart(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        sam: dict[str, str]) -> None:
    connector = auth(users.token("Connector"))
    with TestClient(make_app(settings, backend, tmp_path)) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        with client.websocket_connect(_desk_url(), headers=connector) as ws:
            Desk(ws).start("r1")
            assert client.post("/v1/conversations/r1/barge", headers=sam).status_code == 200
    with TestClient(make_app(settings, backend, tmp_path)) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        who = client.get("/v1/conversations/r1/monitors", headers=sam).json()["monitors"]
        assert [(m["username"], m["mode"]) for m in who] == [("sam", "barged")]
        # Its connector socket is gone, but the next one that feeds it takes the pushes.
        with client.websocket_connect(_desk_url(), headers=connector) as ws:
            desk = Desk(ws)
            assert desk.say("r1", "s1", "Are you still there?")["status"] == "accepted"
            wrote = client.post("/v1/conversations/r1/messages", headers=sam,
                                json={"text": WORDS})
            assert wrote.status_code == 200, wrote.text
            assert desk.push()["type"] == "supervisor.message"
