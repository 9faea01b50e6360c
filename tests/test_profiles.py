"""Custom security profiles: the rules (pure), both stores (CRUD, names, in use, the access
version), the routes (who may grant what, a change that holds from the next request), and
the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from contact_center.cli import main
from contact_center.stores import Store
from contact_center.stores.sqlite import SQLiteStore
from monitoring.credentials import authenticate, create_user, issue_token
from monitoring.permissions import CATALOGUE, PROFILES, Permission, permissions_of
from monitoring.profiles import (
    BuiltinProfile,
    CannotGrant,
    InvalidProfileName,
    ProfileExists,
    ProfileInUse,
    SecurityProfile,
    UnknownProfile,
    assignment_check,
    check_name,
    decode_permissions,
    granted_by,
    new_profile,
    profile_change,
)
from tests.conftest import Users, auth, run
from tests.test_directory import on_store

P = Permission
ALL = frozenset(Permission)
PROJECT = Path(__file__).resolve().parents[1]


# -- the rules ------------------------------------------------------------------------------


def test_names_follow_the_pattern_and_leave_the_built_in_ones_alone() -> None:
    for good in ("Supervisor", "qa.reviewers", "Tier-2_leads", "x"):
        check_name(good)
    for bad in ("", "2nd", "with space", "é", "a" * 65, "-x"):
        with pytest.raises(InvalidProfileName):
            check_name(bad)
    for taken in ("Admin", "admin", "ADMIN", "callcentermanager", "agent"):
        with pytest.raises(ProfileExists, match="built-in"):
            check_name(taken)


def test_an_unknown_or_deleted_profile_grants_nothing() -> None:
    custom = {"Leads": frozenset({P.ALERTS_ALL})}
    assert permissions_of(["Agent", "Leads"], custom) == {P.ALERTS_OWN, P.ALERTS_ALL}
    assert permissions_of(["Leads"]) == frozenset()  # (not given: as if deleted)
    assert permissions_of(["Gone", "admin"], custom) == frozenset()
    assert decode_permissions(["ingest", "a-permission-of-a-newer-version"]) == {P.INGEST}


def test_nobody_grants_what_they_lack() -> None:
    actor = frozenset({P.PROFILES_MANAGE, P.CONTACT_SEARCH})
    with pytest.raises(CannotGrant, match="transcripts-read") as refused:
        new_profile("Readers", [P.CONTACT_SEARCH, P.TRANSCRIPTS_READ], "", actor, "u", 1.0)
    assert refused.value.missing == [P.TRANSCRIPTS_READ]
    made = new_profile("Searchers", [P.CONTACT_SEARCH], "", actor, "u", 1.0)
    assert made.permissions == {P.CONTACT_SEARCH} and made.created_by == "u"

    # Changing: only what it gains must be the actor's; taking away needs nothing.
    held = SecurityProfile("Mixed", frozenset({P.CONTACT_SEARCH, P.TRANSCRIPTS_READ}))
    narrower = profile_change(actor, [P.CONTACT_SEARCH], None, 2.0)(held)
    assert narrower.permissions == {P.CONTACT_SEARCH} and narrower.updated_at == 2.0
    kept = profile_change(actor, [P.CONTACT_SEARCH, P.TRANSCRIPTS_READ], "d", 2.0)(held)
    assert kept.description == "d"
    with pytest.raises(CannotGrant, match="ingest"):
        profile_change(actor, [P.INGEST], None, 2.0)(held)
    with pytest.raises(BuiltinProfile):
        profile_change(ALL, [], None, 2.0)(SecurityProfile("Admin", ALL, builtin=True))

    # Users: the profiles they gain, built-in or custom.
    custom = {"Searchers": frozenset({P.CONTACT_SEARCH})}
    assert granted_by(["Agent", "Searchers"], ["Agent"], custom) == {P.CONTACT_SEARCH}
    assignment_check(actor, ["Searchers"])([], custom)
    assignment_check(actor, ["Analyst"])(["Analyst"], {})  # held already: kept
    assignment_check(actor, [])(["Admin"], {})  # taken away
    with pytest.raises(CannotGrant, match="transcripts-read"):
        assignment_check(actor, ["Analyst"])([], {})


def test_the_catalogue_names_every_permission_and_the_docs_list_it() -> None:
    assert set(CATALOGUE) == set(Permission)
    docs = (PROJECT / "docs" / "security.md").read_text()
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", docs, re.MULTILINE))
    assert {p.value for p in Permission} <= rows


# -- the stores -----------------------------------------------------------------------------


def test_profiles_in_the_store(backend: str, tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        version = await store.access_version()
        leads = SecurityProfile("Leads", frozenset({P.ALERTS_ALL, P.REALTIME_METRICS}),
                                "team leads", created_at=1.0, created_by="ann", updated_at=1.0)
        await store.create_profile(leads)
        await store.create_profile(SecurityProfile("QA", frozenset(), created_at=2.0,
                                                   updated_at=2.0))
        assert await store.access_version() == version + 2
        for taken in ("Leads", "leads", "LEADS"):
            with pytest.raises(ProfileExists):
                await store.create_profile(SecurityProfile(taken, frozenset(), created_at=3.0,
                                                           updated_at=3.0))
        assert await store.access_version() == version + 2  # refusals count nothing
        assert await store.get_profile("Leads") == leads
        assert await store.get_profile("leads") is None  # (names are exact)
        assert [p.name for p in await store.list_profiles()] == ["Leads", "QA"]
        assert [p.name for p in await store.list_profiles(["QA", "Gone"])] == ["QA"]
        assert await store.list_profiles([]) == []

        changed = await store.update_profile("Leads", profile_change(
            ALL, [P.ALERTS_ALL], "leads of teams", 5.0))
        assert changed is not None and await store.get_profile("Leads") == changed
        assert changed.permissions == {P.ALERTS_ALL} and changed.created_at == 1.0
        assert await store.access_version() == version + 3
        with pytest.raises(CannotGrant):
            await store.update_profile("Leads", profile_change(
                frozenset({P.ALERTS_ALL}), [P.INGEST], None, 6.0))
        assert await store.get_profile("Leads") == changed  # (nothing saved)
        assert await store.update_profile("Gone", profile_change(ALL, [], None, 6.0)) is None
        assert await store.access_version() == version + 3

        # Users hold custom profiles as built-in ones; only known ones.
        await create_user(store, "zoe", ["Leads"])
        await create_user(store, "bob", ["Agent", "Leads"])
        with pytest.raises(UnknownProfile, match="Gone"):
            await create_user(store, "cat", ["Agent", "Gone"])
        assert await store.get_user(username="cat") is None
        with pytest.raises(CannotGrant):
            await create_user(store, "dan", ["Leads"],
                              check=assignment_check(frozenset(), ["Leads"]))
        assert await store.get_user(username="dan") is None

        with pytest.raises(ProfileInUse, match=r"held by 2 user\(s\): bob, zoe") as in_use:
            await store.delete_profile("Leads")
        assert in_use.value.holders == ["bob", "zoe"]
        before = await store.access_version()
        assert await store.set_profiles("bob", ["Agent"])
        assert await store.access_version() == before + 1
        with pytest.raises(UnknownProfile):
            await store.set_profiles("bob", ["Gone"])
        with pytest.raises(CannotGrant):
            await store.set_profiles("bob", ["Agent", "QA", "Analyst"],
                                     check=assignment_check(frozenset(), ["Analyst"]))
        assert (await store.get_user(username="bob")).profiles == ["Agent"]  # type: ignore[union-attr]
        assert not await store.set_profiles("nobody", ["Agent"])
        assert await store.set_profiles("zoe", ["QA"])
        assert await store.delete_profile("Leads")
        assert not await store.delete_profile("Leads")
        assert await store.access_version() == before + 3
        assert [p.name for p in await store.list_profiles()] == ["QA"]

    on_store(backend, tmp_path, work)


def test_a_refused_deletion_names_ten_holders_and_counts_the_rest(
        backend: str, tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        await store.create_profile(SecurityProfile("Many", frozenset(), created_at=1.0,
                                                   updated_at=1.0))
        for i in range(12):
            await create_user(store, f"u{i:02}", ["Many"])
        with pytest.raises(ProfileInUse) as in_use:
            await store.delete_profile("Many")
        assert in_use.value.holders == [f"u{i:02}" for i in range(10)]
        assert in_use.value.count == 12 and "and 2 more" in str(in_use.value)

    on_store(backend, tmp_path, work)


def test_a_token_gets_its_custom_profiles_permissions_afresh(backend: str,
                                                             tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        await store.create_profile(SecurityProfile("Feed", frozenset({P.INGEST}),
                                                   created_at=1.0, updated_at=1.0))
        user = await create_user(store, "feed", ["Feed", "Analyst"])
        _, secret = await issue_token(store, user)
        principal = await authenticate(store, secret)
        assert principal is not None
        assert principal.permissions == {P.INGEST, P.CONTACT_SEARCH, P.TRANSCRIPTS_READ}
        await store.update_profile("Feed", profile_change(ALL, [P.OPERATE], None, 2.0))
        assert (await authenticate(store, secret)).permissions == {  # type: ignore[union-attr]
            P.OPERATE, P.CONTACT_SEARCH, P.TRANSCRIPTS_READ}

    on_store(backend, tmp_path, work)


# -- the routes -----------------------------------------------------------------------------


def _create(client: TestClient, token: str, name: str, *permissions: str,
            **more: Any) -> Any:
    return client.post("/v1/security-profiles", headers=auth(token),
                       json={"name": name, "permissions": list(permissions)} | more)


def test_custom_profiles_over_the_api(client: TestClient, users: Users) -> None:
    admin = users.token("Admin", username="root")
    made = _create(client, admin, "Leads", "alerts-all", "realtime-metrics", "alerts-all",
                   description="team leads")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["builtin"] is False and body["created_by"] == "root"
    assert body["permissions"] == ["alerts-all", "realtime-metrics"]
    assert body["description"] == "team leads"

    listed = client.get("/v1/security-profiles", headers=auth(admin)).json()["profiles"]
    assert [p["name"] for p in listed] == [*PROFILES, "Leads"]
    assert all(p["builtin"] for p in listed[:-1])
    assert listed[0]["permissions"] == sorted(p.value for p in Permission)
    assert client.get("/v1/security-profiles/Leads", headers=auth(admin)).json() == body
    assert client.get("/v1/security-profiles/Analyst", headers=auth(admin)).json()[
        "permissions"] == ["contact-search", "transcripts-read"]

    changed = client.patch("/v1/security-profiles/Leads", headers=auth(admin),
                           json={"description": "leads"})
    assert changed.status_code == 200
    assert changed.json()["permissions"] == body["permissions"]
    assert changed.json()["description"] == "leads"
    changed = client.patch("/v1/security-profiles/Leads", headers=auth(admin),
                           json={"permissions": ["alerts-all"]})
    assert changed.json()["permissions"] == ["alerts-all"]
    assert changed.json()["description"] == "leads"
    assert client.delete("/v1/security-profiles/Leads", headers=auth(admin)).status_code == 204
    for method in ("GET", "PATCH", "DELETE"):
        gone = client.request(method, "/v1/security-profiles/Leads", headers=auth(admin),
                              json={})
        assert gone.status_code == 404 and gone.json()["code"] == "unknown_profile"

    catalogue = client.get("/v1/permissions", headers=auth(users.token("Agent"))).json()
    assert [p["name"] for p in catalogue["permissions"]] == [p.value for p in Permission]


def test_names_permissions_and_built_in_profiles_are_guarded(client: TestClient,
                                                             users: Users) -> None:
    admin = users.token("Admin")
    assert _create(client, admin, "Leads").status_code == 201
    for taken in ("Leads", "LEADS", "admin", "Connector"):
        answer = _create(client, admin, taken)
        assert answer.status_code == 409 and answer.json()["code"] == "profile_exists", taken
    for bad in ("with space", "9lives", ""):
        assert _create(client, admin, bad).json()["code"] == "validation_error"
    unknown = _create(client, admin, "Gods", "omnipotence")
    assert unknown.status_code == 422 and unknown.json()["code"] == "validation_error"
    assert client.patch("/v1/security-profiles/Leads", headers=auth(admin),
                        json={"permissions": ["omnipotence"]}).status_code == 422
    for name in PROFILES:
        for method, body in (("PATCH", {"permissions": []}), ("DELETE", None)):
            answer = client.request(method, f"/v1/security-profiles/{name}",
                                    headers=auth(admin), json=body)
            assert answer.status_code == 409, (method, name)
            assert answer.json()["code"] == "builtin_profile"


def test_a_profile_in_use_cannot_be_deleted(client: TestClient, users: Users) -> None:
    admin = auth(users.token("Admin"))
    _create(client, admin["Authorization"][7:], "Night", "alerts-own")
    for name in ("owl", "bat"):
        assert client.post("/v1/users", headers=admin, json={
            "username": name, "profiles": ["Agent", "Night"]}).status_code == 201
    answer = client.delete("/v1/security-profiles/Night", headers=admin)
    assert answer.status_code == 409 and answer.json()["code"] == "profile_in_use"
    assert "bat, owl" in answer.json()["message"]
    for name in ("owl", "bat"):
        client.patch(f"/v1/users/{name}", headers=admin, json={"profiles": ["Agent"]})
    assert client.delete("/v1/security-profiles/Night", headers=admin).status_code == 204


def test_nobody_grants_a_permission_they_lack(client: TestClient, users: Users) -> None:
    admin = users.token("Admin")
    assert _create(client, admin, "Profilers", "profiles-manage", "contact-search",
                   "users-manage").status_code == 201
    assert _create(client, admin, "Readers", "transcripts-read").status_code == 201
    assert client.post("/v1/users", headers=auth(admin), json={
        "username": "pat", "profiles": ["Profilers"]}).status_code == 201
    pat = client.post("/v1/users/pat/tokens", headers=auth(admin), json={}).json()["token"]

    # Profiles: created or changed with permissions pat lacks.
    refused = _create(client, pat, "Wider", "contact-search", "transcripts-read", "operate")
    assert refused.status_code == 403 and refused.json()["code"] == "cannot_grant"
    assert "operate, transcripts-read" in refused.json()["message"]
    assert _create(client, pat, "Searchers", "contact-search").status_code == 201
    widened = client.patch("/v1/security-profiles/Searchers", headers=auth(pat),
                           json={"permissions": ["contact-search", "ingest"]})
    assert widened.status_code == 403 and widened.json()["code"] == "cannot_grant"
    # Readers holds what pat lacks: pat may narrow it and describe it, not widen it.
    assert client.patch("/v1/security-profiles/Readers", headers=auth(pat),
                        json={"description": "x"}).status_code == 200
    assert client.patch("/v1/security-profiles/Readers", headers=auth(pat),
                        json={"permissions": []}).status_code == 200
    assert client.patch("/v1/security-profiles/Readers", headers=auth(pat), json={
        "permissions": ["transcripts-read"]}).json()["code"] == "cannot_grant"

    # Users: given profiles (built-in or custom) with permissions pat lacks.
    for profiles in (["Analyst"], ["Admin"], ["Searchers", "Agent"]):
        refused = client.post("/v1/users", headers=auth(pat),
                              json={"username": "x", "profiles": profiles})
        assert refused.status_code == 403 and refused.json()["code"] == "cannot_grant"
    assert client.get("/v1/users", headers=auth(admin)).json()["users"][-1][
        "username"] != "x"
    made = client.post("/v1/users", headers=auth(pat),
                       json={"username": "sam", "profiles": ["Searchers"]})
    assert made.status_code == 201 and made.json()["permissions"] == ["contact-search"]
    raised = client.patch("/v1/users/sam", headers=auth(pat), json={"profiles": ["Admin"]})
    assert raised.status_code == 403 and raised.json()["code"] == "cannot_grant"
    assert client.patch("/v1/users/sam", headers=auth(pat),
                        json={"profiles": ["Analyst"]}).json()["code"] == "cannot_grant"
    # A user who holds what pat lacks is beyond pat: not even narrowed or disabled.
    client.patch("/v1/users/sam", headers=auth(admin),
                 json={"profiles": ["Searchers", "Analyst"]})
    for change in ({"profiles": ["Searchers"]}, {"disabled": True}):
        beyond = client.patch("/v1/users/sam", headers=auth(pat), json=change)
        assert beyond.status_code == 403 and beyond.json()["code"] == "cannot_grant"
    narrowed = client.patch("/v1/users/sam", headers=auth(admin),
                            json={"profiles": ["Searchers"]})
    assert narrowed.json()["permissions"] == ["contact-search"]
    assert client.patch("/v1/users/sam", headers=auth(pat),
                        json={"disabled": True}).status_code == 200


def test_a_changed_profile_holds_from_the_next_request(client: TestClient,
                                                       users: Users) -> None:
    admin = auth(users.token("Admin"))
    _create(client, admin["Authorization"][7:], "Readers", "transcripts-read",
            "contact-search")
    answer = client.post("/v1/users", headers=admin,
                         json={"username": "rita", "profiles": ["Readers"]})
    assert answer.json()["permissions"] == ["contact-search", "transcripts-read"]
    rita = auth(client.post("/v1/users/rita/tokens", headers=admin, json={}).json()["token"])
    assert client.get("/v1/transcripts?q=x", headers=rita).status_code == 200
    assert client.get("/v1/me", headers=rita).json()["profiles"] == ["Readers"]

    client.patch("/v1/security-profiles/Readers", headers=admin,
                 json={"permissions": ["transcripts-read"]})
    assert client.get("/v1/transcripts?q=x", headers=rita).status_code == 403
    assert client.get("/v1/me", headers=rita).json()["permissions"] == ["transcripts-read"]
    listed = {u["username"]: u for u in client.get("/v1/users", headers=admin).json()["users"]}
    assert listed["rita"]["permissions"] == ["transcripts-read"]

    # Given other profiles, and disabled, in one change.
    changed = client.patch("/v1/users/rita", headers=admin,
                           json={"profiles": ["Analyst"], "disabled": True})
    assert changed.json()["profiles"] == ["Analyst"] and changed.json()["disabled"]
    assert client.get("/v1/me", headers=rita).status_code == 401
    client.patch("/v1/users/rita", headers=admin, json={"disabled": False})
    assert client.get("/v1/transcripts?q=x", headers=rita).status_code == 200
    assert client.delete("/v1/security-profiles/Readers", headers=admin).status_code == 204


def test_users_hold_custom_profiles_known_ones_only(client: TestClient,
                                                    users: Users) -> None:
    admin = auth(users.token("Admin"))
    unknown = client.post("/v1/users", headers=admin,
                          json={"username": "x", "profiles": ["Agent", "Ghosts"]})
    assert unknown.status_code == 422 and unknown.json()["code"] == "invalid_user"
    assert "Ghosts" in unknown.json()["message"]
    client.post("/v1/users", headers=admin, json={"username": "y", "profiles": ["Agent"]})
    for body in ({"profiles": ["Ghosts"]}, {"profiles": []}, {"profiles": ["a b"]}):
        assert client.patch("/v1/users/y", headers=admin, json=body).status_code == 422
    assert client.patch("/v1/users/ghost", headers=admin,
                        json={"profiles": ["Agent"]}).status_code == 404
    unchanged = client.patch("/v1/users/y", headers=admin, json={})
    assert unchanged.status_code == 200 and unchanged.json()["profiles"] == ["Agent"]


# -- the command line -----------------------------------------------------------------------


def test_the_command_line_manages_profiles(tmp_path: Path) -> None:
    db = str(tmp_path / "cc.db")

    async def create_db() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    run(create_db())

    def cli(*args: str, ok: bool = True) -> str:
        result = CliRunner().invoke(main, [*args, "--db", db])
        assert (result.exit_code == 0) == ok, result.output
        assert "Traceback" not in result.output
        return result.output

    assert "created Leads\tcustom\talerts-all,realtime-metrics\tleads" in cli(
        "profiles", "create", "Leads", "--permission", "realtime-metrics",
        "--permission", "alerts-all", "--description", "leads")
    assert "exists" in cli("profiles", "create", "leads", ok=False)
    assert "built-in" in cli("profiles", "create", "admin", ok=False)
    assert "Invalid value for '--permission'" in cli("profiles", "create", "X",
                                                     "--permission", "god", ok=False)
    listed = cli("profiles", "list").splitlines()
    assert [line.split("\t")[0] for line in listed] == [*PROFILES, "Leads"]
    assert "created ann (Agent, Leads)" in cli("users", "create", "ann", "--profile", "Agent",
                                               "--profile", "Leads")
    assert "unknown profile(s): Ghosts" in cli("users", "create", "bo", "--profile", "Ghosts",
                                               ok=False)
    assert "held by: ann" in cli("profiles", "show", "Leads")
    assert "no security profile" in cli("profiles", "show", "Ghosts", ok=False)
    assert "updated Leads\tcustom\talerts-all\tleads" in cli(
        "profiles", "update", "Leads", "--permission", "alerts-all")
    assert "updated Leads\tcustom\talerts-all\tteam leads" in cli(
        "profiles", "update", "Leads", "--description", "team leads")
    assert "give --permission" in cli("profiles", "update", "Leads", ok=False)
    assert "built-in" in cli("profiles", "update", "Admin", "--description", "x", ok=False)
    assert "held by 1 user(s): ann" in cli("profiles", "delete", "Leads", ok=False)
    assert "built-in" in cli("profiles", "delete", "Agent", ok=False)
    assert "unknown profile(s): Ghosts" in cli("users", "set-profiles", "ann", "--profile",
                                               "Ghosts", ok=False)
    assert "no user 'bo'" in cli("users", "set-profiles", "bo", "--profile", "Agent",
                                 ok=False)
    assert "ann: Agent" in cli("users", "set-profiles", "ann", "--profile", "Agent")
    assert "held by: nobody" in cli("profiles", "show", "Leads")
    assert "deleted Leads" in cli("profiles", "delete", "Leads")
    assert "no security profile" in cli("profiles", "delete", "Leads", ok=False)
    assert [line.split("\t")[0] for line in cli("profiles", "list").splitlines()] == [
        *PROFILES]
