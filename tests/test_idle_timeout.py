"""A live conversation with no event for CC_IDLE_TIMEOUT_SECONDS ends itself (reason
idle_timeout), on every deployment and across restarts; its clock never grows with the
events it gets (docs/protocol.md#events)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.default_rules import DEFAULT_RULES
from analytics.rolling import RollingConfig
from analytics.scoring import score
from contact_center import protocol as p
from contact_center.applier import RESTORE_GRACE_SECONDS, TIMERS_PER_TICK, Applier, Effects
from contact_center.settings import Settings
from contact_center.stores import StoredConversation
from tests.conftest import Connector, Users, auth, make_app, wait_for_partitions


def _app(settings: Settings, backend: str, tmp_path: Path, idle: float) -> TestClient:
    return TestClient(make_app(settings.model_copy(update={"idle_timeout_seconds": idle}),
                               backend, tmp_path))


def _live(client: TestClient, manager: dict[str, str]) -> list[str]:
    answer = client.get("/v1/live/conversations", headers=manager)
    return [c["id"] for c in answer.json()["conversations"]]


def _ended_reason(client: TestClient, analyst: dict[str, str], cid: str) -> Any:
    events = client.get(f"/v1/transcripts/{cid}", headers=analyst).json()["events"]
    return [e.get("reason") for e in events if e["type"] == "conversation.ended"]


@pytest.mark.app
def test_an_idle_conversation_ends_itself_and_activity_keeps_one_live(
        backend: str, settings: Settings, tmp_path: Path, users: Users) -> None:
    manager, analyst = auth(users.token("CallCenterManager")), auth(users.token("Analyst"))
    connector = auth(users.token("Connector"))
    with _app(settings, backend, tmp_path, idle=2.0) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            c = Connector(ws)
            assert c.start("quiet")["status"] == "accepted"
            assert c.start("busy")["status"] == "accepted"
            with client.websocket_connect("/v1/conversations/quiet/monitor",
                                          headers=manager) as monitor:
                assert monitor.receive_json()["type"] == "catch_up"
                assert monitor.receive_json()["type"] == "live"
                for i in range(16):  # "busy" talks every 0.3 s: never idle for 2 s
                    kind = {"final": i % 2 == 0}
                    assert c.say("busy", f"s{i}", "still here", **kind)["status"] == \
                        "accepted"
                    time.sleep(0.3)
                assert _live(client, manager) == ["busy"]
                ended = monitor.receive_json()  # (sent before the live views dropped it)
            assert ended["type"] == "conversation.ended" and ended["conversation_id"] == "quiet"
            assert ended["reason"] == "idle_timeout"
            late = c.say("quiet", "q1", "hello?")
            assert late["type"] == "error" and late["code"] == "conversation_ended"
        assert _ended_reason(client, analyst, "quiet") == ["idle_timeout"]
        assert _ended_reason(client, analyst, "busy") == []
        deadline = time.monotonic() + 10  # now "busy" falls silent too
        while _live(client, manager):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _ended_reason(client, analyst, "busy") == ["idle_timeout"]


@pytest.mark.app
def test_the_idle_time_counts_across_a_restart(
        backend: str, settings: Settings, tmp_path: Path, users: Users) -> None:
    manager, connector = auth(users.token("CallCenterManager")), auth(users.token("Connector"))
    idle = 5.0
    with _app(settings, backend, tmp_path, idle) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            # (taken before it is applied: closing the socket may take a while on a
            # busy machine)
            last_activity = time.monotonic()
            Connector(ws).start("c1")
        time.sleep(2.0)
    with _app(settings, backend, tmp_path, idle) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        restarted = time.monotonic()
        assert _live(client, manager) == ["c1"]
        while _live(client, manager):
            assert time.monotonic() - restarted < idle + 5
            time.sleep(0.1)
        ended = time.monotonic()
    # Counted from its last event, not from the restart (that would be restarted + 5 s).
    assert ended - last_activity >= idle - 0.5
    assert ended - restarted < idle - 1.0, (ended - last_activity, ended - restarted)


def _started(applier: Applier, cid: str, now: float) -> None:
    event = p.parse_event(
        f'{{"type": "conversation.started", "conversation": {{"id": "{cid}", '
        '"channel": "chat", "queue": "q"}}')
    applier.apply(event, now, None, Effects())


def test_events_do_not_grow_the_clock_and_a_tick_ends_a_bounded_batch() -> None:
    applier = Applier(DEFAULT_RULES, RollingConfig(), idle_timeout=60.0)
    _started(applier, "talker", 0.0)
    for i in range(1000):
        segment = p.parse_event(f'{{"type": "segment", "conversation_id": "talker", '
                                f'"segment_id": "s{i}", "role": "agent", "text": "ok"}}')
        applier.apply(segment, float(i) / 100, score("ok"), Effects())
    assert len(applier.timers) == 1  # one entry per conversation, however many events

    for n in range(TIMERS_PER_TICK + 500):
        _started(applier, f"c{n}", 1.0)
    first = Effects()
    applier.fire_due(100.0, first)
    assert len(first.touched) == TIMERS_PER_TICK
    assert all(row.payload == {"reason": "idle_timeout"} for row in first.batch.events)
    rest = Effects()
    applier.fire_due(100.0, rest)
    assert len(rest.touched) == 501  # the other 500, and "talker" (silent since 9.99)
    assert not applier.conversations


def test_retries_are_no_activity() -> None:
    applier = Applier(DEFAULT_RULES, RollingConfig(), idle_timeout=60.0)
    _started(applier, "c1", 0.0)
    segment = p.parse_event('{"type": "segment", "conversation_id": "c1", '
                            '"segment_id": "s1", "role": "customer", "text": "hi"}')
    joined = p.parse_event('{"type": "participant.joined", "conversation_id": "c1", '
                           '"event_id": "e1", "participant": {"id": "sup", "role": "agent"}}')
    assert applier.apply(segment, 10.0, score("hi"), Effects()).status == "accepted"
    assert applier.apply(joined, 20.0, None, Effects()).status == "accepted"
    assert applier.apply(segment, 50.0, score("hi"), Effects()).status == "duplicate"
    assert applier.apply(joined, 55.0, None, Effects()).status == "duplicate"
    assert applier.conversations["c1"].last_activity_at == 20.0


def test_a_conversation_restored_past_its_idle_time_gets_a_grace() -> None:
    """Its events still queued (a worker that took its partition over) come first."""
    before = Applier(DEFAULT_RULES, RollingConfig(), idle_timeout=600.0)
    _started(before, "c1", time.time() - 3600)
    conv = before.conversations["c1"]
    stored = StoredConversation(conv.metadata(), conv.snapshot(), set(conv.applied), [])
    after = Applier(DEFAULT_RULES, RollingConfig(), idle_timeout=600.0)
    after.restore(stored)
    ended = Effects()
    after.fire_due(time.time(), ended)
    assert not ended.touched and "c1" in after.conversations
    after.fire_due(time.time() + RESTORE_GRACE_SECONDS + 1, ended)
    assert list(ended.touched) == ["c1"] and not after.conversations
