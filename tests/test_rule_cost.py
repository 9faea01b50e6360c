"""No rule can stall the service: keyword phrases are matched by one automaton, linear in
the text whatever the phrases; rules read a bounded part of a turn; a rule set over its
cost budget is refused when it is saved, and says why."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from analytics import phrases, signals
from analytics.phrases import PhraseIndex
from analytics.rules import READ_CHARS, KeywordRule, Reading, RuleSet, readable
from tests.conftest import SHARED_DATA, Users, auth
from tests.test_server import Server

CORPUS = SHARED_DATA / "twitter-care" / "conversations.jsonl"


def plain(phrase_list: list[str], text: str, negation_aware: bool) -> set[str]:
    """The phrases a regular expression of each finds (how keyword rules matched before
    the automaton, one phrase at a time): the reference the automaton must agree with."""
    return {phrases.normalized(p) for p in phrase_list
            if signals.matches(signals._compile([r"\s+".join(
                re.escape(w) for w in p.translate(signals.QUOTES).split())]),
                text, negation_aware)}


def found(phrase_list: list[str], text: str, negation_aware: bool) -> set[str]:
    return {p for p, free in PhraseIndex(phrase_list).find(text).items()
            if free or not negation_aware}


EDGE_PHRASES = ["cancel", "cancel my account", "my account", "fix it!", "#fail", "a-hole",
                "f***", "don't", "your manager", "manager", "O'Brien", "refund", "ça",
                "100%", "@comcastcares", "..."]
EDGE_TEXTS = [
    "I want to CANCEL   my\naccount now", "I do not want to cancel my account",
    "No. I am cancelling, cancel it", "cancellation is not cancel", "fix it!!", "fix it!x",
    "x#fail #fail", "what an a-hole", "f*** this", "f****", "I don't know",
    "talk to your manager", "O\u2019Brien said", "refund? refunds", "ça va", "100% sure",
    "100%x", "@comcastcares help", "x@comcastcares", "wait... what", "never\nrefund",
    "not even a refund", "can't believe the refund",
]


def test_the_automaton_finds_what_the_plain_patterns_find() -> None:
    for text, negation_aware in itertools.product(EDGE_TEXTS, (True, False)):
        assert found(EDGE_PHRASES, text, negation_aware) == \
            plain(EDGE_PHRASES, text, negation_aware), text


@pytest.mark.skipif(not CORPUS.is_file(), reason="needs ../shared/data")
def test_the_automaton_agrees_on_real_text() -> None:
    """The phrases of the default rules and the signals' literal words, over every turn
    of the twitter-care corpus."""
    words = ["supervisor", "your manager", "a manager", "complaint", "escalate", "refund",
             "cancel", "account", "please", "help", "thank you", "not working", "@", "dm",
             "it's", "i'm", "can't", "won't", "customer service", "the worst", "why"]
    texts = [t["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()
             for t in json.loads(line)["turns"]]
    for text in texts:
        for negation_aware in (True, False):
            assert found(words, text, negation_aware) == \
                plain(words, text, negation_aware), text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab *'!-\n", min_size=1, max_size=6).filter(
    lambda p: re.search(r"\w", p) is not None), min_size=1, max_size=6),
    st.text(alphabet="ab *'!-\n.", max_size=40), st.booleans())
def test_the_automaton_agrees_on_any_text(phrase_list: list[str], text: str,
                                          negation_aware: bool) -> None:
    assert found(phrase_list, text, negation_aware) == \
        plain(phrase_list, text, negation_aware)


def operator_rule(matching: str = "") -> dict[str, Any]:
    """The rule that took the service down: 500 phrases of 200 characters that share a
    long start with the turns' words (the worst case for an alternation)."""
    start = ("i want to speak to someone about my account " * 5)[:185]
    listed = [f"{start} case {i:05d}" for i in range(499)] + [matching or f"{start} case x"]
    return {"id": "operator", "kind": "keyword", "phrases": listed, "severity": "medium"}


LONG_TURN = ("i want to speak to someone about my account " * 200)[:8000]


def test_matching_cost_does_not_grow_with_the_phrases() -> None:
    """Linear in the text whatever the phrases: 500 long phrases cost about what 1 does
    (the alternation cost 0.06 s for 10 phrases and 4 s for 500 on such text)."""
    one = PhraseIndex(operator_rule()["phrases"][:1])
    many = PhraseIndex(operator_rule()["phrases"])

    def took(index: PhraseIndex) -> float:
        started = time.perf_counter()
        for _ in range(20):
            index.find(LONG_TURN)
        return (time.perf_counter() - started) / 20

    took(one), took(many)  # (warm)
    print(f"\none phrase {took(one) * 1e3:.2f} ms, 500: {took(many) * 1e3:.2f} ms per turn")
    assert took(many) < 3 * took(one) + 0.002


def test_rules_read_the_start_and_the_end_of_a_long_turn() -> None:
    text = "I am cancelling my account. " + "word " * 1400 + " Ask your supervisor."
    read = readable(text)
    assert len(read) <= 2 * READ_CHARS + 3
    assert read.startswith("I am cancelling") and read.endswith("your supervisor.")
    assert readable("short") == "short"
    # Cut where words end: a cut word never reads as another ("precancel" as "cancel").
    tail_cut = "a " * 2500 + "pre" + "cancel" + " z" * 997  # the last 2,000 start "cancel"
    head_cut = "a " * ((READ_CHARS - 11) // 2) + "a supervisory" + " z" * 2500
    assert "cancel" not in readable(tail_cut)
    assert "supervisor" not in readable(head_cut)
    rules = RuleSet(rules=[KeywordRule(id="k", phrases=["cancel", "supervisor"])])
    for cut in (tail_cut, head_cut):
        assert Reading(cut, frozenset(), rules.phrase_index).phrases() == {}
    rules = RuleSet(rules=[KeywordRule(id="k", phrases=["supervisor", "cancelling"])])
    reading = Reading(text, frozenset(), rules.phrase_index)
    assert list(reading.phrases()) == ["cancelling", "supervisor"]
    middle = "x" * 3000 + " supervisor " + "x" * 3000
    assert Reading(middle, frozenset(), rules.phrase_index).phrases() == {}


def test_a_rule_set_over_its_budget_is_refused_and_says_why(tmp_path: Path) -> None:
    from contact_center.app import create_app
    from contact_center.settings import Settings
    from tests.conftest import make_store
    with TestClient(create_app(Settings(database=tmp_path / "cc.db"),
                               make_store("sqlite", tmp_path))) as client:
        admin = auth(Users(lambda: make_store("sqlite", tmp_path)).token("Admin"))
        before = client.get("/v1/rules", headers=admin).json()
        # Eleven phrases can end on one word: each is a whole-word suffix of the next.
        chain = [" ".join(["very"] * n + ["bad"]) for n in range(phrases.MAX_ENDING_TOGETHER + 1)]
        r = client.post("/v1/rules", headers=admin,
                        json={"id": "chain", "kind": "keyword", "phrases": chain})
        assert r.status_code == 422, r.text
        assert "11 phrases can end on the same word" in r.json()["message"]
        assert client.post("/v1/rules", headers=admin, json={
            "id": "chain", "kind": "keyword", "phrases": chain[:-1]}).status_code == 201
        # The characters of all phrases: two rules of 100,000 fit, a third does not.
        for n in range(2):
            assert client.post("/v1/rules", headers=admin, json=operator_rule() | {
                "id": f"big{n}", "phrases": [f"{n} {p}" for p in operator_rule()["phrases"]]
            }).status_code == 201
        r = client.put("/v1/rules/chain", headers=admin, json=operator_rule() | {"id": "chain"})
        assert r.status_code == 422 and "at most 200,000" in r.json()["message"], r.text
        r = client.put("/v1/rules", headers=admin, json={"rules": [
            operator_rule() | {"id": f"big{n}", "phrases": [f"{n} {p}" for p in
                                                            operator_rule()["phrases"]]}
            for n in range(3)]})
        assert r.status_code == 422 and "characters" in r.text
        after = client.get("/v1/rules", headers=admin).json()
        assert len(after["rules"]) == len(before["rules"]) + 3


def test_the_operators_rule_stalls_no_one(tmp_path: Path) -> None:
    """The operator's rule, and four customers sending 8,000-character turns back to
    back: every other conversation's ack stays under 100 ms, and the rule still fires
    where its phrase is said."""
    server = Server(tmp_path)
    try:
        admin = {"Authorization": f"Bearer {server.token('admin')}"}
        headers = {"Authorization": f"Bearer {server.token('connector', 'Connector')}"}
        said = ("i want to speak to someone about my account " * 5)[:185] + " case 00042"
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/rules", headers=admin,
                       json=operator_rule(), timeout=30)
        assert r.status_code == 201, r.text
        saved_in = time.perf_counter() - started
        asyncio.run(_flood_and_measure(server, headers, said, saved_in))
        alerts = httpx.get(f"{server.url}/v1/alerts?rule_id=operator", headers=admin).json()
        assert {a["conversation_id"] for a in alerts["alerts"]} == {"flood-0"}
    finally:
        server.stop()


async def _flood_and_measure(server: Server, headers: dict[str, str], said: str,
                             saved_in: float) -> None:
    stop = asyncio.Event()

    async def converse(ws: Any, cid: str) -> None:
        await ws.send(json.dumps({"type": "conversation.started", "conversation": {
            "id": cid, "channel": "voice", "queue": "billing", "agent_id": "a1",
            "recording": "all"}}))
        assert json.loads(await ws.recv())["status"] == "accepted"

    async def flood(n: int) -> int:
        async with connect(f"{server.ws}/v1/ingest", additional_headers=headers,
                           max_size=None) as ws:
            json.loads(await ws.recv())  # hello
            await converse(ws, f"flood-{n}")
            sent = 0
            while not stop.is_set():
                text = (LONG_TURN[:8000 - len(said) - 1] + " " + said
                        if n == 0 and sent == 3 else LONG_TURN)
                await ws.send(json.dumps({"type": "segment", "conversation_id": f"flood-{n}",
                                          "segment_id": str(sent), "role": "customer",
                                          "text": text}))
                assert json.loads(await ws.recv())["status"] == "accepted"
                sent += 1
            return sent

    async def measure() -> list[float]:
        async with connect(f"{server.ws}/v1/ingest", additional_headers=headers) as ws:
            json.loads(await ws.recv())
            await converse(ws, "calm")
            took = []
            await asyncio.sleep(0.5)  # the floods are running
            for i in range(60):
                started = time.perf_counter()
                await ws.send(json.dumps({"type": "segment", "conversation_id": "calm",
                                          "segment_id": str(i), "role": "customer",
                                          "text": "Could you check my bill, please?"}))
                assert json.loads(await ws.recv())["status"] == "accepted"
                took.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)
            stop.set()
            return took

    floods = [asyncio.create_task(flood(n)) for n in range(4)]
    took = await measure()
    sent = sum(await asyncio.gather(*floods))
    took.sort()
    print(f"\nrule saved in {saved_in:.2f} s; {sent} turns of 8,000 characters meanwhile; "
          f"calm acks p50 {took[len(took) // 2]:.1f} ms, max {took[-1]:.1f} ms")
    assert sent >= 40  # the floods ran throughout
    assert took[-1] < 100


@pytest.mark.parametrize("stuck_for", [None, 1.0], ids=["slow", "stuck"])
def test_a_slow_rule_keeps_the_workers_leases(postgres_database: str, redis_server: Any,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture,
                                              stuck_for: float | None) -> None:
    """A rule holds the worker's event loop busy for longer than a lease: its heartbeat
    and renewals keep their schedule on their own thread, so no partition lapses or moves.
    A loop stuck past STALL_SECONDS (shortened here) lets its leases lapse instead, so a
    hung worker cannot hold its partitions for ever."""
    import redis

    from analytics import rules
    from contact_center import partitions
    from contact_center.leases import LEASE_MS
    from contact_center.settings import Settings
    from tests.conftest import make_app, make_store, wait_for_partitions

    if stuck_for is not None:
        monkeypatch.setattr(partitions, "STALL_SECONDS", stuck_for)
    keyword = rules._EVALUATORS["keyword"]
    busy_for = LEASE_MS / 1000 + 2

    def slow_keyword(rule: Any, state: Any, turn: Any, conv: Any, reading: Any) -> Any:
        if turn.text == "take your time":
            until = time.monotonic() + busy_for
            while time.monotonic() < until:  # busy: the GIL is held, in turns
                sum(range(1000))
        return keyword(rule, state, turn, conv, reading)

    monkeypatch.setitem(rules._EVALUATORS, "keyword", slow_keyword)
    app = make_app(Settings(database=tmp_path / "cc.db"), "scaleout", tmp_path)
    with TestClient(app) as client, caplog.at_level("WARNING", logger="contact_center.worker"):
        wait_for_partitions(client)
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        worker = runtime.worker[0]
        layout = worker.partitions.layout
        while len(worker.owned) < layout.partitions:
            time.sleep(0.01)
        tokens = {p: o.token for p, o in worker.owned.items()}
        keys = [layout.lease(p) for p in range(layout.partitions)]
        users = Users(lambda: make_store("scaleout", tmp_path))
        token = users.token("Connector")
        holders: list[list[str | None]] = []
        with client.websocket_connect("/v1/ingest", headers=auth(token)) as ws, \
                redis.Redis.from_url(redis_server.url, decode_responses=True) as plain_redis:
            from tests.conftest import Connector
            connector = Connector(ws)
            assert connector.start("slow")["status"] == "accepted"
            ws.send_json({"type": "segment", "conversation_id": "slow", "segment_id": "s1",
                          "role": "customer", "text": "take your time"})
            until = time.monotonic() + busy_for
            while time.monotonic() < until:
                holders.append(plain_redis.mget(keys))
                time.sleep(0.25)
            assert ws.receive_json()["status"] == "accepted"
            assert connector.say("slow", "s2", "thanks")["status"] == "accepted"
        lost = [r.getMessage() for r in caplog.records if "lost partition" in r.getMessage()]
        if stuck_for is None:
            assert all(h == [worker.id] * len(keys) for h in holders), holders
            assert not lost
            assert {p: o.token for p, o in worker.owned.items()} == tokens
        else:
            assert any(None in h for h in holders)  # lapsed while stuck
            assert any("its event loop is stuck" in r.getMessage() for r in caplog.records)
            wait_for_partitions(client)  # and taken again (here: by the same worker)
        transcript = client.get("/v1/transcripts/slow", headers=auth(users.token("Admin")))
        assert [s["segment_id"] for s in transcript.json()["turns"]] == ["s1", "s2"]


def test_a_saved_set_over_the_budget_still_loads(tmp_path: Path) -> None:
    """The budget is checked where a set is saved: one saved before it (or by an older
    version) is still read back, and the service starts and runs it."""
    from contact_center.app import create_app
    from contact_center.settings import Settings
    from tests.conftest import make_store, run

    big = [operator_rule() | {"id": f"big{n}", "phrases": [f"{n} {p}" for p in
                                                           operator_rule()["phrases"]]}
           for n in range(3)]
    saved = RuleSet.model_validate({"rules": big})
    assert saved.over_budget() is not None

    async def save() -> None:
        store = make_store("sqlite", tmp_path)
        await store.open()
        try:
            await store.save_rules(saved.model_dump(mode="json"))
        finally:
            await store.close()

    run(save())
    with TestClient(create_app(Settings(database=tmp_path / "cc.db"),
                               make_store("sqlite", tmp_path))) as client:
        admin = auth(Users(lambda: make_store("sqlite", tmp_path)).token("Admin"))
        assert [r["id"] for r in client.get("/v1/rules", headers=admin).json()["rules"]] == \
            ["big0", "big1", "big2"]
        r = client.patch("/v1/rules/big0", headers=admin, json={"name": "renamed"})
        assert r.status_code == 422 and "at most 200,000" in r.json()["message"]
        assert client.delete("/v1/rules/big2", headers=admin).status_code == 204


def test_rules_check_refuses_a_file_over_the_budget(tmp_path: Path) -> None:
    """The offline check (CI's) says what the service would answer."""
    import subprocess

    from tests.test_server import PROJECT, command

    over = tmp_path / "rules.json"
    over.write_text(json.dumps({"rules": [
        operator_rule() | {"id": f"big{n}", "phrases": [f"{n} {p}" for p in
                                                        operator_rule()["phrases"]]}
        for n in range(3)]}), encoding="utf-8")
    done = subprocess.run([*command(), "rules", "check", str(over)], capture_output=True,
                          text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 1
    assert "is not a valid rules document" in done.stderr
    assert "at most 200,000 are allowed" in done.stderr
