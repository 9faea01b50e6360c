"""What a transcript search finds, and in what order: the same on every store (the
semantics `GET /v1/transcripts` and docs/protocol.md state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.search import MAX_TERMS
from contact_center.api.transcripts import parse_terms
from contact_center.stores import SearchQuery, SegmentRow, WriteBatch
from tests.conftest import Users, auth, make_store, run

NEUTRAL = {"neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": 0.0}


def meta(cid: str, queue: str, agent_id: str, recording: str = "all") -> dict[str, Any]:
    return {"id": cid, "channel": "chat", "queue": queue, "agent_id": agent_id,
            "customer": {}, "recording": recording, "attributes": {}, "status": "live",
            "started_at": 1.0, "ended_at": None, "updated_at": 1.0}


def turn(cid: str, sid: str, seq: int, text: str | None, received_at: float,
         role: str = "customer", started_at: float | None = None) -> SegmentRow:
    return SegmentRow(cid, sid, seq, role, role, text, NEUTRAL, started_at, None,
                      received_at)


# received_at is what since/until and the order read; started_at (the connector's clock)
# is set far off to show it is not.
TURNS = [
    turn("a", "1", 1, "My Invoice is wrong, 100% overcharged", 100.0, started_at=900.0),
    turn("a", "2", 2, "Let me check the invoice", 200.0, role="agent"),
    turn("a", "3", 3, "Still wrong", 300.0),
    turn("b", "1", 1, "L'ÉCOLE a reçu l'INVOICE depuis İSTANBUL", 200.0),
    turn("d", "1", 1, "invoice_2 attached", 200.0, started_at=10.0),
    turn("c", "1", 1, None, 250.0),  # recording "none": the words were not kept
]


@pytest.fixture
def search(backend: str, tmp_path: Path) -> Any:
    async def fill() -> None:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            await store.write(WriteBatch(conversations={
                "a": (meta("a", "billing", "ann"), {}), "b": (meta("b", "sales", "bob"), {}),
                "c": (meta("c", "billing", "bob", "none"), {}),
                "d": (meta("d", "billing", "bob"), {})}, segments=TURNS))
        finally:
            await store.close()

    run(fill())

    def found(q: str, **filters: Any) -> list[str]:
        async def query() -> list[dict[str, Any]]:
            store = make_store(backend, tmp_path)
            await store.open()
            try:
                return await store.search(SearchQuery(terms=parse_terms(q), **filters))
            finally:
                await store.close()

        return [f"{h['conversation_id']}/{h['segment_id']}" for h in run(query())]

    return found


def test_every_term_is_a_substring_of_the_same_turn_ignoring_case(search: Any) -> None:
    assert search("invoice") == ["a/2", "b/1", "d/1", "a/1"]
    assert search("voice") == ["a/2", "b/1", "d/1", "a/1"]  # substrings, not words
    assert search("INVOICE WRONG") == ["a/1"]  # per turn: a/2 and a/3 hold one each
    assert search("invoice still") == []  # ... and never across the turns of a conversation
    assert search('"check the invoice"') == ["a/2"]  # a quoted phrase is one term
    assert search('"invoice the"') == []
    assert search("école") == ["b/1"]  # case ignored beyond ASCII: ÉCOLE
    assert search("istanbul") == ["b/1"]  # İ lowercases to i, as PostgreSQL has it
    assert search("100%") == ["a/1"]  # % and _ are plain characters, not LIKE's wildcards
    assert search("e_2") == ["d/1"]
    assert search("in%ce") == search("voic_") == []


def test_unrecorded_turns_never_match(search: Any) -> None:
    assert "c/1" not in search("invoice")
    assert search("invoice", queue="billing", agent_id="bob") == ["d/1"]


def test_since_and_until_bound_the_time_the_turn_was_received(search: Any) -> None:
    # a/1 started (connector's clock) at 900 but was received at 100: out of [200, 300).
    assert search("invoice", since=200.0, until=300.0) == ["a/2", "b/1", "d/1"]
    assert search("wrong", since=300.0) == ["a/3"]  # since: inclusive
    assert search("wrong", until=300.0) == ["a/1"]  # until: exclusive
    assert search("invoice", since=901.0) == []


def test_newest_first_then_later_seq_then_ids_and_pages_through_that(search: Any) -> None:
    # a/2, b/1, d/1 were received together: a/2 has the later seq; b before d.
    order = search("invoice", limit=50)
    assert order == ["a/2", "b/1", "d/1", "a/1"]
    pages = [search("invoice", limit=3, offset=offset) for offset in (0, 3, 6)]
    assert pages == [order[:3], order[3:], []]
    assert search("invoice", role="agent") == ["a/2"]


def test_since_and_until_are_iso_8601_timestamps(client: TestClient, users: Users) -> None:
    """As everywhere else: a number (here in the query string) is ambiguous, refused."""
    analyst = auth(users.token("Analyst"))
    for since in ("1700000000", "0", "1700000000.5", "0001-01-01T00:00:00Z"):
        refused = client.get("/v1/transcripts", headers=analyst,
                             params={"q": "invoice", "since": since})
        assert refused.status_code == 422, since
        assert refused.json()["details"][0]["loc"] == ["query", "since"]
    for until in ("2100-01-01T00:00:00Z", "2100-01-01T00:00:00", "2100-01-01T01:00:00+01:00"):
        assert client.get("/v1/transcripts", headers=analyst,
                          params={"q": "invoice", "until": until}).status_code == 200


def test_a_query_of_too_many_terms_is_refused_with_a_clear_422_on_every_store(
        client: TestClient, users: Users) -> None:
    """(SQLite passes every term to one function of at most 127 arguments: 125 terms used
    to be a 503 that no retry fixed.)"""
    analyst = auth(users.token("Analyst"))
    most = " ".join(f"w{i}" for i in range(MAX_TERMS))
    assert client.get("/v1/transcripts", headers=analyst,
                      params={"q": most}).status_code == 200
    for terms in (MAX_TERMS + 1, 125, 200):
        answer = client.get("/v1/transcripts", headers=analyst,
                            params={"q": " ".join("x" * terms)})
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "validation_error"
        assert f"give 1 to {MAX_TERMS}" in answer.json()["message"]
