"""Full-text search (`GET /v1/search/turns`, `GET /v1/search/conversations`): what a
query finds, with which filters, in what order and pages, the same on every store."""

from __future__ import annotations

import base64
import csv
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics.export import TURN_COLUMNS, csv_lines, export_row
from analytics.fulltext import parse
from contact_center.api.search import EXPORTS_AT_ONCE, exported
from contact_center.stores import FullTextFilters, FullTextQuery, SegmentRow, WriteBatch
from monitoring.alerts import new_alert
from monitoring.scope import Within
from tests.conftest import Users, auth, make_store, run


def meta(cid: str, queue: str, agent_id: str, started_at: float, ended_at: float | None = None,
         channel: str = "chat", recording: str = "all") -> dict[str, Any]:
    return {"id": cid, "channel": channel, "queue": queue, "agent_id": agent_id,
            "customer": {"id": None, "name": None, "email": None}, "recording": recording,
            "attributes": {},
            "status": "live" if ended_at is None else "ended", "started_at": started_at,
            "ended_at": ended_at, "updated_at": started_at}


def turn(cid: str, seq: int, text: str | None, at: float, role: str = "customer",
         compound: float = 0.0) -> SegmentRow:
    return SegmentRow(cid, str(seq), seq, role, role, text,
                      {"neg": 0.0, "neu": 1.0, "pos": 0.0, "compound": compound}, None, None,
                      at)


CONVERSATIONS = {
    "a": meta("a", "billing", "ann", 1000.0, 1600.0),
    "b": meta("b", "sales", "bob", 2000.0, channel="voice"),
    "c": meta("c", "billing", "bob", 3000.0, 3100.0, recording="none"),
    "d": meta("d", "billing", "cat", 4000.0, 4050.0),
}
TURNS = [
    turn("a", 1, "My invoice is wrong and I want a refund", 1000.0, compound=-0.5),
    turn("a", 2, "I can refund the invoice today", 1010.0, role="agent"),
    turn("a", 3, "Thanks, refunded already? Great", 1020.0, compound=0.6),
    turn("b", 1, "The e-mail never arrived, this is a scam", 2000.0, compound=-0.7),
    turn("b", 2, "Let me check your email address", 2010.0, role="agent"),
    turn("c", 1, None, 3000.0, compound=-0.9),  # recording "none": words not kept
    turn("d", 1, "Cancel my account now. Refund me", 4000.0, compound=-0.3),
    turn("d", 2, "I don't want the invoice", 4010.0, compound=-0.2),
]
HIT = {"rule_id": "churn", "rule_version": 1, "rule_name": "Churn", "kind": "signal",
       "severity": "high", "reason": "churn", "raised_at": 4000.0, "evidence": {}}


@pytest.fixture
def store_search(backend: str, tmp_path: Path) -> Any:
    async def fill() -> None:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            await store.write(WriteBatch(
                conversations={cid: (m, {}) for cid, m in CONVERSATIONS.items()},
                segments=TURNS, alerts={"al-d": new_alert("al-d", "d", "cat", "billing", HIT)}))
        finally:
            await store.close()

    run(fill())

    def found(q: str, mode: str = "turns", raw: bool = False, **options: Any) -> Any:
        filters = FullTextFilters(**options.pop("filters", {}))

        async def query() -> list[dict[str, Any]]:
            store = make_store(backend, tmp_path)
            await store.open()
            try:
                ask = FullTextQuery(query=parse(q), filters=filters, **options)
                return await (store.search_turns(ask) if mode == "turns"
                              else store.search_conversations(ask))
            finally:
                await store.close()

        rows = run(query())
        if mode == "turns" and not raw:
            return [f"{h['conversation_id']}/{h['segment_id']}" for h in rows]
        return rows

    return found


def newest(found: Any, q: str, **options: Any) -> list[str]:
    return sorted(found(q, sort="newest", **options))


def test_words_phrases_and_or_not_and_prefixes(store_search: Any) -> None:
    s = store_search
    assert newest(s, "invoice") == ["a/1", "a/2", "d/2"]
    assert newest(s, "INVOICE refund") == ["a/1", "a/2"]  # AND by a space; case ignored
    assert newest(s, "invoice AND refund") == ["a/1", "a/2"]
    assert newest(s, "invoice OR scam") == ["a/1", "a/2", "b/1", "d/2"]
    assert newest(s, "invoice -refund") == ["d/2"]
    assert newest(s, "invoice NOT refund") == ["d/2"]
    assert newest(s, '"refund the invoice"') == ["a/2"]  # a phrase: in a row
    assert newest(s, '"invoice refund"') == []
    assert newest(s, "refund*") == ["a/1", "a/2", "a/3", "d/1"]  # refunded too
    assert newest(s, "refund") == ["a/1", "a/2", "d/1"]  # no stemming
    assert newest(s, "e-mail") == ["b/1"]  # the phrase "e mail"; "email" is another word
    assert newest(s, "email") == ["b/2"]
    assert newest(s, "don't") == ["d/2"]
    assert newest(s, "(scam OR cancel) AND (arrived OR account)") == ["b/1", "d/1"]
    assert newest(s, '"my acc"*') == ["d/1"]  # a phrase whose last word is a prefix


def test_unrecorded_turns_are_not_indexed(store_search: Any) -> None:
    assert store_search("invoice OR refund OR scam", filters={"queue": "billing",
                                                              "agent_id": "bob"}) == []


def test_relevance_ranks_the_turn_holding_more_of_the_query_first(store_search: Any) -> None:
    order = store_search("invoice OR refund")
    assert set(order) == {"a/1", "a/2", "d/1", "d/2"}
    assert set(order[:2]) == {"a/1", "a/2"}  # both words


def test_filters_on_the_turn_and_its_conversation(store_search: Any) -> None:
    s = store_search
    assert newest(s, "invoice", role="agent") == ["a/2"]
    assert newest(s, "invoice", since=1010.0, until=4010.0) == ["a/2"]
    assert newest(s, "invoice", filters={"queue": "billing", "agent_id": "cat"}) == ["d/2"]
    assert newest(s, "email OR scam", filters={"channel": "voice"}) == ["b/1", "b/2"]
    assert newest(s, "invoice", filters={"escalated": True}) == ["d/2"]
    assert newest(s, "invoice", filters={"escalated": False}) == ["a/1", "a/2"]
    assert newest(s, "invoice", filters={"rule_id": "churn"}) == ["d/2"]
    assert newest(s, "invoice", filters={"rule_id": "chur"}) == []
    assert newest(s, "invoice", filters={"alert_status": "open"}) == ["d/2"]
    assert newest(s, "invoice", filters={"alert_status": "resolved"}) == []
    assert newest(s, "invoice", filters={"handle_seconds": (100.0, None)}) == ["a/1", "a/2"]
    assert newest(s, "invoice", filters={"handle_seconds": (None, 100.0)}) == ["d/2"]
    # The customer's sentiment: a's turns -0.5 then 0.6; d's -0.3 then -0.2.
    assert newest(s, "invoice", filters={"sentiment": {"start": (None, -0.4)}}) == ["a/1",
                                                                                      "a/2"]
    assert newest(s, "invoice", filters={"sentiment": {"end": (0.5, None)}}) == ["a/1", "a/2"]
    assert newest(s, "invoice", filters={"sentiment": {"change": (1.0, None)}}) == ["a/1",
                                                                                     "a/2"]
    assert newest(s, "invoice", filters={"sentiment": {"mean": (None, -0.1)}}) == ["d/2"]
    assert newest(s, "invoice", filters={"team": Within(agents=frozenset({"cat"}))}) == \
        ["d/2"]
    assert newest(s, "invoice", filters={"within": Within(queues=frozenset({"sales"}))}) == []


@pytest.mark.parametrize("sort", ["relevance", "newest"])
def test_pages_of_turns_neither_repeat_nor_skip(store_search: Any, sort: str) -> None:
    q = "invoice OR refund* OR email OR account"
    everything = store_search(q, sort=sort)
    assert sorted(everything) == ["a/1", "a/2", "a/3", "b/2", "d/1", "d/2"]
    pages: list[str] = []
    after = None
    while True:
        rows = store_search(q, sort=sort, limit=2, after=after, raw=True)
        pages += [f"{h['conversation_id']}/{h['segment_id']}" for h in rows]
        if len(rows) < 2:
            break
        after = rows[-1]["key"]
    assert pages == everything
    if sort == "newest":
        assert everything == ["d/2", "d/1", "b/2", "a/3", "a/2", "a/1"]


def test_conversations_hold_the_query_across_their_turns(store_search: Any) -> None:
    found = store_search("thanks AND wrong", mode="conversations")  # in two turns of a
    assert [c["id"] for c in found] == ["a"]
    assert found[0]["matched_turns"] == 2
    assert [t["segment_id"] for t in found[0]["matches"]] == ["1", "3"]
    # Newest first; NOT excludes a conversation with any turn holding it.
    assert [c["id"] for c in store_search("invoice", mode="conversations")] == ["d", "a"]
    assert [c["id"] for c in store_search("invoice -today", mode="conversations")] == ["d"]
    assert [c["id"] for c in store_search("invoice OR scam", mode="conversations",
                                          role="customer")] == ["d", "b", "a"]
    assert [c["id"] for c in store_search("today", mode="conversations",
                                          role="customer")] == []
    assert [c["id"] for c in store_search("invoice", mode="conversations",
                                          filters={"escalated": True})] == ["d"]
    assert [c["id"] for c in store_search("invoice", mode="conversations",
                                          since=1500.0)] == ["d"]


def test_the_api_answers_highlights_snippets_and_cursor_pages(
        store_search: Any, client: TestClient, users: Users) -> None:
    analyst = auth(users.token("Analyst"))
    answer = client.get("/v1/search/turns", headers=analyst,
                        params={"q": "refund* -wrong", "sort": "newest"})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert [(h["conversation_id"], h["segment_id"]) for h in hits] == [
        ("d", "1"), ("a", "3"), ("a", "2")]
    assert hits[1]["text"] == "Thanks, refunded already? Great"
    assert hits[1]["highlights"] == [[8, 16]]  # "refunded"; "wrong" is only excluded
    assert hits[1]["snippet"] == {"text": hits[1]["text"], "highlights": [[8, 16]]}
    assert hits[0]["queue"] == "billing" and isinstance(hits[0]["rank"], float)
    assert answer.json()["next"] is None

    for sort in ("relevance", "newest"):
        whole = client.get("/v1/search/turns", headers=analyst,
                           params={"q": "invoice OR refund*", "sort": sort}).json()["hits"]
        paged, cursor = [], None
        while True:
            page = client.get("/v1/search/turns", headers=analyst, params={
                "q": "invoice OR refund*", "sort": sort, "limit": 2,
                **({"cursor": cursor} if cursor else {})}).json()
            paged += page["hits"]
            cursor = page["next"]
            if cursor is None:
                break
        assert paged == whole and len(whole) == 5
    found = client.get("/v1/search/conversations", headers=analyst,
                       params={"q": "thanks wrong"}).json()
    assert [c["id"] for c in found["conversations"]] == ["a"]
    assert found["conversations"][0]["matches"][0]["highlights"] == [[14, 19]]
    assert found["conversations"][0]["queue"] == "billing" and found["next"] is None


@pytest.mark.parametrize(("params", "why"), [
    ({"q": "NOT refund"}, "only excludes"),
    ({"q": "(refund"}, "not closed"),
    ({"q": "refund)"}, "without its '('"),
    ({"q": '"refund'}, "quote is not closed"),
    ({"q": "r*"}, "at least 2 letters"),
    ({"q": "refund OR -invoice"}, "ANDed with something found"),
    ({"q": " ".join(f"w{i}" for i in range(33))}, "at most 32"),
    ({"q": "(" * 9 + "refund" + ")" * 9}, "deeper than 8"),
    ({"q": "refund", "cursor": "nonsense"}, "cursor"),
    ({"q": "refund", "sort": "newest",  # a relevance cursor
      "cursor": "WyJyZWxldmFuY2UiLCBbMS4wLCAyLjAsICJhIiwgIjEiXV0="}, "cursor"),
    ({"q": "refund", "queu": "billing"}, "queu"),
    ({"q": "refund", "limit": 201}, "limit"),
])
def test_a_query_that_cannot_be_run_is_a_clear_422(
        client: TestClient, users: Users, params: dict[str, Any], why: str) -> None:
    answer = client.get("/v1/search/turns", headers=auth(users.token("Analyst")),
                        params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_error"
    assert why in answer.text


def test_search_keeps_to_the_scope_and_is_audited(store_search: Any, client: TestClient,
                                                  users: Users) -> None:
    admin = auth(users.token("Admin", username="root"))
    analyst = auth(users.token("Analyst", username="ana"))
    assert client.patch("/v1/users/ana", headers=admin,
                        json={"scope": {"teams": [], "queues": ["sales"]}}).status_code == 200
    for route in ("/v1/search/turns", "/v1/search/conversations"):
        answer = client.get(route, headers=analyst, params={"q": "invoice OR scam"})
        assert answer.status_code == 200
        rows = answer.json().get("hits") or answer.json()["conversations"]
        assert {r.get("conversation_id", r.get("id")) for r in rows} == {"b"}
    entries = client.get("/v1/audit", headers=admin,
                         params={"action": "transcript.search", "actor": "ana"}).json()
    modes = sorted(e["details"]["mode"] for e in entries["entries"])
    assert modes == ["conversations", "turns"]
    assert all(e["details"]["q"] == "invoice OR scam" for e in entries["entries"])
    assert client.get("/v1/search/turns", params={"q": "x"}).status_code == 401
    agent = auth(users.token("Agent", agent_id="ann"))
    assert client.get("/v1/search/turns", headers=agent, params={"q": "x"}).status_code == 403


async def _write_sqlite(tmp_path: Path) -> None:
    """The conversations and turns above, into a SQLite store in ``tmp_path``."""
    store = make_store("sqlite", tmp_path)
    await store.open()
    try:
        await store.write(WriteBatch(
            conversations={cid: (m, {}) for cid, m in CONVERSATIONS.items()},
            segments=TURNS))
    finally:
        await store.close()


async def _found_sqlite(tmp_path: Path, q: str) -> list[str]:
    """The turns the SQLite store in ``tmp_path`` finds for ``q``, newest first."""
    store = make_store("sqlite", tmp_path)
    await store.open()
    try:
        hits = await store.search_turns(FullTextQuery(query=parse(q), sort="newest"))
        return [f"{h['conversation_id']}/{h['segment_id']}" for h in hits]
    finally:
        await store.close()


def test_sqlite_indexes_turns_recorded_before_the_index_and_follows_every_change(
        tmp_path: Path) -> None:
    import sqlite3

    run(_write_sqlite(tmp_path))
    # A database from before the index: no index, no text_id.
    db = sqlite3.connect(tmp_path / "cc.db")
    db.executescript("DROP TABLE segments_fts; DROP TRIGGER segments_fts_added; "
                     "DROP TRIGGER segments_fts_removed; DROP TRIGGER segments_fts_changed; "
                     "UPDATE segments SET text_id = NULL;")
    db.close()
    # indexed when the store opens
    assert run(_found_sqlite(tmp_path, "invoice")) == ["d/2", "a/2", "a/1"]
    db = sqlite3.connect(tmp_path / "cc.db")
    with db:
        db.execute("UPDATE segments SET text = 'no longer' WHERE conversation_id = 'a' "
                   "AND segment_id = '2'")
        db.execute("UPDATE segments SET text = NULL WHERE conversation_id = 'd'")
        db.execute("DELETE FROM segments WHERE conversation_id = 'a' AND segment_id = '1'")
    indexed = db.execute("SELECT count(*) FROM segments_fts").fetchone()[0]
    stored = db.execute("SELECT count(*) FROM segments WHERE text IS NOT NULL").fetchone()[0]
    db.close()
    assert run(_found_sqlite(tmp_path, "invoice")) == []
    assert run(_found_sqlite(tmp_path, "longer")) == ["a/2"]
    assert indexed == stored == 4  # a/2, a/3, b/1, b/2: only what is stored


# The full-text index before 2026-12-07, which kept its own copy of every turn's words,
# as that version created it (the turns already numbered by text_id).
_INDEX_WITH_WORDS = (
    "DROP INDEX segments_text_id", "DROP TRIGGER segments_fts_added",
    "DROP TRIGGER segments_fts_removed", "DROP TRIGGER segments_fts_changed",
    "DROP TABLE segments_fts",
    """CREATE VIRTUAL TABLE segments_fts USING fts5(text, conversation_id UNINDEXED,
        segment_id UNINDEXED, tokenize = 'unicode61 remove_diacritics 0')""",
    """INSERT INTO segments_fts (rowid, text, conversation_id, segment_id)
        SELECT text_id, text, conversation_id, segment_id FROM segments
        WHERE text IS NOT NULL""",
    """CREATE TRIGGER segments_fts_added AFTER INSERT ON segments WHEN new.text IS NOT NULL
    BEGIN
        INSERT INTO segments_fts (text, conversation_id, segment_id)
        VALUES (new.text, new.conversation_id, new.segment_id);
        UPDATE segments SET text_id = last_insert_rowid()
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id;
    END""",
    """CREATE TRIGGER segments_fts_removed AFTER DELETE ON segments
    WHEN old.text_id IS NOT NULL
    BEGIN
        DELETE FROM segments_fts WHERE rowid = old.text_id;
    END""",
    """CREATE TRIGGER segments_fts_changed AFTER UPDATE OF text ON segments
    BEGIN
        DELETE FROM segments_fts WHERE rowid = old.text_id;
        UPDATE segments SET text_id = NULL
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id;
        INSERT INTO segments_fts (text, conversation_id, segment_id)
        SELECT new.text, new.conversation_id, new.segment_id WHERE new.text IS NOT NULL;
        UPDATE segments SET text_id = last_insert_rowid()
        WHERE conversation_id = new.conversation_id AND segment_id = new.segment_id
        AND new.text IS NOT NULL;
    END""",
)


def test_sqlite_keeps_an_index_with_a_copy_of_the_words_until_reindex(tmp_path: Path) -> None:
    """A new database's index holds no copy of the words (they are in ``segments``
    alone). One made before keeps its index, so the previous version still searches it,
    and this one finds the same in it; `contact-center reindex` rebuilds it without the
    copy (refused while a service holds the database), and the rebuilt index follows
    every change."""
    import sqlite3

    from click.testing import CliRunner

    from contact_center.cli import main
    from contact_center.stores.sqlite import _exclusive_lock, reindex_text

    path = tmp_path / "cc.db"

    def change(*statements: str) -> set[str]:
        """Run ``statements``; the tables there are after."""
        db = sqlite3.connect(path)
        with db:
            for statement in statements:
                db.execute(statement)
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        db.close()
        return names

    run(_write_sqlite(tmp_path))
    assert "segments_fts_content" not in change()
    query = "invoice OR refund*"
    assert run(_found_sqlite(tmp_path, query)) == ["d/2", "d/1", "a/3", "a/2", "a/1"]
    assert "segments_fts_content" in change(*_INDEX_WITH_WORDS)
    assert run(_found_sqlite(tmp_path, query)) == ["d/2", "d/1", "a/3", "a/2", "a/1"]
    assert "segments_fts_content" in change(  # kept, and following changes as it did
        "DELETE FROM segments WHERE conversation_id = 'd' AND segment_id = '2'")
    assert run(_found_sqlite(tmp_path, query)) == ["d/1", "a/3", "a/2", "a/1"]

    held = _exclusive_lock(f"{path}.lock")  # a service runs on it
    with pytest.raises(RuntimeError, match="stop it first"):
        reindex_text(path)
    held.close()
    result = CliRunner().invoke(main, ["reindex", "--db", str(path), "--vacuum"])
    assert result.exit_code == 0, result.output
    assert "rebuilt without a copy of the words" in result.output
    assert "segments_fts_content" not in change()
    assert run(_found_sqlite(tmp_path, query)) == ["d/1", "a/3", "a/2", "a/1"]
    change("DELETE FROM segments WHERE conversation_id = 'd'",
           "UPDATE segments SET text = 'a refund after all' WHERE conversation_id = 'b' "
           "AND segment_id = '2'")
    assert run(_found_sqlite(tmp_path, query)) == ["b/2", "a/3", "a/2", "a/1"]
    again = CliRunner().invoke(main, ["reindex", "--db", str(path)])
    assert again.exit_code == 0 and "already without a copy" in again.output
    repaired = CliRunner().invoke(main, ["reindex", "--db", str(path), "--always"])
    assert repaired.exit_code == 0 and "rebuilt" in repaired.output
    assert run(_found_sqlite(tmp_path, query)) == ["b/2", "a/3", "a/2", "a/1"]
    change("DELETE FROM segments WHERE conversation_id = 'b'")
    assert run(_found_sqlite(tmp_path, query)) == ["a/3", "a/2", "a/1"]


def test_an_export_streams_every_row_found_with_the_count_first(
        store_search: Any, client: TestClient, users: Users) -> None:
    analyst = auth(users.token("Analyst", username="ana"))
    admin = auth(users.token("Admin"))
    q = {"q": "invoice OR refund* OR scam"}
    found = client.get("/v1/search/turns", headers=analyst,
                       params={**q, "sort": "newest"}).json()["hits"]
    exported = client.get("/v1/search/turns/export", headers=analyst, params=q)
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/jsonl"
    first, *lines = exported.text.splitlines()
    assert json.loads(first) == {"count": len(found)} == {"count": 6}
    assert exported.headers["x-total-count"] == "6"
    rows = [json.loads(line) for line in lines]
    assert [(r["conversation_id"], r["segment_id"]) for r in rows] == [
        (h["conversation_id"], h["segment_id"]) for h in found]
    assert rows[0] == export_row(found[0], "turns")
    as_csv = client.get("/v1/search/turns/export", headers=analyst,
                        params={**q, "format": "csv", "role": "customer"})
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    header, *table = list(csv.reader(io.StringIO(as_csv.text)))
    assert tuple(header) == TURN_COLUMNS and len(table) == int(as_csv.headers["x-total-count"])
    assert {row[0] for row in table} == {"a", "b", "d"}
    conversations = client.get("/v1/search/conversations/export", headers=analyst,
                               params={**q, "format": "csv"})
    header, *table = list(csv.reader(io.StringIO(conversations.text)))
    assert [row[0] for row in table] == ["d", "b", "a"] and "matched_turns" in header
    entries = client.get("/v1/audit", headers=admin, params={
        "action": "transcript.export", "actor": "ana"}).json()["entries"]
    assert sorted((e["details"]["mode"], e["details"]["count"]) for e in entries) == [
        ("conversations", 3), ("turns", 5), ("turns", 6)]
    refused = client.get("/v1/search/turns/export", headers=analyst,
                         params={**q, "cursor": "x"})
    assert refused.status_code == 422 and "cursor" in refused.text  # no pages: everything


def test_a_cell_that_starts_like_a_formula_is_kept_as_text() -> None:
    assert csv_lines([['=HYPERLINK("x")', "-1", -1.5, None, "fine"]]) == \
        '"\'=HYPERLINK(""x"")",\'-1,-1.5,,fine\r\n'


def test_an_export_keeps_to_a_page_of_memory_however_many_rows(tmp_path: Path) -> None:
    """Peak memory exporting 24,000 turns is about that of exporting 6,000."""
    async def fill() -> None:
        store = make_store("sqlite", tmp_path)
        await store.open()
        try:
            for chunk in range(24):
                cid = f"c{chunk}"
                await store.write(WriteBatch(
                    conversations={cid: (meta(cid, "billing", "ann", 0.0), {})},
                    segments=[turn(cid, i, f"refund number {i} " + "words " * 20, float(i))
                              for i in range(1, 1001)]))
        finally:
            await store.close()

    async def peak(until: float) -> tuple[int, int]:
        store = make_store("sqlite", tmp_path)
        await store.open()
        try:
            query = FullTextQuery(query=parse("refund"), sort="newest", until=until)
            total = await store.count_found(query, "turns")
            tracemalloc.start()
            size = 0
            async for chunk in exported(store, query, "turns", "jsonl", total):
                size += len(chunk)
            _, most = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return most, size
        finally:
            await store.close()

    run(fill())
    small, small_size = run(peak(251.0))  # 250 turns of each conversation: 6,000
    large, large_size = run(peak(1001.0))  # 24,000
    assert large_size > 3.5 * small_size
    assert large < 1.5 * small, (small, large)


def test_a_third_export_at_once_is_answered_busy(store_search: Any, client: TestClient,
                                                  users: Users) -> None:
    analyst = auth(users.token("Analyst"))
    state = client.app.state  # type: ignore[attr-defined]
    assert client.get("/v1/search/turns/export", headers=analyst,
                      params={"q": "invoice"}).status_code == 200
    assert state.exports_running == 0  # released once the stream ended
    state.exports_running = EXPORTS_AT_ONCE  # two streaming elsewhere
    busy = client.get("/v1/search/turns/export", headers=analyst, params={"q": "invoice"})
    assert busy.status_code == 503 and busy.json()["code"] == "busy"
    assert int(busy.headers["retry-after"]) > 0
    state.exports_running = 0
    failed = client.get("/v1/search/turns/export", headers=analyst, params={"q": "NOT x"})
    assert failed.status_code == 422 and state.exports_running == 0


@pytest.mark.parametrize("key", [
    ["newest", [1.0, 10**23, "a", "1"]], ["newest", [1.0, 2**40, "a", "1"]],
    ["newest", [1.0, 1, "a\u0000", "1"]], ["newest", [float("nan"), 1, "a", "1"]],
    ["conversations", [1e300, "a"]], ["newest", [1.0, 1, "a" * 5000, "1"]],
])
def test_a_forged_cursor_is_a_422_not_a_500(client: TestClient, users: Users,
                                            key: list[Any]) -> None:
    raw = json.dumps(key)
    cursor = base64.urlsafe_b64encode(raw.encode()).decode()
    route = "/v1/search/conversations" if key[0] == "conversations" else "/v1/search/turns"
    answer = client.get(route, headers=auth(users.token("Analyst")), params={
        "q": "refund", "cursor": cursor, **({"sort": "newest"} if key[0] == "newest" else {})})
    assert answer.status_code == 422, answer.text
    nested = base64.urlsafe_b64encode(b"[" * 1500).decode()
    assert client.get("/v1/search/turns", headers=auth(users.token("Analyst")),
                      params={"q": "x", "cursor": nested}).status_code == 422


def test_an_export_under_way_neither_freezes_searches_nor_grows_its_set(
        store_search: Any, backend: str, tmp_path: Path) -> None:
    """An export reads its own snapshot: a search meanwhile sees a turn written after the
    export started; the export does not, nor a conversation that matched only since."""
    async def check() -> None:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            query = FullTextQuery(query=parse("invoice OR zebra"), until=3500.0)
            pages = store.export_found(query, "conversations")
            first = await pages.__anext__()
            await store.write(WriteBatch(
                conversations={"e": (meta("e", "billing", "ann", 3400.0), {})},
                segments=[turn("e", 1, "a zebra invoice", 3600.0),
                          turn("a", 9, "zebra", 3450.0)]))
            rest = [c for page in [p async for p in pages] for c in page]
            assert [c["id"] for c in first + rest] == ["a"]  # e: its turn came after
            found = await store.search_turns(FullTextQuery(query=parse("zebra")))
            assert {h["conversation_id"] for h in found} == {"a", "e"}
        finally:
            await store.close()

    run(check())
