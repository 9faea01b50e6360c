"""Signing in from a browser (docs/security.md#signing-in-from-a-browser): passwords, the
session cookie, CSRF, socket tickets; on every deployment, and each store alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from starlette.testclient import WebSocketDenialResponse

from contact_center.app import create_app
from contact_center.cli import main
from contact_center.settings import Settings
from contact_center.stores.sqlite import SQLiteStore
from monitoring import passwords
from monitoring.sessions import Session, SessionPolicy, Ticket
from tests.conftest import (
    Stored,
    Users,
    _run_redis,
    auth,
    make_store,
    run,
    scale_out,
    wait_for_partitions,
)
from tests.test_audit import eventually

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with small costs: the same code paths, a fraction of the CPU (the real
    costs are timed in `test_an_unknown_user_costs_as_much_as_a_wrong_password`)."""
    monkeypatch.setattr(passwords, "HASHER", PasswordHash((Argon2Hasher(
        time_cost=1, memory_cost=8 * 1024, parallelism=1),)))


@pytest.fixture
def admin(users: Users) -> dict[str, str]:
    return auth(users.token("Admin", username="root"))


def with_password(client: TestClient, admin: dict[str, str], users: Users, username: str,
                  *profiles: str) -> None:
    users.token(*profiles, username=username)
    answer = client.put(f"/v1/users/{username}/password", headers=admin,
                        json={"password": PASSWORD})
    assert answer.status_code == 204, answer.text


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/v1/session", json={"username": username, "password": password})


def cookie_of(answer: Any) -> dict[str, str]:
    """The Set-Cookie header's attributes, by lower-case name ("cc_session": its value)."""
    parts = [p.strip() for p in answer.headers["set-cookie"].split(";")]
    found = {}
    for part in parts:
        name, _, value = part.partition("=")
        found[name.lower()] = value
    return found


def signed_in(client: TestClient, admin: dict[str, str], users: Users, username: str,
              *profiles: str) -> str:
    """Sign ``username`` in on ``client`` (its cookie jar keeps the cookie); their CSRF
    token."""
    with_password(client, admin, users, username, *profiles)
    answer = sign_in(client, username)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


# -- signing in -------------------------------------------------------------------------


def test_sign_in_sets_a_strict_http_only_cookie_and_answers_who_and_csrf(
        client: TestClient, admin: dict[str, str], users: Users, stored: Stored) -> None:
    with_password(client, admin, users, "kim", "CallCenterManager")
    answer = sign_in(client, "kim")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["username"] == "kim" and "realtime-metrics" in body["permissions"]
    assert len(body["csrf_token"]) == 64 and answer.headers["cache-control"] == "no-store"
    cookie = cookie_of(answer)
    assert cookie["cc_session"].startswith("ccs_")
    assert "httponly" in cookie and cookie["samesite"] == "strict" and cookie["path"] == "/"
    assert "secure" not in cookie  # (plain HTTP, no setting)
    assert PASSWORD not in answer.text and "argon2" not in answer.text
    everything = stored.everything()
    assert PASSWORD.encode() not in everything
    assert cookie["cc_session"].encode() not in everything  # (its digest only)
    assert client.get("/v1/me").json()["username"] == "kim"
    session = client.get("/v1/session").json()
    assert session["csrf_token"] == body["csrf_token"] and session["username"] == "kim"
    entry = eventually(client, admin, action="session.create", actor="kim")[0]
    assert entry["result"] == "ok" and entry["target_id"] == "kim"


def test_the_cookie_is_secure_over_https_or_when_set(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    with_password(client, admin, users, "kim", "Agent")
    over_https = client.post("https://testserver/v1/session",
                             json={"username": "kim", "password": PASSWORD})
    assert "secure" in cookie_of(over_https)
    client.app.state.settings.session_cookie_secure = True  # type: ignore[attr-defined]
    assert "secure" in cookie_of(sign_in(client, "kim"))


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    with_password(client, admin, users, "kim", "Agent")
    users.token("Agent", username="nopass")  # (a user without a password)
    wrong = sign_in(client, "kim", "not the password at all")
    unknown = sign_in(client, "nobody")
    without = sign_in(client, "nopass")
    assert wrong.status_code == unknown.status_code == without.status_code == 401
    assert wrong.json() == unknown.json() == without.json()
    assert "set-cookie" not in wrong.headers
    refused = eventually(client, admin, 3, action="session.create", result="unauthenticated")
    assert {e["target_id"] for e in refused} == {"kim", "nobody", "nopass"}
    assert all(e["actor"] is None for e in refused)


def test_a_disabled_user_cannot_sign_in_and_their_session_stops(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    signed_in(client, admin, users, "kim", "Agent")
    assert client.patch("/v1/users/kim", headers=admin,
                        json={"disabled": True}).status_code == 200
    assert client.get("/v1/me").status_code == 401
    assert sign_in(client, "kim").status_code == 401


def test_failed_sign_ins_are_slowed_down_like_failed_tokens(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    with_password(client, admin, users, "kim", "Agent")
    client.app.state.limits.failures.per_minute = 2  # type: ignore[attr-defined]
    assert sign_in(client, "kim", "wrong password 1").status_code == 401
    assert sign_in(client, "kim", "wrong password 2").status_code == 401
    started = time.monotonic()
    slowed = sign_in(client, "kim", "wrong password 3")
    assert slowed.status_code == 429 and slowed.json()["code"] == "too_many_failures"
    assert int(slowed.headers["retry-after"]) > 0 and time.monotonic() - started >= 0.9
    assert sign_in(client, "kim").status_code == 200  # (the right one passes at once)


def test_an_unknown_user_costs_as_much_as_a_wrong_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "HASHER", PasswordHash((Argon2Hasher(),)))
    stored = run(passwords.hash_password(PASSWORD))

    def seconds(stored_hash: str | None) -> float:
        started = time.perf_counter()
        assert run(passwords.verify("a wrong password", stored_hash)) is False
        return time.perf_counter() - started

    run(passwords.verify("warm", None))  # (the dummy hash is made once)
    wrong = min(seconds(stored) for _ in range(3))
    unknown = min(seconds(None) for _ in range(3))
    assert 0.5 < unknown / wrong < 2, (unknown, wrong)
    assert run(passwords.verify(PASSWORD, stored)) is True


# -- the cookie on every route, CSRF --------------------------------------------------------


def test_a_session_has_its_users_permissions(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    signed_in(client, admin, users, "ann", "Agent")
    assert client.get("/v1/alerts").status_code == 200
    assert client.get("/v1/users").status_code == 403
    assert client.get("/v1/me", headers={"Cookie": "cc_session=ccs_" + "A" * 43}).status_code == 401


def test_changes_by_cookie_need_the_sessions_csrf_token(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    csrf = signed_in(client, admin, users, "boss", "Admin")
    new_user = {"username": "ann", "profiles": ["Agent"]}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}):
        refused = client.post("/v1/users", json=new_user, headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "csrf", headers
        refused = client.delete("/v1/tokens/t-x", headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "csrf", headers
    assert client.patch("/v1/users/boss", json={}).json()["code"] == "csrf"
    assert client.post("/v1/users", json=new_user,
                       headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.get("/v1/users").status_code == 200  # (reading needs none)
    # A bearer request needs none, the cookie jar's cookie notwithstanding.
    assert client.post("/v1/users", headers=admin, json={
        "username": "bo", "profiles": ["Agent"]}).status_code == 201
    failed = eventually(client, admin, action="auth.failed", result="csrf")
    assert failed[0]["target_id"] in ("/v1/users", "/v1/tokens/t-x", "/v1/users/boss")


def test_sign_out_ends_the_session_on_the_server(
        client: TestClient, admin: dict[str, str], users: Users, stored: Stored) -> None:
    csrf = signed_in(client, admin, users, "kim", "Agent")
    secret = client.cookies["cc_session"]
    assert client.delete("/v1/session").json()["code"] == "csrf"
    out = client.delete("/v1/session", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    cleared = cookie_of(out)
    assert cleared["cc_session"] in ("", '""') and cleared["max-age"] == "0"
    assert client.get("/v1/me", headers={"Cookie": "cc_session=" + secret}).status_code == 401
    assert stored.rows("SELECT count(*) FROM sessions") == [(0,)]
    assert eventually(client, admin, action="session.end")[0]["actor"] == "kim"


def test_a_token_has_no_session(client: TestClient, admin: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/session"), ("DELETE", "/v1/session"),
                         ("POST", "/v1/session/tickets")):
        answer = client.request(method, path, headers=admin)
        assert answer.status_code == 404 and answer.json()["code"] == "no_session"


def test_sessions_end_when_idle_and_when_old(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    access = client.app.state.access  # type: ignore[attr-defined]
    now = [1_000_000.0]
    access.clock = lambda: now[0]
    access.sessions = SessionPolicy(idle_seconds=600, lifetime_seconds=3600)
    signed_in(client, admin, users, "kim", "Agent")
    secret = client.cookies["cc_session"]
    now[0] += 590
    assert client.get("/v1/me").status_code == 200  # (used: idle from here)
    now[0] += 590
    assert client.get("/v1/me").status_code == 200
    now[0] += 610
    assert client.get("/v1/me").status_code == 401  # idle too long

    assert sign_in(client, "kim").status_code == 200
    started = now[0]
    while now[0] + 500 < started + 3600:
        now[0] += 500
        assert client.get("/v1/me").status_code == 200
    now[0] = started + 3600
    assert client.get("/v1/me").status_code == 401  # however used: too old
    assert client.get("/v1/me", headers={"Cookie": "cc_session=" + secret}).status_code == 401


def test_a_new_password_ends_the_users_sessions(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    signed_in(client, admin, users, "kim", "Agent")
    assert client.get("/v1/me").status_code == 200
    assert client.put("/v1/users/kim/password", headers=admin,
                      json={"password": "another long passphrase"}).status_code == 204
    assert client.get("/v1/me").status_code == 401
    assert sign_in(client, "kim").status_code == 401
    assert sign_in(client, "kim", "another long passphrase").status_code == 200


def test_setting_a_password_is_checked_and_audited(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    users.token("Admin", username="boss")
    short = client.put("/v1/users/boss/password", headers=admin,
                       json={"password": "tiny-secret"})
    assert short.status_code == 422 and "tiny-secret" not in short.text  # (never echoed)
    assert client.put("/v1/users/nobody/password", headers=admin,
                      json={"password": PASSWORD}).json()["code"] == "unknown_user"
    assert client.post("/v1/security-profiles", headers=admin, json={
        "name": "Helpdesk", "permissions": ["users-manage"]}).status_code == 201
    helpdesk = auth(users.token("Helpdesk"))
    refused = client.put("/v1/users/boss/password", headers=helpdesk,
                         json={"password": PASSWORD})  # (boss may do more than helpdesk)
    assert refused.status_code == 403 and refused.json()["code"] == "cannot_grant"
    assert client.put("/v1/users/boss/password", headers=admin,
                      json={"password": PASSWORD}).status_code == 204
    done = eventually(client, admin, action="user.password", result="ok")
    assert done[0]["target_id"] == "boss" and PASSWORD not in str(done)


# -- socket tickets ------------------------------------------------------------------------


def ticket(client: TestClient, csrf: str) -> str:
    answer = client.post("/v1/session/tickets", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 201, answer.text
    assert answer.json()["expires_in"] == 30
    return str(answer.json()["ticket"])


def denied(client: TestClient, url: str, subprotocols: list[str],
           headers: dict[str, str] | None = None) -> WebSocketDenialResponse:
    with pytest.raises(WebSocketDenialResponse) as refused:  # noqa: SIM117
        with client.websocket_connect(url, subprotocols=subprotocols, headers=headers or {}):
            pass
    return refused.value


def test_a_ticket_opens_one_socket_once(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    csrf = signed_in(client, admin, users, "kim", "CallCenterManager")
    assert client.post("/v1/session/tickets").json()["code"] == "csrf"
    once = ticket(client, csrf)
    with client.websocket_connect("/v1/live", subprotocols=["ticket", once]) as ws:
        assert ws.accepted_subprotocol == "ticket"
        assert ws.receive_json()["type"] == "snapshot"
    assert denied(client, "/v1/live", ["ticket", once]).status_code == 401
    assert denied(client, "/v1/live", ["ticket", "cct_" + "A" * 43]).status_code == 401
    # The session's permissions hold: kim may not ingest.
    assert denied(client, "/v1/ingest", ["ticket", ticket(client, csrf)]).status_code == 403


def test_an_expired_ticket_is_refused(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    access = client.app.state.access  # type: ignore[attr-defined]
    now = [time.time()]
    access.clock = lambda: now[0]
    csrf = signed_in(client, admin, users, "kim", "CallCenterManager")
    late = ticket(client, csrf)
    now[0] += 31
    assert denied(client, "/v1/live", ["ticket", late]).status_code == 401
    in_time = ticket(client, csrf)
    now[0] += 29
    with client.websocket_connect("/v1/live", subprotocols=["ticket", in_time]) as ws:
        assert ws.receive_json()["type"] == "snapshot"


def test_ticket_sockets_keep_to_the_allowed_origins(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    client.app.state.settings.allowed_origins = ["https://console.example"]  # type: ignore[attr-defined]
    csrf = signed_in(client, admin, users, "kim", "CallCenterManager")
    evil = denied(client, "/v1/live", ["ticket", ticket(client, csrf)],
                  {"Origin": "https://evil.example"})
    assert evil.status_code == 403
    with client.websocket_connect("/v1/live", subprotocols=["ticket", ticket(client, csrf)],
                                  headers={"Origin": "https://console.example"}) as ws:
        assert ws.receive_json()["type"] == "snapshot"
    refused = client.post("/v1/session", headers={"Origin": "https://evil.example"},
                          json={"username": "kim", "password": PASSWORD})
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"


def test_signing_out_closes_the_sessions_sockets(
        client: TestClient, admin: dict[str, str], users: Users) -> None:
    csrf = signed_in(client, admin, users, "kim", "CallCenterManager")
    with client.websocket_connect("/v1/live", subprotocols=["ticket", ticket(client, csrf)]
                                  ) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert client.delete("/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        while (message := ws.receive())["type"] != "websocket.close":
            pass
        assert message["code"] == 1008
        assert message["reason"] == "revoked: the session ended or its user was disabled"


def test_a_ticket_from_one_api_node_opens_a_socket_on_another(
        backend: str, settings: Settings, tmp_path: Path, admin: dict[str, str],
        users: Users) -> None:
    if backend != "scaleout":
        pytest.skip("one API node only: embedded")
    node_a = create_app(scale_out(settings, tmp_path, _run_redis["url"]),
                        make_store(backend, tmp_path))
    node_b = create_app(scale_out(settings, tmp_path, _run_redis["url"], worker=False),
                        make_store(backend, tmp_path))
    with TestClient(node_a) as a, TestClient(node_b) as b:
        wait_for_partitions(a)
        csrf = signed_in(a, admin, users, "kim", "CallCenterManager")
        issued = ticket(a, csrf)
        with b.websocket_connect("/v1/live", subprotocols=["ticket", issued]) as ws:
            assert ws.receive_json()["type"] == "snapshot"
        assert denied(a, "/v1/live", ["ticket", issued]).status_code == 401


test_a_ticket_from_one_api_node_opens_a_socket_on_another = pytest.mark.app(
    test_a_ticket_from_one_api_node_opens_a_socket_on_another)


# -- the command line ---------------------------------------------------------------------


def test_the_cli_sets_a_password_from_standard_input(tmp_path: Path) -> None:
    db = str(tmp_path / "cc.db")
    cli = CliRunner()
    assert cli.invoke(main, ["migrate", "--db", db]).exit_code == 0
    assert cli.invoke(main, ["users", "create", "kim", "--profile", "Agent", "--db", db]
                      ).exit_code == 0
    short = cli.invoke(main, ["users", "password", "kim", "--db", db], input="short\n")
    assert short.exit_code != 0 and "at least 12" in short.output
    assert cli.invoke(main, ["users", "password", "nobody", "--db", db],
                      input=PASSWORD + "\n").exit_code != 0
    done = cli.invoke(main, ["users", "password", "kim", "--db", db], input=PASSWORD + "\n")
    assert done.exit_code == 0, done.output
    assert PASSWORD not in done.output
    with TestClient(create_app(Settings(database=db))) as client:
        assert sign_in(client, "kim").status_code == 200

    async def actions() -> list[str]:
        store = SQLiteStore(db)
        await store.open()
        try:
            return [e.action for e in await store.audit_chain(0, 100)]
        finally:
            await store.close()

    assert "user.password" in run(actions())


# -- the stores ----------------------------------------------------------------------------


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Iterator[Any]:
    yield make_store(backend, tmp_path)


def test_stores_keep_sessions_and_use_tickets_once(store: Any, users: Users) -> None:
    users.token("Agent", username="kim")

    async def scenario() -> None:
        await store.open()
        try:
            user = await store.get_user(username="kim")
            assert await store.password_hash(user.id) is None
            assert await store.set_password("kim", "$argon2id$stand-in")
            assert await store.password_hash(user.id) == "$argon2id$stand-in"
            assert not await store.set_password("nobody", "x")
            await store.add_session(Session("d1", user.id, 100.0, 100.0))
            await store.add_session(Session("d2", user.id, 100.0, 100.0))
            await store.touch_session("d1", 200.0)
            await store.touch_session("d1", 150.0)  # (never back)
            assert (await store.find_session("d1")).seen_at == 200.0
            assert await store.prune_sessions(seen_before=150.0, created_before=0.0) == 1
            assert await store.find_session("d2") is None
            version = await store.access_version()
            assert await store.end_session("d1") and not await store.end_session("d1")
            assert await store.access_version() > version

            await store.add_ticket(Ticket("t1", "d1", 130.0))
            await store.add_ticket(Ticket("t2", "d1", 140.0))
            assert await store.take_ticket("t1", 131.0) is None  # expired
            assert await store.take_ticket("t2", 120.0) == "d1"
            assert await store.take_ticket("t2", 120.0) is None  # used
            taken = await asyncio.gather(*[store.take_ticket("t3", 0.0) for _ in range(2)])
            assert taken == [None, None]
            await store.add_ticket(Ticket("t4", "d1", 170.0))
            taken = await asyncio.gather(*[store.take_ticket("t4", 150.0) for _ in range(4)])
            assert taken.count("d1") == 1 and taken.count(None) == 3

            await store.add_session(Session("d3", user.id, 100.0, 100.0))
            assert await store.set_password("kim", "$argon2id$another")
            assert await store.find_session("d3") is None  # a new password ends them
        finally:
            await store.close()

    run(scenario())
