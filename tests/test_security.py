"""Security profiles on every route and socket: the full matrix, built from the app's
own route list so that a new route without an entry here fails the suite."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from monitoring.permissions import PROFILES, Permission
from tests.conftest import Stored, Users, auth, refused

P = Permission
OPEN = {("GET", "/healthz"), ("GET", "/docs"), ("GET", "/openapi.json"),
        ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
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
    ("GET", "/v1/alerts"): {P.ALERTS_OWN, P.ALERTS_ALL},
    ("WS", "/v1/alerts/stream"): {P.ALERTS_OWN, P.ALERTS_ALL},
    ("GET", "/v1/transcripts/{conversation_id}"): {P.TRANSCRIPTS_READ},
    ("GET", "/v1/transcripts"): {P.CONTACT_SEARCH},
    ("GET", "/v1/me"): set(),  # any authenticated user
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
    ("DELETE", "/v1/tokens/{token_id}"): {P.USERS_MANAGE},
    ("GET", "/v1/admin/dead-letters"): {P.OPERATE},
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
    url = path.replace("{conversation_id}", "c-x").replace("{username}", "nobody") \
        .replace("{token_id}", "t-x")
    headers = auth(token) if token else {}
    if method == "WS":
        try:
            with client.websocket_connect(url, headers=headers):
                return 101
        except WebSocketDenialResponse as denied:
            return denied.status_code
    return client.request(method, url, headers=headers, json={}).status_code


def test_matrix_covers_every_route(client: TestClient) -> None:
    assert app_routes(client) == set(MATRIX) | OPEN


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
