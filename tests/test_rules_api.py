"""The rule CRUD API: one rule at a time or the whole set, versions, validation, permission,
persistence, and what an edit does to the alerts raised afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.default_rules import DEFAULT_RULES
from contact_center.app import create_app
from contact_center.settings import Settings
from tests.conftest import ANGRY, HAPPY, Connector, Users, auth, make_store
from tests.test_rules_e2e import hit, leads, next_alert

KW = {"id": "kw", "kind": "keyword", "phrases": ["refund"]}
# What the server stores for KW: every default filled in.
KW_STORED = {"id": "kw", "version": 1, "name": "", "severity": "high",
             "scope": {"queues": [], "channels": []}, "cooldown_seconds": 300.0,
             "enabled": True, "kind": "keyword", "phrases": ["refund"],
             "roles": ["customer"], "negation_aware": False}


@pytest.fixture
def admin(users: Users) -> dict[str, str]:
    return auth(users.token("Admin"))


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error" and body["code"] == code, body
    return body


def rules(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/v1/rules", headers=headers)
    assert r.status_code == 200
    return r.json()["rules"]  # type: ignore[no-any-return]


def test_every_rule_route_needs_rules_manage(client: TestClient, users: Users,
                                             admin: dict[str, str]) -> None:
    assert client.post("/v1/rules", headers=admin, json=KW).status_code == 201
    manager = auth(users.token("CallCenterManager"))
    calls = [("GET", "/v1/rules", None), ("PUT", "/v1/rules", {"rules": []}),
             ("POST", "/v1/rules", KW | {"id": "other"}), ("GET", "/v1/rules/kw", None),
             ("PUT", "/v1/rules/kw", KW | {"severity": "low"}),
             ("PATCH", "/v1/rules/kw", {"enabled": False}), ("DELETE", "/v1/rules/kw", None)]
    for method, url, body in calls:
        error(client.request(method, url, headers=manager, json=body), 403, "forbidden")
        error(client.request(method, url, json=body), 401, "unauthenticated")
    # Nothing the refused calls asked for happened.
    assert [r for r in rules(client, admin) if r["id"] in ("kw", "other")] == [KW_STORED]


def test_create_then_get(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post("/v1/rules", headers=admin, json=KW)
    assert created.status_code == 201
    assert created.json() == KW_STORED
    assert client.get("/v1/rules/kw", headers=admin).json() == KW_STORED
    assert rules(client, admin)[-1] == KW_STORED
    assert [r["id"] for r in rules(client, admin)] == [r.id for r in DEFAULT_RULES.rules] + ["kw"]

    again = client.post("/v1/rules", headers=admin, json=KW | {"severity": "low"})
    error(again, 409, "rule_exists")
    assert client.get("/v1/rules/kw", headers=admin).json() == KW_STORED

    # Versions are the server's: a new rule starts at 1 whatever the body says.
    other = client.post("/v1/rules", headers=admin, json=KW | {"id": "kw2", "version": 7})
    assert other.status_code == 201 and other.json()["version"] == 1

    error(client.get("/v1/rules/nope", headers=admin), 404, "unknown_rule")


def test_put_one_rule_versions(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/rules", headers=admin, json=KW)
    changed = client.put("/v1/rules/kw", headers=admin, json=KW | {"severity": "low"})
    assert changed.status_code == 200
    assert changed.json() == KW_STORED | {"severity": "low", "version": 2}
    assert client.get("/v1/rules/kw", headers=admin).json()["version"] == 2

    same = client.put("/v1/rules/kw", headers=admin, json=KW | {"severity": "low"})
    assert same.status_code == 200 and same.json()["version"] == 2
    # The current version in the body is fine; the rule moves on from it.
    moved = client.put("/v1/rules/kw", headers=admin,
                       json=KW | {"severity": "medium", "version": 2})
    assert moved.status_code == 200 and moved.json()["version"] == 3

    for stale in (1, 2, 4):
        conflict = client.put("/v1/rules/kw", headers=admin,
                              json=KW | {"severity": "high", "version": stale})
        assert "version 3" in error(conflict, 409, "version_conflict")["message"]
    assert client.get("/v1/rules/kw", headers=admin).json() == KW_STORED | {
        "severity": "medium", "version": 3}

    mismatch = client.put("/v1/rules/kw", headers=admin, json=KW | {"id": "other"})
    error(mismatch, 422, "validation_error")
    assert client.get("/v1/rules/other", headers=admin).status_code == 404
    error(client.put("/v1/rules/nope", headers=admin, json=KW | {"id": "nope"}),
          404, "unknown_rule")
    invalid = client.put("/v1/rules/kw", headers=admin, json=KW | {"phrases": []})
    body = error(invalid, 422, "validation_error")
    assert [d["loc"] for d in body["details"]] == [["body", "keyword", "phrases"]]
    assert client.get("/v1/rules/kw", headers=admin).json()["version"] == 3


def test_patch_one_rule(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/rules", headers=admin, json=KW)
    disabled = client.patch("/v1/rules/kw", headers=admin, json={"enabled": False})
    assert disabled.status_code == 200
    assert disabled.json() == KW_STORED | {"enabled": False, "version": 2}
    again = client.patch("/v1/rules/kw", headers=admin, json={"enabled": False})
    assert again.status_code == 200 and again.json()["version"] == 2

    for change, field, kind in (({"cooldown_seconds": -1}, "cooldown_seconds",
                                 "greater_than_equal"),
                                ({"enabled": "perhaps"}, "enabled", "bool_parsing"),
                                ({"severity": "urgent"}, "severity", "literal_error"),
                                ({"colour": "red"}, "colour", "extra_forbidden")):
        body = error(client.patch("/v1/rules/kw", headers=admin, json=change),
                     422, "validation_error")
        assert len(body["details"]) == 1, body
        assert body["details"][0]["loc"][-2:] == ["keyword", field]
        assert body["details"][0]["type"] == kind
        assert field in body["message"]

    error(client.patch("/v1/rules/kw", headers=admin, json={"id": "kw9"}),
          422, "validation_error")
    error(client.patch("/v1/rules/kw", headers=admin, json={"enabled": True, "version": 1}),
          409, "version_conflict")
    error(client.patch("/v1/rules/nope", headers=admin, json={"enabled": True}),
          404, "unknown_rule")
    assert client.get("/v1/rules/kw", headers=admin).json() == KW_STORED | {
        "enabled": False, "version": 2}
    error(client.get("/v1/rules/kw9", headers=admin), 404, "unknown_rule")

    enabled = client.patch("/v1/rules/kw", headers=admin,
                           json={"enabled": True, "version": 2, "id": "kw"})
    assert enabled.status_code == 200
    assert enabled.json() == KW_STORED | {"version": 3}


def test_patch_version_is_read_as_put_reads_it(client: TestClient,
                                               admin: dict[str, str]) -> None:
    client.post("/v1/rules", headers=admin, json=KW)
    # Both read the body's version as an integer and nothing else: "1" is refused.
    put = client.put("/v1/rules/kw", headers=admin, json=KW | {"version": "1"})
    assert put.status_code == 422 and put.json()["details"][0]["loc"][-1] == "version"
    refused = client.patch("/v1/rules/kw", headers=admin,
                           json={"enabled": False, "version": "1"})
    assert refused.status_code == 422 and refused.json()["details"][0]["loc"][-1] == "version"
    put = client.put("/v1/rules/kw", headers=admin, json=KW | {"version": 1})
    assert put.status_code == 200 and put.json()["version"] == 1
    patched = client.patch("/v1/rules/kw", headers=admin,
                           json={"enabled": False, "version": 1})
    assert patched.status_code == 200, patched.text
    assert patched.json() == KW_STORED | {"enabled": False, "version": 2}


def test_delete_one_rule(client: TestClient, admin: dict[str, str]) -> None:
    client.post("/v1/rules", headers=admin, json=KW)
    deleted = client.delete("/v1/rules/kw", headers=admin)
    assert deleted.status_code == 204 and deleted.content == b""
    error(client.get("/v1/rules/kw", headers=admin), 404, "unknown_rule")
    assert "kw" not in [r["id"] for r in rules(client, admin)]
    error(client.delete("/v1/rules/kw", headers=admin), 404, "unknown_rule")
    error(client.delete("/v1/rules/never", headers=admin), 404, "unknown_rule")
    # A deleted id can be created again, from version 1.
    assert client.post("/v1/rules", headers=admin, json=KW).json() == KW_STORED


def test_rule_set_document_round_trips(client: TestClient, admin: dict[str, str]) -> None:
    client.patch("/v1/rules/negative-sentiment", headers=admin, json={"below": -0.6})
    document = client.get("/v1/rules", headers=admin).json()
    versions = {r["id"]: r["version"] for r in document["rules"]}
    assert versions["negative-sentiment"] == 2
    assert {v for k, v in versions.items() if k != "negative-sentiment"} == {1}

    back = client.put("/v1/rules", headers=admin, json=document)
    assert back.status_code == 200 and back.json() == document
    assert client.get("/v1/rules", headers=admin).json() == document

    # One rule changed: only its version moves, whatever versions the body claims.
    edited = [r | {"version": 1} for r in document["rules"]]
    edited[0] = edited[0] | {"severity": "low"}
    after = client.put("/v1/rules", headers=admin, json={"rules": edited}).json()["rules"]
    assert [r["version"] for r in after] == [
        versions[r["id"]] + (r["id"] == edited[0]["id"]) for r in after]
    assert after[0]["severity"] == "low"


def test_rule_set_validation_errors(client: TestClient, admin: dict[str, str]) -> None:
    before = client.get("/v1/rules", headers=admin).json()

    def refused(rule_set: Any = None, content: str | None = None) -> list[dict[str, Any]]:
        r = (client.put("/v1/rules", headers=admin, json=rule_set) if content is None else
             client.put("/v1/rules", headers=admin | {"Content-Type": "application/json"},
                        content=content))
        details: list[dict[str, Any]] = error(r, 422, "validation_error")["details"]
        assert client.get("/v1/rules", headers=admin).json() == before  # nothing applied
        return details

    (duplicate,) = refused({"rules": [KW, KW | {"phrases": ["money back"]}]})
    assert "'kw'" in duplicate["msg"] and "twice" in duplicate["msg"]

    (hysteresis,) = refused({"rules": [
        KW, {"id": "s", "kind": "sentiment", "below": -0.2, "clear_above": -0.9}]})
    assert hysteresis["loc"] == ["body", "rules", "1", "sentiment"]
    assert "clear_above must be >= below" in hysteresis["msg"]

    (kind,) = refused({"rules": [{"id": "x", "kind": "telepathy"}]})
    assert kind["loc"] == ["body", "rules", "0"] and kind["type"] == "union_tag_invalid"
    assert "telepathy" in kind["msg"]

    (blank,) = refused({"rules": [KW | {"phrases": ["refund", "   "]}]})
    assert blank["loc"] == ["body", "rules", "0", "keyword", "phrases", "1"]
    assert "at least one letter or digit" in blank["msg"]

    (huge,) = refused({"rules": [KW | {"cooldown_seconds": 1e300}]})
    assert huge["loc"] == ["body", "rules", "0", "keyword", "cooldown_seconds"]
    assert huge["type"] == "less_than_equal"

    (infinite,) = refused(content='{"rules": [{"id": "kw", "kind": "keyword", '
                                  '"phrases": ["refund"], "cooldown_seconds": 1e999}]}')
    assert infinite["loc"] == ["body", "rules", "0", "keyword", "cooldown_seconds"]
    assert infinite["type"] == "finite_number"

    (bad_id,) = refused({"rules": [KW | {"id": "has spaces"}]})
    assert bad_id["loc"] == ["body", "rules", "0", "keyword", "id"]

    for version in (True, "3", 2.0):  # a version is an integer, nothing that reads as one
        (not_integer,) = refused({"rules": [KW | {"version": version}]})
        assert not_integer["loc"] == ["body", "rules", "0", "keyword", "version"], version


def test_rules_persist_across_a_restart(settings: Settings, backend: str, tmp_path: Path,
                                        admin: dict[str, str]) -> None:
    with TestClient(create_app(settings, make_store(backend, tmp_path))) as client:
        assert client.post("/v1/rules", headers=admin, json=KW).status_code == 201
        client.put("/v1/rules/kw", headers=admin, json=KW | {"phrases": ["refund", "rebate"]})
        client.patch("/v1/rules/insult", headers=admin, json={"enabled": False})
        assert client.delete("/v1/rules/profanity", headers=admin).status_code == 204
        document = client.get("/v1/rules", headers=admin).json()

    with TestClient(create_app(settings, make_store(backend, tmp_path))) as client:
        assert client.get("/v1/rules", headers=admin).json() == document
        assert client.get("/v1/rules/kw", headers=admin).json() == KW_STORED | {
            "phrases": ["refund", "rebate"], "version": 2}
        insult = client.get("/v1/rules/insult", headers=admin).json()
        assert insult["enabled"] is False and insult["version"] == 2
        error(client.get("/v1/rules/profanity", headers=admin), 404, "unknown_rule")
        # Versions carry on from where they were.
        assert client.put("/v1/rules", headers=admin, json=document).json() == document
        bumped = client.put("/v1/rules/kw", headers=admin, json=KW)
        assert bumped.json()["version"] == 3


def alerts(client: TestClient, headers: dict[str, str], cid: str) -> list[dict[str, Any]]:
    r = client.get("/v1/alerts", headers=headers, params={"conversation_id": cid})
    assert r.status_code == 200
    return r.json()["alerts"]  # type: ignore[no-any-return]


def test_disabled_rule_raises_nothing_until_enabled(ingest: Connector, client: TestClient,
                                                    admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [KW | {"cooldown_seconds": 0}]})
    assert client.patch("/v1/rules/kw", headers=admin,
                        json={"enabled": False}).json()["version"] == 2
    ingest.start("d1")
    assert ingest.say("d1", "s1", "I want a refund")["status"] == "accepted"
    assert alerts(client, admin, "d1") == []  # the ack means the batch is committed
    assert client.get("/v1/live/conversations/d1", headers=admin).json()["alerts"] == 0

    assert client.patch("/v1/rules/kw", headers=admin,
                        json={"enabled": True}).json()["version"] == 3
    assert alerts(client, admin, "d1") == []  # not applied to turns already seen
    ingest.say("d1", "s2", "A refund, please")
    (alert,) = alerts(client, admin, "d1")
    fired = hit(alert)
    assert alert["hit_count"] == 1 and leads(alert, fired)  # s2's firing only
    assert fired["rule_id"] == "kw" and fired["rule_version"] == 3
    assert [s["segment_id"] for s in fired["evidence"]["segments"]] == ["s2"]
    assert fired["evidence"]["rule"]["enabled"] is True


def test_alerts_record_the_rule_version_in_force(ingest: Connector, client: TestClient,
                                                 users: Users, admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [KW | {"cooldown_seconds": 0}]})
    ingest.start("v1")
    supervisor = users.token("CallCenterManager")
    with client.websocket_connect("/v1/alerts/stream", headers=auth(supervisor)) as ws:
        assert ws.receive_json()["type"] == "subscribed"
        ingest.say("v1", "s1", "I want a refund")
        raised = next_alert(ws, kind="alert.raised")
        first = hit(raised)
        edited = client.put("/v1/rules/kw", headers=admin, json=KW | {
            "cooldown_seconds": 0, "phrases": ["refund", "money back"], "severity": "low"})
        assert edited.json()["version"] == 2
        ingest.say("v1", "s2", "Refund or money back, now")
        # A lower-severity hit joins the open alert quietly.
        updated = next_alert(ws, kind="alert.updated")
        second = hit(updated)
    assert updated["id"] == raised["id"] and updated["hit_count"] == 2
    assert (first["rule_version"], second["rule_version"]) == (1, 2)
    assert (first["severity"], second["severity"]) == ("high", "low")
    assert first["evidence"]["rule"]["version"] == 1
    assert first["evidence"]["rule"]["phrases"] == ["refund"]
    assert second["evidence"]["rule"]["version"] == 2
    assert second["evidence"]["matched"] == ["refund", "money back"]
    # The alert keeps the highest severity; the first (high) hit leads it.
    assert updated["severity"] == "high" and leads(updated, first)

    (stored,) = alerts(client, admin, "v1")
    assert stored["id"] == raised["id"]
    assert [(h["rule_version"], h["severity"]) for h in stored["hits"]] == [
        (1, "high"), (2, "low")]
    assert [h["evidence"]["rule"]["version"] for h in stored["hits"]] == [1, 2]
    # Deleting the rule keeps its alerts and hits, with the versions that fired.
    assert client.delete("/v1/rules/kw", headers=admin).status_code == 204
    assert [[h["rule_version"] for h in a["hits"]] for a in alerts(client, admin, "v1")] == [
        [1, 2]]


def test_openapi_lists_rule_routes_with_schemas(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/v1/rules"]) >= {"get", "put", "post"}
    assert set(paths["/v1/rules/{rule_id}"]) >= {"get", "put", "patch", "delete"}

    def schema(method: str, path: str, status: str) -> dict[str, Any]:
        response = paths[path][method]["responses"][status]
        return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    rule_set = {"$ref": "#/components/schemas/RuleSet"}
    assert schema("get", "/v1/rules", "200") == rule_set
    assert schema("put", "/v1/rules", "200") == rule_set
    kinds = {"SentimentRule", "SentimentDropRule", "KeywordRule", "SignalRule",
             "ResponseTimeRule", "AgentConductRule", "HumanRequestedRule"}
    for method, path, status in (("post", "/v1/rules", "201"),
                                 ("get", "/v1/rules/{rule_id}", "200"),
                                 ("put", "/v1/rules/{rule_id}", "200"),
                                 ("patch", "/v1/rules/{rule_id}", "200")):
        one = schema(method, path, status)
        assert {ref["$ref"].rsplit("/", 1)[1] for ref in one["oneOf"]} == kinds, one
        assert one["discriminator"]["propertyName"] == "kind"
    assert "204" in paths["/v1/rules/{rule_id}"]["delete"]["responses"]
    assert "content" not in paths["/v1/rules/{rule_id}"]["delete"]["responses"]["204"]
    assert kinds <= set(spec["components"]["schemas"])
    assert "kind" in spec["components"]["schemas"]["KeywordRule"]["properties"]


def test_a_streak_does_not_span_the_time_a_rule_was_disabled(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [
        {"id": "neg", "kind": "sentiment", "metric": "turn", "below": -0.5,
         "consecutive": 2, "clear_above": 0.0, "cooldown_seconds": 0}]})
    ingest.start("k1")
    assert ingest.say("k1", "a0", ANGRY[0])["scores"]["compound"] < -0.5
    client.patch("/v1/rules/neg", headers=admin, json={"enabled": False})
    for i in range(3):
        assert ingest.say("k1", f"h{i}", HAPPY)["scores"]["compound"] > 0.5
    client.patch("/v1/rules/neg", headers=admin, json={"enabled": True})
    assert ingest.say("k1", "a1", ANGRY[1])["scores"]["compound"] < -0.5
    # a0 and a1 are not consecutive: three happy turns came between them.
    assert alerts(client, admin, "k1") == []
    ingest.say("k1", "a2", ANGRY[2])
    (alert,) = alerts(client, admin, "k1")
    assert alert["hit_count"] == 1
    assert [s["segment_id"] for s in hit(alert)["evidence"]["segments"]] == ["a1", "a2"]


def test_a_rule_redefined_as_another_kind_starts_afresh(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [
        {"id": "r", "kind": "human_requested", "cooldown_seconds": 0}]})
    ingest.start("n1", agent_id=None)
    ingest.say("n1", "c0", "Can I talk to a real person please")
    assert [[h["kind"] for h in a["hits"]] for a in alerts(client, admin, "n1")] == [
        ["human_requested"]]
    redefined = client.put("/v1/rules/r", headers=admin, json={
        "id": "r", "kind": "sentiment", "metric": "turn", "below": -0.5, "consecutive": 1,
        "clear_above": 0.0, "cooldown_seconds": 0})
    assert redefined.json()["version"] == 2
    assert ingest.say("n1", "a0", ANGRY[0])["scores"]["compound"] < -0.5
    # The new kind's hit joins the conversation's open alert.
    (alert,) = alerts(client, admin, "n1")
    assert [(h["kind"], h["rule_version"]) for h in alert["hits"]] == [
        ("human_requested", 1), ("sentiment", 2)]
    latest = hit(alert)
    assert (latest["kind"], latest["rule_version"]) == ("sentiment", 2)
    assert [s["segment_id"] for s in latest["evidence"]["segments"]] == ["a0"]


def wait_for_alert(client: TestClient, headers: dict[str, str], cid: str,
                   seconds: float = 2.0) -> list[dict[str, Any]]:
    deadline = time.time() + seconds
    while not (found := alerts(client, headers, cid)) and time.time() < deadline:
        time.sleep(0.05)
    return found


def test_shortening_a_response_time_applies_to_a_customer_already_waiting(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [
        {"id": "slow", "kind": "response_time", "seconds": 120, "cooldown_seconds": 0}]})
    ingest.start("w1")
    ingest.say("w1", "c0", "Hello, is anyone there?")
    assert client.patch("/v1/rules/slow", headers=admin,
                        json={"seconds": 0.3}).json()["version"] == 2
    (alert,) = wait_for_alert(client, admin, "w1")
    fired = hit(alert)
    assert alert["hit_count"] == 1 and leads(alert, fired)
    assert fired["rule_id"] == "slow" and fired["rule_version"] == 2
    assert [s["segment_id"] for s in fired["evidence"]["segments"]] == ["c0"]


def test_a_response_time_rule_added_applies_to_a_customer_already_waiting(
        ingest: Connector, client: TestClient, admin: dict[str, str]) -> None:
    client.put("/v1/rules", headers=admin, json={"rules": [KW]})
    ingest.start("w2")
    ingest.say("w2", "c0", "Hello, is anyone there?")
    assert client.post("/v1/rules", headers=admin, json={
        "id": "slow", "kind": "response_time", "seconds": 0.3}).status_code == 201
    (alert,) = wait_for_alert(client, admin, "w2")
    assert alert["hit_count"] == 1 and leads(alert, hit(alert))
    assert hit(alert)["rule_id"] == "slow" and hit(alert)["rule_version"] == 1
