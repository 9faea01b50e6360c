"""The audit log end to end, on every deployment (docs/audit.md): what each route records
(actor, source, request id, target, result, details), failed authorisation on HTTP and
sockets, `GET /v1/audit` with its filters, cursor and JSON Lines export, and the
`contact-center audit` commands."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from contact_center import audit_writer
from contact_center.api import audit as audit_route
from contact_center.cli import main
from contact_center.settings import Settings
from monitoring.audit import ACTIONS, AuditEntry, monitoring_sessions
from tests.conftest import Connector, Users, auth, make_app, refused, wait_for_partitions
from tests.test_alert_workflow import INSULT, RULES, change, use_rules

LOOPBACK = ["127.0.0.0/8"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "audit.md"


@pytest.fixture
def app(backend: str, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    """The app, with webhooks to loopback allowed (a webhook is created below)."""
    update = {"webhook_allowed_networks": LOOPBACK}
    with TestClient(make_app(settings.model_copy(update=update), backend, tmp_path)) as c:
        if backend == "scaleout":
            wait_for_partitions(c)
        yield c


@pytest.fixture
def admin(users: Users) -> dict[str, str]:
    return auth(users.token("Admin", username="root"))


def entries(client: TestClient, admin: dict[str, str], **filters: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/audit", headers=admin, params={"limit": 1000} | filters)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["entries"]
    return found


def eventually(client: TestClient, admin: dict[str, str], count: int = 1,
               **filters: Any) -> list[dict[str, Any]]:
    """The entries matching ``filters`` once there are ``count`` (those not waited for)."""
    deadline = time.monotonic() + 10
    while len(found := entries(client, admin, **filters)) < count:
        assert time.monotonic() < deadline, found
        time.sleep(0.02)
    return found


def one(client: TestClient, admin: dict[str, str], action: str,
        **filters: Any) -> dict[str, Any]:
    found = entries(client, admin, action=action, **filters)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.app
def test_reads_and_searches_are_recorded_before_they_are_answered(
        app: TestClient, admin: dict[str, str], users: Users) -> None:
    analyst = users.token("Analyst", username="ana")
    with app.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        c = Connector(ws)
        c.start("c1")
        c.say("c1", "s1", "I want a refund for my order")
    read = app.get("/v1/transcripts/c1", headers={**auth(analyst), "X-Request-ID": "req-42"})
    assert read.status_code == 200
    entry = one(app, admin, "transcript.read")
    assert {k: entry[k] for k in ("actor", "target_type", "target_id", "result", "source",
                                  "request_id")} == {
        "actor": "ana", "target_type": "conversation", "target_id": "c1", "result": "ok",
        "source": "testclient", "request_id": "req-42"}
    assert app.get("/v1/transcripts/nope", headers=auth(analyst)).status_code == 404
    assert one(app, admin, "transcript.read", target_id="nope")["result"] == \
        "unknown_conversation"

    found = app.get("/v1/transcripts", headers=auth(analyst), params={
        "q": 'refund "my order"', "queue": "billing", "role": "customer",
        "since": "2020-01-01T00:00:00Z"})
    assert len(found.json()["hits"]) == 1
    searched = one(app, admin, "transcript.search")
    assert searched["details"] == {"terms": ["refund", "my order"], "queue": "billing",
                                   "role": "customer", "since": 1577836800.0, "limit": 50,
                                   "offset": 0, "hits": 1}
    assert searched["request_id"] == found.headers["x-request-id"]


@pytest.mark.app
def test_failed_authorisation_is_recorded_on_http_and_sockets(
        app: TestClient, admin: dict[str, str], users: Users) -> None:
    agent = users.token("Agent", username="ann")
    assert app.get("/v1/transcripts/c1").status_code == 401
    assert app.get("/v1/transcripts/c1", headers=auth(agent)).status_code == 403
    assert app.post("/v1/rules/backtest", headers=auth(agent), json={}).status_code == 403
    assert refused(app, "/v1/ingest", auth("cc_" + "x" * 43)).status_code == 401
    assert refused(app, "/v1/conversations/c1/monitor", auth(agent)).status_code == 403
    assert app.get("/v1/audit", headers=auth(agent)).status_code == 403  # (audit-read)
    failed = eventually(app, admin, 6, action="auth.failed")
    seen = {(e["actor"], e["target_id"], e["result"], e["details"]["method"])
            for e in failed}
    assert seen == {
        (None, "/v1/transcripts/c1", "unauthenticated", "GET"),
        ("ann", "/v1/transcripts/c1", "forbidden", "GET"),
        ("ann", "/v1/rules/backtest", "forbidden", "POST"),
        (None, "/v1/ingest", "unauthenticated", "WS"),
        ("ann", "/v1/conversations/c1/monitor", "forbidden", "WS"),
        ("ann", "/v1/audit", "forbidden", "GET")}
    assert all(e["target_type"] == "route" and e["source"] == "testclient" for e in failed)
    assert next(e for e in failed if e["target_id"] == "/v1/audit")["details"]["needed"] == [
        "audit-read"]


@pytest.mark.app
def test_failures_from_a_slowed_down_address_are_counted_not_written_each(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_writer, "SUMMARY_SECONDS", 0.2)
    admin = auth(users.token("Admin", username="root"))
    update = {"auth_failures_per_minute": 2}
    with TestClient(make_app(settings.model_copy(update=update), backend, tmp_path)) as app:
        if backend == "scaleout":
            wait_for_partitions(app)
        bad = auth("cc_" + "x" * 43)
        assert [app.get("/v1/me", headers=bad).status_code for _ in range(4)] == [
            401, 401, 429, 429]
        deadline = time.monotonic() + 10
        while sum(e["details"]["entries"] for e in entries(
                app, admin, action="audit.counted")) < 2:  # (in one entry or two)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for summary in entries(app, admin, action="audit.counted"):
            assert [(c["action"], c["why"], c["source"]) for c in summary["details"][
                "counts"]] == [("auth.failed", "too_many_failures", "testclient")]
        assert len(entries(app, admin, action="auth.failed")) == 2  # (the 401s)


@pytest.mark.app
def test_monitoring_is_recorded_from_start_to_end(app: TestClient, admin: dict[str, str],
                                                   users: Users) -> None:
    manager = auth(users.token("CallCenterManager", username="sam"))
    with app.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        c = Connector(ws)
        c.start("m1")
        with app.websocket_connect("/v1/conversations/m1/monitor", headers=manager) as mon:
            assert mon.receive_json()["type"] == "catch_up"
            started = one(app, admin, "monitor.start")  # (before the catch-up was sent)
            assert (started["actor"], started["target_id"], started["result"]) == (
                "sam", "m1", "ok")
            c.end("m1")
            while mon.receive_json()["type"] != "conversation.ended":
                pass
            with pytest.raises(WebSocketDisconnect):
                mon.receive_json()
    ended = eventually(app, admin, action="monitor.end")[0]
    assert ended["actor"] == "sam" and ended["target_id"] == "m1"
    assert ended["details"]["seconds"] >= 0
    assert refused(app, "/v1/conversations/m1/monitor", manager).status_code == 410
    assert [e["result"] for e in entries(app, admin, action="monitor.start")] == [
        "conversation_ended", "ok"]


@pytest.mark.app
def test_rule_changes_and_backtests_are_recorded(app: TestClient, admin: dict[str, str],
                                                 users: Users) -> None:
    rule = {"id": "churn", "kind": "signal", "any_of": ["churn"], "severity": "high"}
    assert app.post("/v1/rules", headers=admin, json=rule).status_code == 201
    assert app.post("/v1/rules", headers=admin, json=rule).status_code == 409
    assert app.put("/v1/rules/churn", headers=admin,
                   json=rule | {"severity": "medium"}).status_code == 200
    assert app.patch("/v1/rules/churn", headers=admin,
                     json={"enabled": False}).status_code == 200
    assert app.patch("/v1/rules/churn", headers=admin,
                     json={"severity": "extreme"}).status_code == 422
    assert app.post("/v1/rules/backtest", headers=admin,
                    json={"rule_id": "churn", "queue": "billing"}).status_code == 200
    assert app.delete("/v1/rules/churn", headers=admin).status_code == 204
    assert app.delete("/v1/rules/churn", headers=admin).status_code == 404
    rules = app.get("/v1/rules", headers=admin).json()
    assert app.put("/v1/rules", headers=admin, json=rules).status_code == 200
    made = [(e["action"], e["target_id"], e["result"])
            for e in reversed(entries(app, admin, actor="root"))]
    assert made == [
        ("rule.create", "churn", "ok"), ("rule.create", "churn", "rule_exists"),
        ("rule.change", "churn", "ok"), ("rule.change", "churn", "ok"),
        ("rule.change", "churn", "validation_error"), ("rule.backtest", "churn", "ok"),
        ("rule.delete", "churn", "ok"), ("rule.delete", "churn", "unknown_rule"),
        ("rules.import", None, "ok")]
    changes = entries(app, admin, action="rule.change", target_id="churn")
    assert changes[-1]["details"] == {"version_before": 1, "version": 2}
    assert changes[-2]["details"] == {"fields": ["enabled"], "version_before": 2,
                                      "version": 3}
    backtest = one(app, admin, "rule.backtest")["details"]
    assert backtest == {"draft": False, "max_conversations": 10_000, "queue": "billing",
                        "conversations": 0, "alerts": 0}
    assert one(app, admin, "rules.import")["details"] == {"added": [], "changed": [],
                                                          "removed": []}


@pytest.mark.app
def test_alert_transitions_are_recorded(app: TestClient, admin: dict[str, str],
                                        users: Users) -> None:
    manager = auth(users.token("CallCenterManager", username="sam"))
    stranger = auth(users.token("Agent", agent_id="agent-9", username="nine"))
    use_rules(app, users, RULES)
    with app.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        c = Connector(ws)
        c.start("c1")
        assert c.say("c1", "s1", INSULT)["status"] == "accepted"
    deadline = time.monotonic() + 10
    while not (found := app.get("/v1/alerts", headers=manager).json()["alerts"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    alert = found[0]
    assert change(app, alert, "acknowledge", stranger).status_code == 404
    acked = change(app, alert, "acknowledge", manager).json()
    assigned = change(app, acked, "assign", manager, username="sam").json()
    assert change(app, alert, "resolve", manager).status_code == 409  # an old version
    resolved = change(app, assigned, "resolve", manager, note="done").json()
    assert change(app, resolved, "reopen", manager).status_code == 200
    made = [(e["action"], e["actor"], e["result"]) for e in reversed(entries(
        app, admin, target_type="alert", target_id=alert["id"]))]
    assert made == [("alert.acknowledge", "nine", "unknown_alert"),
                    ("alert.acknowledge", "sam", "ok"), ("alert.assign", "sam", "ok"),
                    ("alert.resolve", "sam", "version_conflict"),
                    ("alert.resolve", "sam", "ok"), ("alert.reopen", "sam", "ok")]
    assigning = one(app, admin, "alert.assign")["details"]
    assert assigning == {"version": acked["version"], "assignee": "sam",
                         "conversation_id": "c1"}


@pytest.mark.app
def test_user_token_and_webhook_changes_are_recorded(app: TestClient,
                                                     admin: dict[str, str]) -> None:
    assert app.post("/v1/users", headers=admin, json={
        "username": "ann", "profiles": ["Agent"], "agent_id": "a-1"}).status_code == 201
    assert app.post("/v1/users", headers=admin, json={
        "username": "ann", "profiles": ["Agent"]}).status_code == 409
    token = app.post("/v1/users/ann/tokens", headers=admin, json={"label": "laptop"}).json()
    assert app.patch("/v1/users/ann", headers=admin, json={"disabled": True}).status_code == 200
    assert app.patch("/v1/users/ann", headers=admin,
                     json={"disabled": False}).status_code == 200
    assert app.delete(f"/v1/tokens/{token['id']}", headers=admin).status_code == 204
    hook = app.post("/v1/webhooks", headers=admin, json={
        "url": "http://user:pw@127.0.0.1:9/hook?key=secret"}).json()
    assert app.patch(f"/v1/webhooks/{hook['id']}", headers=admin,
                     json={"min_severity": "high"}).status_code == 200
    assert app.post(f"/v1/webhooks/{hook['id']}/deliveries/7/redeliver",
                    headers=admin).status_code == 404
    assert app.delete(f"/v1/webhooks/{hook['id']}", headers=admin).status_code == 204
    made = [(e["action"], e["target_type"], e["target_id"], e["result"])
            for e in reversed(entries(app, admin, actor="root"))]
    assert made == [
        ("user.create", "user", "ann", "ok"), ("user.create", "user", "ann", "invalid_user"),
        ("token.issue", "token", token["id"], "ok"), ("user.disable", "user", "ann", "ok"),
        ("user.enable", "user", "ann", "ok"), ("token.revoke", "token", token["id"], "ok"),
        ("webhook.create", "webhook", hook["id"], "ok"),
        ("webhook.change", "webhook", hook["id"], "ok"),
        ("webhook.redeliver", "webhook", hook["id"], "unknown_delivery"),
        ("webhook.delete", "webhook", hook["id"], "ok")]
    assert entries(app, admin, action="user.create")[-1]["details"] == {
        "profiles": ["Agent"], "agent_id": "a-1"}
    assert one(app, admin, "token.issue")["details"] == {"username": "ann", "label": "laptop"}
    created = one(app, admin, "webhook.create")["details"]
    assert created["url"] == "http://127.0.0.1:9/hook"  # (no password, no query)
    assert one(app, admin, "webhook.change")["details"] == {"min_severity": "high"}
    for entry in entries(app, admin):  # (nor a token, nor a webhook's secret)
        text = json.dumps(entry)
        assert token["token"] not in text and hook["secret"] not in text and "pw" not in text


@pytest.mark.app
def test_the_route_filters_and_pages_newest_first(app: TestClient, admin: dict[str, str],
                                                  users: Users) -> None:
    reader = auth(users.token("Analyst", username="ana"))
    for n in range(5):
        app.get(f"/v1/transcripts/c{n}", headers=reader)
    app.get("/v1/transcripts?q=x", headers=reader)
    every = entries(app, admin)
    ids = [e["id"] for e in every]
    assert ids == sorted(ids, reverse=True) and len(ids) == 6
    page = app.get("/v1/audit", headers=admin, params={"limit": 4}).json()
    assert [e["id"] for e in page["entries"]] == ids[:4] and page["next_cursor"] == ids[3]
    rest = app.get("/v1/audit", headers=admin, params={
        "limit": 4, "cursor": page["next_cursor"]}).json()
    assert [e["id"] for e in rest["entries"]] == ids[4:] and rest["next_cursor"] is None
    assert [e["target_id"] for e in entries(app, admin, target_id="c3")] == ["c3"]
    assert len(entries(app, admin, target_type="conversation", actor="ana")) == 5
    assert len(entries(app, admin, action="transcript.search")) == 1
    assert entries(app, admin, actor="nobody") == []
    middle = every[2]["at"]
    assert [e["id"] for e in entries(app, admin, since=_iso(middle))] == ids[:3]
    assert [e["id"] for e in entries(app, admin, until=_iso(middle))] == ids[3:]
    for bad in ({"limit": 1001}, {"cursor": 0}, {"format": "csv"}, {"since": "yesterday"}):
        assert app.get("/v1/audit", headers=admin, params=bad).status_code == 422


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


@pytest.mark.app
def test_the_export_streams_json_lines_in_pages_and_is_recorded(
        app: TestClient, admin: dict[str, str], users: Users,
        monkeypatch: pytest.MonkeyPatch) -> None:
    reader = auth(users.token("Analyst", username="ana"))
    for n in range(6):
        app.get(f"/v1/transcripts/c{n}", headers=reader)
    monkeypatch.setattr(audit_route, "EXPORT_PAGE", 2)
    monkeypatch.setattr(audit_route, "EXPORT_MAX", 5)
    answer = app.get("/v1/audit", headers=admin, params={"format": "jsonl", "actor": "ana"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [e["target_id"] for e in lines] == ["c5", "c4", "c3", "c2", "c1"]  # at most 5
    assert set(lines[0]) == set(entries(app, admin)[0])
    more = app.get("/v1/audit", headers=admin, params={
        "format": "jsonl", "actor": "ana", "cursor": lines[-1]["id"]})
    assert [json.loads(line)["target_id"] for line in more.text.splitlines()] == ["c0"]
    exports = entries(app, admin, action="audit.export")
    assert [e["details"] for e in exports] == [{"actor": "ana", "cursor": lines[-1]["id"]},
                                               {"actor": "ana"}]
    assert all(e["actor"] == "root" for e in exports)


def test_every_action_is_documented() -> None:
    page = DOCS.read_text()
    missing = [action for action in ACTIONS if f"`{action}`" not in page]
    assert not missing, f"docs/audit.md does not name: {missing}"


# -- the command line (SQLite: its file; both stores' chains: tests/test_audit_store.py) --


def test_cli_changes_are_recorded_and_verify_and_export_the_chain(tmp_path: Path) -> None:
    db = str(tmp_path / "cc.db")
    cli = CliRunner()

    def run(*args: str) -> Any:
        return cli.invoke(main, [*args, "--db", db])

    assert run("migrate").exit_code == 0
    assert run("users", "create", "ann", "--profile", "Agent").exit_code == 0
    secret = run("tokens", "create", "ann").output.strip()
    token_id = run("tokens", "list", "ann").output.split("\t")[0]
    assert run("tokens", "revoke", token_id).exit_code == 0
    assert run("users", "disable", "ann").exit_code == 0
    assert run("users", "disable", "ann", "--enable").exit_code == 0

    verified = run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit log intact: 5 entries" in verified.output
    head = verified.output.split("head ")[1].strip()

    exported = run("audit", "export")
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert [(e["id"], e["action"], e["actor"], e["source"]) for e in lines] == [
        (1, "user.create", "cli", "local"), (2, "token.issue", "cli", "local"),
        (3, "token.revoke", "cli", "local"), (4, "user.disable", "cli", "local"),
        (5, "user.enable", "cli", "local")]
    assert lines[1]["target_id"] == token_id and secret not in exported.output
    assert [json.loads(x)["id"] for x in run("audit", "export", "--after", "3")
            .output.splitlines()] == [4, 5]

    with sqlite3.connect(db) as raw:  # someone edits the file, triggers and all
        raw.execute("DROP TRIGGER audit_log_no_update")
        raw.execute("UPDATE audit_log SET actor = 'someone' WHERE id = 2")
    broken = run("audit", "verify")
    assert broken.exit_code == 1
    assert "entry 2" in broken.output and "was changed" in broken.output

    with sqlite3.connect(db) as raw:
        raw.execute("DROP TRIGGER audit_log_no_delete")  # (verify put the other back)
        raw.execute("DROP TRIGGER audit_log_no_update")
        raw.execute("UPDATE audit_log SET actor = 'cli' WHERE id = 2")
        raw.execute("DELETE FROM audit_log WHERE id = 5")
    assert run("audit", "verify").exit_code == 0  # a cut-off tail: only the head tells
    cut = run("audit", "verify", "--head", head)
    assert cut.exit_code == 1 and "entry 5" in cut.output
    assert run("audit", "verify", "--head", "5:abc").exit_code == 2


@pytest.mark.app
def test_what_cannot_be_recorded_is_not_answered(app: TestClient, admin: dict[str, str],
                                                 users: Users) -> None:
    manager = auth(users.token("CallCenterManager", username="sam"))
    with app.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        c = Connector(ws)
        c.start("c1")
        c.say("c1", "s1", "My card number is on the invoice")
        app.portal.call(app.app.state.audit.stop)  # type: ignore[attr-defined]
        read = app.get("/v1/transcripts/c1", headers=admin)
        assert read.status_code == 503 and read.json()["code"] == "unavailable"
        assert "invoice" not in read.text
        assert app.get("/v1/transcripts?q=invoice", headers=admin).status_code == 503
        denied = refused(app, "/v1/conversations/c1/monitor", manager)
        assert denied.status_code == 503 and denied.json()["code"] == "unavailable"
    assert app.get("/v1/transcripts/c1").status_code == 401  # (refusals: as ever)


def test_monitoring_sessions_pair_each_start_with_the_same_users_next_end() -> None:
    def entry(i: int, actor: str, action: str, result: str = "ok",
              seconds: float | None = None) -> AuditEntry:
        return AuditEntry(at=float(i), actor=actor, action=action, target_type="conversation",
                          target_id="c1", result=result, source=None, request_id=None,
                          details={} if seconds is None else {"seconds": seconds}, id=i)

    entries = [entry(4, "kim", "monitor.end", seconds=3.0), entry(1, "kim", "monitor.start"),
               entry(2, "sam", "monitor.start"), entry(3, "joe", "monitor.start", "forbidden"),
               entry(5, "kim", "monitor.start"), entry(6, "joe", "monitor.end")]
    assert monitoring_sessions(entries) == [
        {"username": "kim", "started_at": 1.0, "ended_at": 4.0, "seconds": 3.0},
        {"username": "sam", "started_at": 2.0, "ended_at": None, "seconds": None},
        {"username": "kim", "started_at": 5.0, "ended_at": None, "seconds": None}]
