"""A property of governed supervision: over random team trees, agents, queues, users'
scopes and transfers, no user ever lists, reads, searches, monitors, or streams and
resumes alerts of a conversation outside their scope, and sees every one inside it.
The expected scope is a plain walk up the tree (tests/test_scope.py's `ancestry`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from contact_center.settings import Settings
from tests.conftest import Connector, Users, auth, make_app, make_store, refused
from tests.test_alert_workflow import receive
from tests.test_scope import ancestry, forests, tree_of

QUEUES = ["billing", "sales", "vip"]
RULE = {"rules": [{"id": "refund", "name": "Refund", "kind": "keyword", "phrases": ["refund"],
                   "severity": "medium", "cooldown_seconds": 0}]}
_runs = itertools.count()


@st.composite
def centers(draw: st.DrawFn) -> dict[str, Any]:
    teams = draw(forests().filter(lambda t: bool(t) and tree_of(t) is not None))
    ids = [t.id for t in teams]
    agents = {f"a{i}": draw(st.sampled_from(ids)) for i in range(draw(st.integers(1, 4)))}
    users = [draw(st.none() | st.fixed_dictionaries({
        "teams": st.lists(st.sampled_from(ids), max_size=2, unique=True),
        "queues": st.lists(st.sampled_from(QUEUES), max_size=2, unique=True)}))
        for _ in range(draw(st.integers(1, 3)))]
    where = st.tuples(st.sampled_from(QUEUES), st.sampled_from([*agents, "stranger"]))
    conversations = [(draw(where), draw(st.none() | where))
                     for _ in range(draw(st.integers(1, 4)))]
    return {"teams": teams, "agents": agents, "users": users,
            "conversations": conversations}


def expected(center: dict[str, Any], scope: dict[str, list[str]] | None,
             queue: str, agent: str) -> bool:
    if scope is None:
        return True
    team = center["agents"].get(agent)
    return queue in scope["queues"] or (
        team is not None and bool(set(ancestry(center["teams"], team)) & set(scope["teams"])))


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, Any, Any]]:
    """One embedded app for every example (the scope logic is the same in every
    deployment; the stores' scope filters are tested on both in test_directory)."""
    users = Users(lambda: make_store("sqlite", tmp_path))
    admin = auth(users.token("Admin", username="root"))
    connector = auth(users.token("Connector", username="connector"))
    with TestClient(make_app(settings, "sqlite", tmp_path)) as client:
        assert client.put("/v1/rules", headers=admin, json=RULE).status_code == 200
        yield client, admin, connector


@examples(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(center=centers())
def test_no_user_sees_outside_their_scope(world: Any, center: dict[str, Any]) -> None:
    client, admin, connector = world
    run = f"r{next(_runs)}"  # one app for every example: names of their own

    def named(team_id: str) -> str:
        return f"{run}-{team_id}"

    for team in center["teams"]:
        body = {"id": named(team.id), "name": team.name,
                "parent": named(team.parent) if team.parent else None}
        assert client.post("/v1/teams", headers=admin, json=body).status_code == 201
    for agent, team_id in center["agents"].items():
        answer = client.put(f"/v1/agents/{run}-{agent}", headers=admin,
                            json={"name": agent, "team": named(team_id)})
        assert answer.status_code == 201
    tokens = []
    for i, scope in enumerate(center["users"]):
        name = f"{run}-u{i}"
        assert client.post("/v1/users", headers=admin, json={
            "username": name, "profiles": ["Admin"]}).status_code == 201
        wire = None if scope is None else {"teams": [named(t) for t in scope["teams"]],
                                           "queues": scope["queues"]}
        assert client.patch(f"/v1/users/{name}", headers=admin,
                            json={"scope": wire}).status_code == 200
        tokens.append(auth(client.post(f"/v1/users/{name}/tokens", headers=admin,
                                       json={}).json()["token"]))
    now: dict[str, tuple[str, str]] = {}
    with client.websocket_connect("/v1/ingest", headers=connector) as ws:
        ingest = Connector(ws)
        for n, ((queue, agent), moved) in enumerate(center["conversations"]):
            cid = f"{run}-c{n}"
            ingest.start(cid, queue=queue, agent_id=f"{run}-{agent}")
            now[cid] = (queue, agent)
            if moved is not None:
                ingest.send({"type": "conversation.transferred", "conversation_id": cid,
                             "event_id": "t", "to_queue": moved[0],
                             "to_agent_id": f"{run}-{moved[1]}"})
                now[cid] = moved
            ingest.say(cid, "s1", f"I want a refund {run}")  # an alert each
    for scope, headers in zip(center["users"], tokens, strict=True):
        def unscoped(ids: Any) -> set[str]:
            return {i for i in ids if i.startswith(f"{run}-")}

        mine = {cid for cid, (queue, agent) in now.items()
                if expected(center, scope, queue, agent)}
        live = client.get("/v1/live/conversations", headers=headers).json()["conversations"]
        assert unscoped(c["id"] for c in live) == mine
        hits = client.get("/v1/transcripts", headers=headers,
                          params={"q": f"refund {run}"}).json()["hits"]
        assert unscoped(h["conversation_id"] for h in hits) == mine
        alerts = client.get("/v1/alerts", headers=headers, params={"limit": 1000}).json()
        assert unscoped(a["conversation_id"] for a in alerts["alerts"]) == mine
        with client.websocket_connect("/v1/alerts/stream?after=0", headers=headers) as stream:
            assert receive(stream)["type"] == "subscribed"
            resumed = set()
            for _ in range(len(now) * 3):  # raised, and any change since
                try:
                    resumed.add(receive(stream, 0.3)["alert"]["conversation_id"])
                except TimeoutError:
                    break
            assert unscoped(resumed) <= mine
        for cid in now:
            status = 200 if cid in mine else 404
            assert client.get(f"/v1/transcripts/{cid}", headers=headers).status_code == status
            assert client.get(f"/v1/live/conversations/{cid}",
                              headers=headers).status_code == status
            if cid not in mine:
                assert refused(client, f"/v1/conversations/{cid}/monitor",
                               headers).status_code == 404
