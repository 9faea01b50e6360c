"""Security profiles on every route and socket: the full matrix, built from the app's
own route list so that a new route without an entry here fails the suite."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from contact_center.stores.sqlite import SQLiteStore
from monitoring.permissions import PROFILES, Permission
from tests.conftest import Stored, Users, auth, refused, run

P = Permission
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/livez"),
        ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("POST", "/v1/session"),  # signing in (tests/test_session.py)
        ("GET", "/static-offline-docs")}  # the API pages' scripts and styles
# The console's pages and assets: a page checks the session cookie itself (no session: to
# the sign-in page; without its permission: 403), tested in tests/test_console_pages.py.
CONSOLE_PAGES = {("GET", "/console"), ("GET", "/console/sign-in"),
                 ("GET", "/console/assets/{name}"), ("GET", "/console/{name}"),
                 ("GET", "/console/monitor/{conversation_id}")}
MATRIX: dict[tuple[str, str], set[Permission]] = {
    ("POST", "/v1/conversations"): {P.INGEST},
    ("POST", "/v1/conversations/{conversation_id}/segments"): {P.INGEST},
    ("POST", "/v1/events"): {P.INGEST},
    ("WS", "/v1/ingest"): {P.INGEST},
    ("GET", "/v1/live/conversations"): {P.REALTIME_METRICS},
    ("GET", "/v1/live/conversations/{conversation_id}"): {P.REALTIME_METRICS},
    ("GET", "/v1/live/agents"): {P.REALTIME_METRICS},
    ("WS", "/v1/live"): {P.REALTIME_METRICS},
    ("WS", "/v1/conversations/{conversation_id}/monitor"): {P.MANAGER_MONITOR},
    ("GET", "/v1/conversations/{conversation_id}/monitors"): {P.MANAGER_MONITOR},
    ("POST", "/v1/conversations/{conversation_id}/whisper"): {P.MANAGER_WHISPER},
    ("POST", "/v1/conversations/{conversation_id}/barge"): {P.MANAGER_BARGE},
    ("DELETE", "/v1/conversations/{conversation_id}/barge"): {P.MANAGER_BARGE},
    ("POST", "/v1/conversations/{conversation_id}/messages"): {P.MANAGER_BARGE},
    ("GET", "/v1/alerts"): {P.ALERTS_OWN, P.ALERTS_ALL},
    ("WS", "/v1/alerts/stream"): {P.ALERTS_OWN, P.ALERTS_ALL},
    ("GET", "/v1/alerts/{alert_id}"): {P.ALERTS_OWN, P.ALERTS_ALL},
    # (An agent acknowledges their own conversations' alerts: checked per alert.)
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): {P.ALERTS_MANAGE, P.ALERTS_OWN},
    ("POST", "/v1/alerts/{alert_id}/assign"): {P.ALERTS_MANAGE},
    ("POST", "/v1/alerts/{alert_id}/resolve"): {P.ALERTS_MANAGE},
    ("POST", "/v1/alerts/{alert_id}/reopen"): {P.ALERTS_MANAGE},
    ("POST", "/v1/webhooks"): {P.WEBHOOKS_MANAGE},
    ("GET", "/v1/webhooks"): {P.WEBHOOKS_MANAGE},
    ("GET", "/v1/webhooks/{webhook_id}"): {P.WEBHOOKS_MANAGE},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {P.WEBHOOKS_MANAGE},
    ("DELETE", "/v1/webhooks/{webhook_id}"): {P.WEBHOOKS_MANAGE},
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): {P.WEBHOOKS_MANAGE},
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"):
        {P.WEBHOOKS_MANAGE},
    ("GET", "/v1/transcripts/{conversation_id}"): {P.TRANSCRIPTS_READ},
    ("GET", "/v1/transcripts"): {P.CONTACT_SEARCH},
    ("GET", "/v1/search/turns"): {P.CONTACT_SEARCH},
    ("GET", "/v1/search/conversations"): {P.CONTACT_SEARCH},
    ("GET", "/v1/search/turns/export"): {P.CONTACT_SEARCH},
    ("GET", "/v1/search/conversations/export"): {P.CONTACT_SEARCH},
    ("GET", "/v1/analytics/conversations"): {P.CONTACT_SEARCH},
    ("GET", "/v1/me"): set(),  # any authenticated user
    # Any signed-in user; a token has no session (404 no_session).
    ("GET", "/v1/session"): set(),
    ("DELETE", "/v1/session"): set(),
    ("POST", "/v1/session/tickets"): set(),
    ("GET", "/v1/rules"): {P.RULES_MANAGE},
    ("PUT", "/v1/rules"): {P.RULES_MANAGE},
    ("POST", "/v1/rules"): {P.RULES_MANAGE},
    ("GET", "/v1/rules/{rule_id}"): {P.RULES_MANAGE},
    ("PUT", "/v1/rules/{rule_id}"): {P.RULES_MANAGE},
    ("PATCH", "/v1/rules/{rule_id}"): {P.RULES_MANAGE},
    ("DELETE", "/v1/rules/{rule_id}"): {P.RULES_MANAGE},
    ("POST", "/v1/rules/backtest"): {P.RULES_MANAGE},
    ("GET", "/v1/users"): {P.USERS_MANAGE},
    ("POST", "/v1/users"): {P.USERS_MANAGE},
    ("POST", "/v1/users/{username}/tokens"): {P.USERS_MANAGE},
    ("PATCH", "/v1/users/{username}"): {P.USERS_MANAGE},
    ("PUT", "/v1/users/{username}/password"): {P.USERS_MANAGE},
    ("DELETE", "/v1/tokens/{token_id}"): {P.USERS_MANAGE},
    ("POST", "/v1/teams"): {P.USERS_MANAGE},
    ("GET", "/v1/teams"): {P.USERS_MANAGE},
    ("GET", "/v1/teams/{team_id}"): {P.USERS_MANAGE},
    ("PATCH", "/v1/teams/{team_id}"): {P.USERS_MANAGE},
    ("DELETE", "/v1/teams/{team_id}"): {P.USERS_MANAGE},
    ("PUT", "/v1/agents/{agent_id}"): {P.USERS_MANAGE},
    ("GET", "/v1/agents"): {P.USERS_MANAGE},
    ("GET", "/v1/permissions"): set(),  # any authenticated user
    ("GET", "/v1/security-profiles"): {P.PROFILES_MANAGE},
    ("POST", "/v1/security-profiles"): {P.PROFILES_MANAGE},
    ("GET", "/v1/security-profiles/{name}"): {P.PROFILES_MANAGE},
    ("PATCH", "/v1/security-profiles/{name}"): {P.PROFILES_MANAGE},
    ("DELETE", "/v1/security-profiles/{name}"): {P.PROFILES_MANAGE},
    ("GET", "/v1/admin/dead-letters"): {P.OPERATE},
    ("GET", "/v1/audit"): {P.AUDIT_READ},
    ("POST", "/v1/erasures"): {P.DATA_ERASE},
    ("GET", "/metrics"): {P.OPERATE},
}


def _flatten(routes: list[Any]) -> list[Any]:
    flat = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        flat += _flatten(included.routes) if included is not None else [route]
    return flat


def app_routes(client: TestClient) -> set[tuple[str, str]]:
    found = set()
    for route in _flatten(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route, APIWebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, APIRoute):
            found |= {(m, route.path) for m in route.methods}
        else:  # starlette routes FastAPI adds for the docs
            found |= {(m, route.path) for m in getattr(route, "methods", None) or {"GET"}
                      if m != "HEAD"}
    return found


def call(client: TestClient, method: str, path: str, token: str | None) -> int:
    """Status a request gets; for sockets, the handshake's denial status or 101."""
    url = _url(path)
    headers = auth(token) if token else {}
    if method == "WS":
        try:
            with client.websocket_connect(url, headers=headers):
                return 101
        except WebSocketDenialResponse as denied:
            return denied.status_code
    return client.request(method, url, headers=headers, json={}).status_code


def _url(path: str) -> str:
    return path.replace("{conversation_id}", "c-x").replace("{username}", "nobody") \
        .replace("{token_id}", "t-x").replace("{alert_id}", "a-x") \
        .replace("{webhook_id}", "wh-x").replace("{delivery_id}", "1") \
        .replace("{team_id}", "team-x").replace("{agent_id}", "agent-x") \
        .replace("{name}", "Nobody")


def test_matrix_covers_every_route(client: TestClient) -> None:
    assert app_routes(client) == set(MATRIX) | OPEN | CONSOLE_PAGES


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_refuses_missing_and_bad_tokens(client: TestClient, route: tuple[str, str]) -> None:
    method, path = route
    assert call(client, method, path, None) == 401
    assert call(client, method, path, "cc_" + "A" * 43) == 401
    assert call(client, method, path, "not-a-token") == 401


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_follows_profiles(client: TestClient, users: Users,
                                route: tuple[str, str]) -> None:
    method, path = route
    needed = MATRIX[route]
    tokens = {name: users.token(name) for name in PROFILES}
    tokens["(no profile)"] = users.token()
    for name, token in tokens.items():
        granted = PROFILES.get(name, frozenset())
        allowed = not needed or bool(needed & granted)
        status = call(client, method, path, token)
        if allowed:
            assert status not in (401, 403), (name, route, status)
        else:
            assert status == 403, (name, route, status)


@pytest.mark.parametrize("permission", list(Permission), ids=str)
def test_a_custom_profile_passes_exactly_the_routes_of_its_permission(
        client: TestClient, users: Users, permission: Permission) -> None:
    admin = auth(users.token("Admin"))
    assert client.post("/v1/security-profiles", headers=admin, json={
        "name": "Only", "permissions": [permission]}).status_code == 201
    token = users.token("Only")
    for route, needed in sorted(MATRIX.items()):
        status = call(client, *route, token)
        if not needed or permission in needed:
            assert status not in (401, 403), (route, status)
        else:
            assert status == 403, (route, status)


@pytest.mark.parametrize("profile", ["Admin", "Agent", "Analyst"])
def test_a_session_cookie_passes_exactly_the_routes_its_users_token_does(
        client: TestClient, users: Users, profile: str) -> None:
    """Every HTTP route takes the session cookie (with its CSRF token on changes) as it
    takes a token of the same user; sockets take a ticket instead (tests/test_session.py)."""
    admin = auth(users.token("Admin"))
    users.token(profile, username="browser")
    assert client.put("/v1/users/browser/password", headers=admin,
                      json={"password": "a long enough passphrase"}).status_code == 204
    signed = client.post("/v1/session", json={"username": "browser",
                                              "password": "a long enough passphrase"})
    csrf = {"X-CSRF-Token": signed.json()["csrf_token"]}
    granted = PROFILES[profile]
    for (method, path), needed in sorted(MATRIX.items()):
        if method == "WS" or path.startswith("/v1/session"):
            continue
        status = client.request(method, _url(path), headers=csrf, json={}).status_code
        if not needed or needed & granted:
            assert status not in (401, 403), (profile, method, path, status)
        else:
            assert status == 403, (profile, method, path, status)


def test_socket_refused_before_accept_with_reason(client: TestClient, users: Users) -> None:
    denied = refused(client, "/v1/ingest", auth(users.token("Agent")))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"


def test_browser_subprotocol_token_is_echoed(client: TestClient, users: Users) -> None:
    token = users.token("Connector")
    with client.websocket_connect("/v1/ingest", subprotocols=["bearer", token]) as ws:
        assert ws.accepted_subprotocol == "bearer"
        assert ws.receive_json()["type"] == "hello"


def test_disallowed_origin_is_refused(client: TestClient, users: Users) -> None:
    client.app.state.settings.allowed_origins = ["https://console.example"]  # type: ignore[attr-defined]
    token = users.token("Connector")
    evil = {**auth(token), "Origin": "https://evil.example"}
    assert refused(client, "/v1/ingest", evil).status_code == 403
    with client.websocket_connect("/v1/ingest", headers={
            **auth(token), "Origin": "https://console.example"}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_tokens_are_stored_hashed_and_revocable(client: TestClient, users: Users,
                                                stored: Stored) -> None:
    admin = users.token("Admin")
    created = client.post("/v1/users", headers=auth(admin),
                          json={"username": "ana", "profiles": ["Analyst"]})
    assert created.status_code == 201
    issued = client.post("/v1/users/ana/tokens", headers=auth(admin), json={"label": "laptop"})
    secret, token_id = issued.json()["token"], issued.json()["id"]
    assert client.get("/v1/me", headers=auth(secret)).json()["profiles"] == ["Analyst"]

    assert secret.encode() not in stored.everything()
    assert (token_id, hashlib.sha256(secret.encode()).hexdigest()) in stored.rows(
        "SELECT id, digest FROM tokens")

    assert client.delete(f"/v1/tokens/{token_id}", headers=auth(admin)).status_code == 204
    assert client.get("/v1/me", headers=auth(secret)).status_code == 401
    assert client.delete(f"/v1/tokens/{token_id}", headers=auth(admin)).status_code == 404


def test_disabled_users_and_revoked_tokens_are_refused_on_sockets(client: TestClient,
                                                                  users: Users) -> None:
    admin = auth(users.token("Admin"))
    connector = users.token("Connector", username="feed")
    with client.websocket_connect("/v1/ingest", headers=auth(connector)) as ws:
        assert ws.receive_json()["type"] == "hello"
    assert client.patch("/v1/users/feed", headers=admin,
                        json={"disabled": True}).json()["disabled"] is True
    assert refused(client, "/v1/ingest", auth(connector)).status_code == 401
    assert client.get("/v1/me", headers=auth(connector)).status_code == 401
    client.patch("/v1/users/feed", headers=admin, json={"disabled": False})
    with client.websocket_connect("/v1/ingest", headers=auth(connector)) as ws:
        assert ws.receive_json()["type"] == "hello"
    assert client.patch("/v1/users/ghost", headers=admin,
                        json={"disabled": True}).status_code == 404

    issued = client.post("/v1/users/feed/tokens", headers=admin, json={}).json()
    client.delete(f"/v1/tokens/{issued['id']}", headers=admin)
    assert refused(client, "/v1/ingest", auth(issued["token"])).status_code == 401


def test_user_admin_errors(client: TestClient, users: Users) -> None:
    admin = auth(users.token("Admin"))
    bad = client.post("/v1/users", headers=admin, json={"username": "x", "profiles": ["God"]})
    assert bad.status_code == 422 and "unknown profile" in bad.json()["message"]
    client.post("/v1/users", headers=admin, json={"username": "y", "profiles": ["Agent"]})
    dup = client.post("/v1/users", headers=admin, json={"username": "y", "profiles": ["Agent"]})
    assert dup.status_code == 409
    listed = client.get("/v1/users", headers=admin).json()["users"]
    assert {"y"} <= {u["username"] for u in listed}
    assert client.post("/v1/users/ghost/tokens", headers=admin, json={}).status_code == 404


class Body:
    """A request body that counts what the server read of it."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.read = chunks, size, 0

    def __iter__(self) -> Any:
        for _ in range(self.chunks):
            self.read += 1
            yield b" " * self.size


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("agent", 403), ("bad", 401)])
def test_no_body_is_read_before_the_token_and_permission_pass(
        client: TestClient, users: Users, token: str | None, status: int) -> None:
    secrets = {None: None, "bad": "cc_" + "x" * 43, "agent": users.token("Agent")}
    headers = auth(secrets[token]) if secrets[token] else {}
    for path in ("/v1/conversations", "/v1/events", "/v1/rules/backtest"):
        body = Body(chunks=100)  # 6.4 MB, never read
        answer = client.post(path, content=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.json()["code"] == ("unauthenticated" if status == 401 else "forbidden")
        assert body.read <= 1, f"{path}: {body.read} chunks of the body were read first"
    # With the right token the body is read, parsed and answered as always.
    connector = users.token("Connector")
    assert client.post("/v1/conversations", headers=auth(connector),
                       json={"id": "ok-1"}).status_code == 201


def test_an_error_answer_never_grows_with_the_number_of_problems(
        client: TestClient, connector_token: str) -> None:
    """400,000 bad values used to earn a 40 MB answer: the details stop at 20."""
    bad = {"type": "conversation.started", "conversation": {
        "id": "many", "attributes": {f"k{i}": [i] for i in range(20_000)}}}
    answer = client.post("/v1/events", headers=auth(connector_token),
                         json={"events": [bad] * 10})
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "validation_error" and len(body["details"]) == 20
    assert "more problems" in body["message"] and len(answer.content) < 10_000
    with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
        ws.receive_json()
        few = {"type": "conversation.started", "conversation": {
            "id": "many", "attributes": {f"k{i}": [i] for i in range(3_000)}}}
        ws.send_json(few)
        reply = ws.receive_json()
        assert reply["code"] == "validation_error" and len(reply["details"]) == 20
        assert "more" in reply["message"]


def test_input_errors_are_4xx_and_dependency_failures_503(
        client: TestClient, users: Users, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = auth(users.token("Admin"))
    huge = client.get("/v1/transcripts?q=x&offset=9223372036854775808", headers=admin)
    assert huge.status_code == 422 and huge.json()["code"] == "validation_error"
    assert client.get("/v1/transcripts?q=x&offset=1000000", headers=admin).status_code == 200

    async def full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(client.app.state.store, "add_token", full)  # type: ignore[attr-defined]
    users_list = client.get("/v1/users", headers=admin).json()["users"]
    issued = client.post(f"/v1/users/{users_list[0]['username']}/tokens", headers=admin,
                         json={"label": "x"})
    assert issued.status_code == 503 and issued.json()["code"] == "unavailable"
    assert client.get("/v1/me", headers=admin).status_code == 200  # and it carries on


def test_the_sqlite_files_are_private(tmp_path: Path) -> None:
    """Transcripts, contacts and token digests: readable by the service's user alone."""
    folder = tmp_path / "new"

    async def scenario() -> dict[str, str]:
        store = SQLiteStore(folder / "cc.db")
        await store.open()
        try:
            await store.claim_pipeline()
            await store.save_rules({"rules": []})
            return {f.name: oct(f.stat().st_mode & 0o777) for f in folder.iterdir()}
        finally:
            await store.close()

    modes = run(scenario())
    assert set(modes) == {"cc.db", "cc.db-wal", "cc.db-shm", "cc.db.lock"}
    assert modes == dict.fromkeys(modes, "0o600")
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_a_body_nested_too_deep_is_malformed_json(client: TestClient,
                                                   connector_token: str) -> None:
    answer = client.post("/v1/events", content=b"[" * 100_000, headers={
        **auth(connector_token), "Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["code"] == "malformed_json"


def test_timestamps_are_iso_8601_strings_not_numbers(ingest: Any) -> None:
    ingest.start("ts")
    for number in (253402300800, 1767261600, 1.5, True):
        reply = ingest.say("ts", f"n{number}", "hello", started_at=number)
        assert reply["code"] == "validation_error" and "ISO 8601" in reply["message"], reply
    assert ingest.say("ts", "iso", "hello", started_at="2026-01-01T10:00:00Z")[
        "status"] == "accepted"


def test_the_api_pages_need_no_internet(client: TestClient) -> None:
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
                         ("/redoc", ("redoc.standalone.js",))):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html
        for asset in assets:
            assert f"/static-offline-docs/{asset}" in html
            served = client.get(f"/static-offline-docs/{asset}")
            assert served.status_code == 200 and len(served.content) > 100_000
