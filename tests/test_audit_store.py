"""The audit log in both stores (contact_center.stores.audit): appended in batches as one
chain, even from several processes at once; listed newest first with filters and a
cursor; read in id order to verify; UPDATE and DELETE refused by the database itself,
and an edit made behind the refusal's back found by verify."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contact_center.stores import AuditQuery, Store
from monitoring.audit import AuditEntry, make_entry
from monitoring.audit_chain import verify
from tests.conftest import Stored, make_store, run


def entry(n: int, actor: str = "ann", action: str = "transcript.read",
          target: str | None = None, at: float | None = None) -> AuditEntry:
    return make_entry(1_767_261_600.0 + n if at is None else at, actor, action,
                      "conversation", target or f"c-{n}", "ok", "10.0.0.1", f"r{n}",
                      {"n": n, "terms": ["refund", "zoë"]})


async def _with(backend: str, tmp_path: Path, work: Any) -> Any:
    store = make_store(backend, tmp_path)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def on_store(backend: str, tmp_path: Path, work: Any) -> Any:
    return run(_with(backend, tmp_path, work))


async def _whole_chain(store: Store) -> list[AuditEntry]:
    return await store.audit_chain(0, 100_000)


def test_batches_make_one_chain_listed_newest_first(backend: str, tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        assert await store.append_audit([]) == []
        first = await store.append_audit([entry(1), entry(2, actor="bob")])
        assert [e.id for e in first] == [1, 2]
        more = await store.append_audit([entry(3, action="transcript.search"),
                                         entry(4, actor="bob", target="c-1"), entry(5)])
        assert [e.id for e in more] == [3, 4, 5] and more[0].prev_hash == first[-1].hash
        chain = await _whole_chain(store)
        assert chain == first + more  # as stored: every field, details decoded
        assert verify(chain).broken is None
        assert [e.id for e in await store.audit_chain(2, 2)] == [3, 4]

        async def ids(**filters: Any) -> list[int | None]:
            return [e.id for e in await store.list_audit(AuditQuery(**filters))]

        assert await ids() == [5, 4, 3, 2, 1]
        assert await ids(actor="bob") == [4, 2]
        assert await ids(action="transcript.search") == [3]
        assert await ids(target_type="conversation", target_id="c-1") == [4, 1]
        assert await ids(target_id="c-1", actor="ann") == [1]
        assert await ids(since=1_767_261_602.0, until=1_767_261_604.0) == [3, 2]
        assert await ids(before=4, limit=2) == [3, 2]
        assert await ids(before=2) == [1]
        assert await ids(actor="nobody") == []
        refused = make_entry(1_767_261_606.0, "eve", "monitor.start", "conversation", "c-1",
                             "forbidden", None, None)
        await store.append_audit([refused])
        assert await ids(target_id="c-1") == [6, 4, 1]
        assert await ids(target_id="c-1", result="ok") == [4, 1]
        assert await ids(result="forbidden") == [6]

    on_store(backend, tmp_path, work)


def test_appends_from_several_processes_at_once_stay_one_chain(backend: str,
                                                               tmp_path: Path) -> None:
    """Two stores on one database (two API nodes), appending at once."""

    async def work() -> list[AuditEntry]:
        stores = [make_store(backend, tmp_path) for _ in range(2)]
        for store in stores:
            await store.open()
        try:
            async def append(store: Store, node: int) -> None:
                for batch in range(10):
                    await store.append_audit([entry(100 * node + 10 * batch + i,
                                                    actor=f"node{node}") for i in range(5)])

            await asyncio.gather(*(append(s, n) for n, s in enumerate(stores)))
            return await _whole_chain(stores[0])
        finally:
            for store in stores:
                await store.close()

    chain = run(work())
    assert len(chain) == 100 and [e.id for e in chain] == list(range(1, 101))
    assert verify(chain).broken is None


def test_the_database_refuses_update_and_delete(backend: str, tmp_path: Path,
                                                stored: Stored) -> None:
    on_store(backend, tmp_path, lambda s: s.append_audit([entry(1), entry(2)]))
    statements = ["UPDATE audit_log SET actor = 'mallory' WHERE id = 1",
                  "DELETE FROM audit_log WHERE id = 2",
                  "UPDATE audit_log SET actor = 'mallory' WHERE id = 99"]  # (none matches)
    if backend == "postgres":
        statements.append("TRUNCATE audit_log")
    errors = (sqlite3.IntegrityError, asyncpg.PostgresError)
    for sql in statements:
        if backend == "sqlite" and sql.endswith("id = 99"):
            continue  # (SQLite's triggers fire per row: no row, nothing to refuse)
        with pytest.raises(errors, match="append-only"):
            stored.rows(sql)
    assert [r[0] for r in stored.rows("SELECT actor FROM audit_log ORDER BY id")] == [
        "ann", "ann"]


def _behind_the_triggers(backend: str, stored: Stored, tmp_path: Path, sql: str) -> None:
    """Run ``sql`` as someone who got past the refusal: SQLite's triggers dropped (an
    edit of the file), PostgreSQL's disabled by the table's owner."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "cc.db") as db:
            db.execute("DROP TRIGGER audit_log_no_update")
            db.execute("DROP TRIGGER audit_log_no_delete")
            db.execute(sql)
        return
    for statement in ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only", sql,
                      "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"):
        stored.rows(statement)


@pytest.mark.parametrize(("sql", "bad_id", "words"), [
    ("UPDATE audit_log SET actor = 'mallory' WHERE id = 3", 3, "was changed"),
    ("UPDATE audit_log SET details = '{\"n\": 4}' WHERE id = 4", 4, "was changed"),
    ("DELETE FROM audit_log WHERE id = 2", 2, "entry 2 is missing"),
    ("DELETE FROM audit_log WHERE id IN (1, 2)", 1, "entries 1 to 2 are missing"),
])
def test_an_edit_behind_the_refusal_is_found_by_verify(backend: str, tmp_path: Path,
                                                       stored: Stored, sql: str, bad_id: int,
                                                       words: str) -> None:
    on_store(backend, tmp_path, lambda s: s.append_audit([entry(n) for n in range(1, 6)]))
    _behind_the_triggers(backend, stored, tmp_path, sql)
    broken = verify(on_store(backend, tmp_path, _whole_chain)).broken
    assert broken is not None and broken.id == bad_id and words in broken.why


def test_sqlite_puts_dropped_triggers_back_when_it_opens(tmp_path: Path) -> None:
    on_store("sqlite", tmp_path, lambda s: s.append_audit([entry(1)]))
    with sqlite3.connect(tmp_path / "cc.db") as db:
        db.execute("DROP TRIGGER audit_log_no_update")
    on_store("sqlite", tmp_path, lambda s: s.append_audit([entry(2)]))
    with sqlite3.connect(tmp_path / "cc.db") as db, \
            pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET actor = 'x' WHERE id = 1")
