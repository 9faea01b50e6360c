"""Aggregates for analysts (docs/analytics.md#aggregates), on every deployment: every
number `GET /v1/analytics/conversations` answers is recomputed in plain Python from what
the transcripts and alerts routes show, for each grouping, interval and filter; scope,
limits, permissions and the audit; and the pure numpy grouping on its own."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.aggregates import Facts, TooManyRows, aggregate, buckets_spanned
from analytics.rules import RuleSet
from tests.conftest import ANGRY, HAPPY, SHARED_DATA, Connector, Users, auth
from tests.test_alert_workflow import use_rules

CORPUS = SHARED_DATA / "twitter-care" / "conversations.jsonl"
SAMPLE = Path(__file__).resolve().parents[1] / "contact_center" / "samples" / \
    "conversations.jsonl"
ROUTE = "/v1/analytics/conversations"
BASE = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday
SPACING = 5_261  # seconds between starts: conversations fall in many hours, days, weeks
# Three rules without cooldown, so alerts often hold hits of several.
RULES = RuleSet.model_validate({"rules": [
    {"id": "asks-help", "name": "Asks for help", "kind": "keyword",
     "phrases": ["help", "please"], "severity": "low", "cooldown_seconds": 0},
    {"id": "negative", "name": "Negative", "kind": "sentiment", "below": -0.3,
     "consecutive": 1, "metric": "turn", "severity": "high", "cooldown_seconds": 0},
    {"id": "upset", "name": "Upset", "kind": "keyword", "phrases": ["upset", "angry"],
     "severity": "medium", "cooldown_seconds": 0}]})
AGENTS = ["ann", "bob", "cid", None]  # cid is in no team; None: no agent


def corpus(n: int) -> list[dict[str, Any]]:
    path = CORPUS if CORPUS.is_file() else SAMPLE
    with path.open() as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def directory(client: TestClient, admin: dict[str, str]) -> None:
    """emea > billing (ann), apac (bob): ann's direct team is billing, not emea."""
    for team in ({"id": "emea", "name": "EMEA"},
                 {"id": "billing", "name": "Billing", "parent": "emea"},
                 {"id": "apac", "name": "APAC"}):
        assert client.post("/v1/teams", headers=admin, json=team).status_code == 201
    for agent, team_id in (("ann", "billing"), ("bob", "apac")):
        assert client.put(f"/v1/agents/{agent}", headers=admin,
                          json={"name": agent, "team": team_id}).status_code == 201


def pipelined(ingest: Connector, events: list[dict[str, Any]]) -> None:
    """Send every event, then read every reply (one round trip per event is slow)."""
    for event in events:
        ingest.ws.send_json(event)
    replies = [ingest.ws.receive_json() for _ in events]
    assert all(r["status"] in ("accepted", "duplicate") for r in replies), replies[:3]


def load(client: TestClient, ingest: Connector, admin: dict[str, str],
         n: int) -> list[str]:
    """``n`` corpus conversations with controlled starts, queues, agents and channels (a
    customer follow-up added to two in three); every other alert acknowledged while
    live; all but every fifth conversation ended. Their ids."""
    events: list[dict[str, Any]] = []
    ids = []
    for i, c in enumerate(corpus(n)):
        cid = f"k{i:03d}"
        ids.append(cid)
        info = {"id": cid, "channel": ("chat", "voice")[i % 2], "queue": c["queue"],
                "agent_id": AGENTS[i % 4], "customer": {"id": f"cust-{i}"}}
        started = BASE + timedelta(seconds=i * SPACING)
        events.append({"type": "conversation.started", "conversation": info,
                       "started_at": started.isoformat()})
        turns = [(t["speaker"], t["text"]) for t in c["turns"][:6]]
        turns += [[("customer", ANGRY[i % 3])], [("customer", HAPPY)], []][i % 3]
        events += [{"type": "segment", "conversation_id": cid, "segment_id": f"s{j}",
                    "role": role, "text": text} for j, (role, text) in enumerate(turns)]
    pipelined(ingest, events)
    alerts = all_alerts(client, admin)
    for alert in alerts[::2]:
        answer = client.post(f"/v1/alerts/{alert['id']}/acknowledge", headers=admin,
                             json={"version": alert["version"]})
        assert answer.status_code == 200, answer.text
    pipelined(ingest, [{"type": "conversation.ended", "conversation_id": cid}
                       for i, cid in enumerate(ids) if i % 5])
    return ids


def all_alerts(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    alerts, cursor = [], None
    while True:
        page = client.get("/v1/alerts", headers=headers,
                          params={"limit": 1000} | ({"cursor": cursor} if cursor else {}))
        alerts += page.json()["alerts"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return alerts


# -- the recomputation: plain Python over what the other routes show -------------------


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None}
    return {"n": len(values), "mean": sum(values) / len(values),
            "p50": nearest_rank(values, 50), "p90": nearest_rank(values, 90)}


def bucket(started_at: float, interval: str | None) -> float | None:
    if interval is None:
        return None
    at = datetime.fromtimestamp(started_at, UTC)
    start = {"hour": at.replace(minute=0, second=0, microsecond=0),
             "day": at.replace(hour=0, minute=0, second=0, microsecond=0)}.get(interval)
    if interval == "week":
        start = (at - timedelta(days=at.weekday())).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    assert start is not None
    return start.timestamp()


class Recorded:
    """Every conversation as the transcripts route shows it, and each alert's history."""

    def __init__(self, client: TestClient, headers: dict[str, str], ids: list[str]) -> None:
        self.conversations = []
        for cid in ids:
            answer = client.get(f"/v1/transcripts/{cid}", headers=headers)
            assert answer.status_code == 200
            self.conversations.append(answer.json())
        self.acknowledged: dict[str, float] = {}  # alert id -> first acknowledgement
        for alert in all_alerts(client, headers):
            history = client.get(f"/v1/alerts/{alert['id']}", headers=headers).json()["history"]
            acks = [h["at"] for h in history if h["type"] == "alert.acknowledged"]
            if acks:
                self.acknowledged[alert["id"]] = min(acks)
        self.teams = {"ann": "billing", "bob": "apac"}

    def group(self, c: dict[str, Any], group_by: str) -> str | None:
        return {"queue": c["queue"], "agent": c["agent_id"], "none": None,
                "team": self.teams.get(c["agent_id"] or "")}[group_by]

    def expected(self, group_by: str, interval: str | None,
                 keep: Callable[[dict[str, Any]], bool] = lambda c: True
                 ) -> list[dict[str, Any]]:
        cells: dict[tuple[str | None, float | None], list[dict[str, Any]]] = defaultdict(list)
        for c in self.conversations:
            if keep(c):
                cells[self.group(c, group_by), bucket(c["started_at"], interval)].append(c)
        order = sorted(cells, key=lambda k: (k[0] is None, k[0] or "", k[1] or 0))
        return [self.row(group, at, cells[group, at]) for group, at in order]

    def row(self, group: str | None, at: float | None,
            conversations: list[dict[str, Any]]) -> dict[str, Any]:
        firsts, lasts, changes, compounds, responses, handles = [], [], [], [], [], []
        alerts, to_acknowledge, by_rule = 0, [], defaultdict(int)
        escalated = 0
        for c in conversations:
            customer = sorted((t for t in c["turns"] if t["role"] == "customer"),
                              key=lambda t: (t["at"], t["seq"]))
            compounds += [t["scores"]["compound"] for t in customer]
            if customer:
                first, last = customer[0], customer[-1]
                firsts.append(first["scores"]["compound"])
                lasts.append(last["scores"]["compound"])
                changes.append(last["scores"]["compound"] - first["scores"]["compound"])
                answers = [t["at"] for t in c["turns"] if t["role"] == "agent"
                           and (t["at"], t["seq"]) > (first["at"], first["seq"])]
                if answers:
                    responses.append(min(answers) - first["at"])
            if c["ended_at"] is not None:
                handles.append(c["ended_at"] - c["started_at"])
            escalated += bool(c["alerts"])
            alerts += len(c["alerts"])
            for alert in c["alerts"]:
                for rule_id in set(alert["rule_ids"]):
                    by_rule[rule_id] += 1
                if alert["id"] in self.acknowledged:
                    to_acknowledge.append(self.acknowledged[alert["id"]]
                                          - alert["first_raised_at"])
        return {
            "group": group, "bucket": at, "conversations": len(conversations),
            "first_customer_compound": distribution(firsts),
            "last_customer_compound": distribution(lasts),
            "customer_compound_change": distribution(changes),
            "customer_turns": len(compounds),
            "customer_compound_mean": sum(compounds) / len(compounds) if compounds else None,
            "escalated": escalated, "escalated_share": escalated / len(conversations),
            "alerts": alerts, "alerts_by_rule": dict(by_rule),
            "time_to_acknowledge": distribution(to_acknowledge),
            "first_response": distribution(responses),
            "handle_time": distribution(handles),
        }


def approx(expected: Any) -> Any:
    """Exact for counts, strings and nulls; pytest.approx for floats, however nested."""
    if isinstance(expected, dict):
        return {k: approx(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [approx(v) for v in expected]
    if isinstance(expected, float):
        return pytest.approx(expected, rel=1e-9, abs=1e-9)
    return expected


def aggregated(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    answer = client.get(ROUTE, headers=headers,
                        params={k: v for k, v in params.items() if v is not None})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def admin(client: TestClient, users: Users) -> dict[str, str]:
    return auth(users.token("Admin", username="root"))


@pytest.fixture
def loaded(client: TestClient, users: Users, admin: dict[str, str],
           ingest: Connector) -> Iterator[Recorded]:
    directory(client, admin)
    use_rules(client, users, RULES)
    ids = load(client, ingest, admin, 160)
    yield Recorded(client, admin, ids)


# -- the tests ------------------------------------------------------------------------


def test_every_number_matches_a_recomputation_from_the_transcripts(
        client: TestClient, users: Users, loaded: Recorded) -> None:
    analyst = auth(users.token("Analyst", username="ana"))
    conversations = loaded.conversations
    # The data exercises what is measured: alerts of several rules, acknowledged ones,
    # conversations still live, without agent, without team.
    assert any(len(a["rule_ids"]) > 1 for c in conversations for a in c["alerts"])
    assert loaded.acknowledged
    assert any(c["ended_at"] is None for c in conversations)
    for group_by in ("queue", "agent", "team", "none"):
        for interval in (None, "hour", "day", "week"):
            params = {"group_by": group_by} | ({"interval": interval} if interval else {})
            got = aggregated(client, analyst, **params)
            assert got["group_by"] == group_by and got["interval"] == interval
            assert got["conversations"] == len(conversations)
            assert got["rows"] == approx(loaded.expected(group_by, interval)), params
    # The default: by queue, no buckets.
    assert aggregated(client, analyst)["rows"] == approx(loaded.expected("queue", None))
    team = {r["group"]: r["conversations"] for r in aggregated(
        client, analyst, group_by="team")["rows"]}
    assert set(team) == {"billing", "apac", None}  # direct teams; cid and none: null


def test_an_aggregate_exports_as_csv_and_json_lines(client: TestClient, users: Users,
                                                   loaded: Recorded) -> None:
    analyst = auth(users.token("Analyst", username="ana"))
    whole = aggregated(client, analyst, group_by="agent", interval="day")
    lines = client.get(ROUTE, headers=analyst, params={
        "group_by": "agent", "interval": "day", "format": "jsonl"})
    assert lines.headers["content-type"] == "application/jsonl"
    first, *rows = [json.loads(line) for line in lines.text.splitlines()]
    assert first == {"group_by": "agent", "interval": "day",
                     "conversations": whole["conversations"], "count": len(whole["rows"])}
    assert rows == whole["rows"]
    table = client.get(ROUTE, headers=analyst, params={
        "group_by": "agent", "interval": "day", "format": "csv"})
    assert table.headers["x-total-count"] == str(len(whole["rows"]))
    header, *cells = list(csv.reader(io.StringIO(table.text)))
    assert len(cells) == len(whole["rows"]) and "first_customer_compound.mean" in header
    for row, expected in zip(cells, whole["rows"], strict=True):
        got = dict(zip(header, row, strict=True))
        assert got["conversations"] == str(expected["conversations"])
        assert got["group"] == (expected["group"] or "")
        for rule, n in expected["alerts_by_rule"].items():
            assert got[f"alerts_by_rule.{rule}"] == str(n)


def test_filters_narrow_what_is_aggregated(client: TestClient, users: Users,
                                          loaded: Recorded) -> None:
    analyst = auth(users.token("Analyst", username="ana"))
    since, until = BASE + timedelta(days=2), BASE + timedelta(days=6, hours=5)
    queue = loaded.conversations[0]["queue"]
    for params, keep in (
        ({"since": since.isoformat(), "until": until.isoformat()},
         lambda c: since.timestamp() <= c["started_at"] < until.timestamp()),
        ({"since": "2026-03-04T09:30:00"},  # no zone: UTC
         lambda c: c["started_at"] >= datetime(2026, 3, 4, 9, 30, tzinfo=UTC).timestamp()),
        ({"queue": queue}, lambda c: c["queue"] == queue),
        ({"agent_id": "bob"}, lambda c: c["agent_id"] == "bob"),
        ({"channel": "voice"}, lambda c: c["channel"] == "voice"),
        ({"channel": "chat", "agent_id": "ann", "until": until.isoformat()},
         lambda c: c["channel"] == "chat" and c["agent_id"] == "ann"
         and c["started_at"] < until.timestamp()),
        ({"queue": "no-such-queue"}, lambda c: False),
    ):
        for group_by, interval in (("agent", "day"), ("team", None), ("queue", "hour")):
            got = aggregated(client, analyst, group_by=group_by, interval=interval, **params)
            expected = loaded.expected(group_by, interval, keep)
            assert got["rows"] == approx(expected), params
            assert got["conversations"] == sum(r["conversations"] for r in expected)


@pytest.mark.app
def test_a_scoped_user_aggregates_only_their_teams_and_queues(
        client: TestClient, users: Users, admin: dict[str, str], ingest: Connector) -> None:
    directory(client, admin)
    for i, (queue, agent) in enumerate((("billing", "ann"), ("sales", "bob"), ("vip", "bob"),
                                        ("vip", None), ("sales", "ann"), ("vip", "cid"))):
        assert ingest.start(f"c{i}", queue=queue, agent_id=agent)["status"] == "accepted"
        assert ingest.say(f"c{i}", "s1", HAPPY)["status"] == "accepted"

    def scoped(name: str, scope: dict[str, list[str]]) -> dict[str, str]:
        headers = auth(users.token("Analyst", username=name))
        assert client.patch(f"/v1/users/{name}", headers=admin,
                            json={"scope": scope}).status_code == 200
        return headers

    emea = scoped("emea-ana", {"teams": ["emea"], "queues": []})  # ann's conversations
    vip = scoped("vip-ana", {"teams": [], "queues": ["vip"]})
    rows = aggregated(client, emea, group_by="agent")["rows"]
    assert [(r["group"], r["conversations"]) for r in rows] == [("ann", 2)]
    rows = aggregated(client, vip, group_by="queue")["rows"]
    assert [(r["group"], r["conversations"]) for r in rows] == [("vip", 3)]
    # A filter outside the scope finds nothing, rather than what it would have.
    assert aggregated(client, vip, queue="billing")["rows"] == []
    rows = aggregated(client, admin, group_by="none")["rows"]
    assert [(r["group"], r["conversations"]) for r in rows] == [(None, 6)]


@pytest.mark.app
def test_limits_are_refused_with_a_clear_message(
        client: TestClient, users: Users, admin: dict[str, str], ingest: Connector,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from contact_center.api import aggregates as route

    analyst = auth(users.token("Analyst", username="ana"))
    for i in range(4):
        started = (BASE + timedelta(hours=i)).isoformat()
        assert ingest.send({"type": "conversation.started", "started_at": started,
                            "conversation": {"id": f"c{i}", "queue": f"q{i % 2}"}})[
            "status"] == "accepted"

    def refused(message: str, **params: Any) -> None:
        answer = client.get(ROUTE, headers=analyst, params=params)
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "validation_error"
        assert message in answer.json()["message"]

    # [since, until) alone spans more buckets than an answer holds: refused unread.
    refused("spans 18,288 hour buckets, more than the 10,000 rows",
            interval="hour", since="2024-01-01T00:00:00Z", until="2026-02-01T00:00:00Z")
    # A leap year of hours is within it; two of days too.
    assert aggregated(client, analyst, interval="hour", since="2024-01-01T00:00:00Z",
                      until="2025-01-01T00:00:00Z")["rows"] == []
    assert aggregated(client, analyst, interval="day", since="2024-01-01T00:00:00Z",
                      until="2026-02-01T00:00:00Z")["rows"] == []
    refused("until must be after since", since="2026-03-02T00:00:00Z",
            until="2026-03-02T00:00:00Z")
    # More (group, bucket) rows than allowed.
    monkeypatch.setattr(route, "MAX_ROWS", 3)
    refused("would hold 4 rows, more than 3", interval="hour")
    assert len(aggregated(client, analyst, interval="day")["rows"]) == 2
    # More conversations than one query aggregates.
    monkeypatch.setattr(route, "MAX_CONVERSATIONS", 3)
    refused("more than 3 conversations match")
    assert aggregated(client, analyst, queue="q0")["conversations"] == 2
    for params in ({"group_by": "skill"}, {"interval": "month"}, {"since": "1700000000"},
                   {"channel": "fax"}):
        answer = client.get(ROUTE, headers=analyst, params=params)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error"


@pytest.mark.app
def test_it_needs_contact_search_and_is_audited(client: TestClient, users: Users,
                                               admin: dict[str, str]) -> None:
    assert client.get(ROUTE).status_code == 401
    assert client.get(ROUTE, headers=auth(users.token("Agent"))).status_code == 403
    assert client.get(ROUTE, headers=auth(users.token("Connector"))).status_code == 403
    analyst = auth(users.token("Analyst", username="ana"))
    assert aggregated(client, analyst, group_by="team", interval="week", queue="vip",
                      since="2026-03-02T00:00:00Z") == {
        "group_by": "team", "interval": "week", "conversations": 0, "rows": []}
    entries = client.get("/v1/audit", headers=admin,
                         params={"action": "analytics.query"}).json()["entries"]
    assert [(e["actor"], e["result"]) for e in entries] == [("ana", "ok")]
    assert entries[0]["details"] == {
        "group_by": "team", "interval": "week", "queue": "vip",
        "since": datetime(2026, 3, 2, tzinfo=UTC).timestamp(), "format": "json",
        "conversations": 0, "rows": 0}


def test_a_query_past_its_time_is_stopped(client: TestClient, backend: str, users: Users,
                                         loaded: Recorded,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from contact_center.stores import postgres, sqlite

    # No time at all: SQLite's progress handler stops it at its first check; PostgreSQL's
    # store runs no statement with no time left (each gets what is left as its timeout).
    monkeypatch.setattr(sqlite if backend == "sqlite" else postgres, "SEARCH_SECONDS", 0.0)
    answer = client.get(ROUTE, headers=auth(users.token("Analyst")),
                        params={"group_by": "team", "interval": "hour"})
    assert answer.status_code == 503 and answer.json()["code"] == "query_timeout"


# -- the numpy grouping on its own ----------------------------------------------------


def test_the_grouping_percentiles_nulls_and_empty_groups() -> None:
    day = 86_400.0
    facts = Facts(
        group=["b", "a", None, "a", "a", "a"],
        started_at=[0.0, 1.0, 2.0, 3.0, 4 * day + 5, 4 * day + 6],  # Thu 1 Jan, Mon 5 Jan
        ended_at=[10.0, None, 12.0, 13.0, 4 * day + 9, None],
        first_compound=[0.5, None, 0.1, -0.5, 0.2, 0.9],
        last_compound=[0.5, None, 0.3, 0.5, -0.2, 0.9],
        customer_total=[1.0, 0.0, 0.4, 0.0, 0.0, 0.9], customer_turns=[2, 0, 2, 2, 2, 1],
        first_response=[None, None, 4.0, 1.0, 3.0, 2.0],
        alert_of=[0, 0, 3], time_to_acknowledge=[5.0, None, 7.0],
        rule_of=[0, 0, 0, 3], rule_ids=["x", "y", "x", "x"])
    rows = aggregate(facts, None)
    assert [(r["group"], r["bucket"], r["conversations"]) for r in rows] == [
        ("a", None, 4), ("b", None, 1), (None, None, 1)]
    a, b, null = rows
    # Nearest rank: of three values the 2nd (p50) and the 3rd (p90); nulls left out.
    assert a["first_customer_compound"] == {"n": 3, "mean": pytest.approx(0.2),
                                            "p50": 0.2, "p90": 0.9}
    assert a["customer_compound_change"] == {"n": 3, "mean": pytest.approx(0.6 / 3),
                                             "p50": 0.0, "p90": 1.0}
    assert a["first_response"] == {"n": 3, "mean": 2.0, "p50": 2.0, "p90": 3.0}
    assert a["handle_time"] == {"n": 2, "mean": 7.0, "p50": 4.0, "p90": 10.0}
    assert a["customer_turns"] == 5 and a["customer_compound_mean"] == pytest.approx(0.9 / 5)
    assert (a["escalated"], a["escalated_share"], a["alerts"]) == (1, 0.25, 1)
    assert a["alerts_by_rule"] == {"x": 1}
    assert a["time_to_acknowledge"] == {"n": 1, "mean": 7.0, "p50": 7.0, "p90": 7.0}
    # An alert of two rules counts once for each; one never acknowledged is no time.
    assert b["alerts_by_rule"] == {"x": 2, "y": 1} and b["alerts"] == 2
    assert b["time_to_acknowledge"] == {"n": 1, "mean": 5.0, "p50": 5.0, "p90": 5.0}
    empty = {"n": 0, "mean": None, "p50": None, "p90": None}
    assert b["first_response"] == empty and null["time_to_acknowledge"] == empty
    assert null["alerts_by_rule"] == {} and null["escalated_share"] == 0.0
    # Weeks start on Monday 00:00 UTC: 1 Jan 1970 was a Thursday.
    weeks = aggregate(facts, "week")
    assert [(r["group"], r["bucket"], r["conversations"]) for r in weeks] == [
        ("a", -3 * day, 2), ("a", 4 * day, 2), ("b", -3 * day, 1), (None, -3 * day, 1)]
    assert [r["bucket"] for r in aggregate(facts, "day")][:2] == [0.0, 4 * day]
    assert aggregate(Facts(), "hour") == []
    assert aggregate(Facts(group=[None], started_at=[0.0], ended_at=[None],
                           first_compound=[None], last_compound=[None],
                           customer_total=[0.0], customer_turns=[0],
                           first_response=[None]), None)[0]["customer_compound_mean"] is None
    with pytest.raises(TooManyRows):
        aggregate(facts, "day", max_rows=3)


def test_ninety_percent_is_the_nearest_rank_of_ten_and_of_eleven() -> None:
    for n in (1, 2, 9, 10, 11, 19, 20, 21, 100):
        values = [float(v) for v in range(n, 0, -1)]
        facts = Facts(group=["g"] * n, started_at=[0.0] * n, ended_at=[None] * n,
                      first_compound=[None] * n, last_compound=[None] * n,
                      customer_total=[0.0] * n, customer_turns=[0] * n,
                      first_response=values)
        got = aggregate(facts, None)[0]["first_response"]
        assert (got["p50"], got["p90"]) == (nearest_rank(values, 50),
                                            nearest_rank(values, 90)), n
        assert got["p90"] == math.ceil(0.9 * n) and got["p50"] == math.ceil(0.5 * n)


def test_buckets_spanned_counts_the_buckets_a_range_touches() -> None:
    hour = 3_600.0
    assert buckets_spanned(0.0, hour, "hour") == 1
    assert buckets_spanned(0.0, hour + 1, "hour") == 2
    assert buckets_spanned(hour / 2, 2 * hour, "hour") == 2
    assert buckets_spanned(0.0, 366 * 86_400.0, "hour") == 366 * 24
    assert buckets_spanned(0.0, 86_400.0, "week") == 1  # Thursday, in one week
