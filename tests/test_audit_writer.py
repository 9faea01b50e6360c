"""The audit writer (contact_center.audit_writer) on a real store: entries a route waits
for are durable when it goes on, batched into few transactions; a flood of failed
authentications is counted in one entry, never grows memory and never takes the room the
other entries need; counts are written when due, bounded per source; a store that fails
is said so; stopping writes what is queued."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contact_center import audit_writer
from contact_center.audit_writer import AuditUnavailable, AuditWriter
from contact_center.stores import AuditQuery, Store
from monitoring.audit import AuditEntry, make_entry
from monitoring.audit_chain import verify
from tests.conftest import make_store, run


class Counted:
    """A real store whose appends are counted, and can be made to fail."""

    def __init__(self, store: Store) -> None:
        self.store, self.appends, self.failing = store, 0, False

    async def append_audit(self, entries: list[AuditEntry]) -> list[AuditEntry]:
        self.appends += 1
        if self.failing:
            raise OSError("disk full")
        return await self.store.append_audit(entries)


def entry(action: str = "transcript.read", n: int = 0) -> AuditEntry:
    return make_entry(1_767_261_600.0 + n, "ann", action, "conversation", f"c-{n}", "ok",
                      "10.0.0.1", None)


async def _scenario(backend: str, tmp_path: Path, work: Any, **sizes: Any) -> Any:
    store = make_store(backend, tmp_path)
    await store.open()
    counted = Counted(store)
    writer = AuditWriter(counted, **sizes)  # type: ignore[arg-type]
    await writer.start()
    try:
        return await work(writer, counted, store)
    finally:
        await writer.stop()
        await store.close()


def scenario(backend: str, tmp_path: Path, work: Any, **sizes: Any) -> Any:
    return run(_scenario(backend, tmp_path, work, **sizes))


def test_a_recorded_entry_is_durable_and_entries_at_once_share_transactions(
        backend: str, tmp_path: Path) -> None:
    async def work(writer: AuditWriter, counted: Counted, store: Store) -> None:
        await writer.record(entry())
        assert [e.target_id for e in await store.list_audit(AuditQuery())] == ["c-0"]
        await asyncio.gather(*(writer.record(entry(n=n)) for n in range(1, 201)))
        assert len(await store.list_audit(AuditQuery(limit=1000))) == 201
        assert counted.appends < 20  # (group commit: not one transaction each)
        assert verify(await store.audit_chain(0, 1000)).broken is None

    scenario(backend, tmp_path, work)


def test_a_flood_of_failed_authentications_is_counted_in_one_entry(
        backend: str, tmp_path: Path) -> None:
    async def work(writer: AuditWriter, counted: Counted, store: Store) -> None:
        for n in range(1000):  # (at once: the writer gets no turn meanwhile)
            writer.record_soon(entry("auth.failed", n))
        await writer.record(entry(n=5000))  # room is kept for what routes wait for
        await writer.stop()
        written = await store.audit_chain(0, 10_000)
        failed = [e for e in written if e.action == "auth.failed"]
        assert len(failed) == 5  # half the queue of 10
        summary = [e for e in written if e.action == "audit.counted"]
        assert len(summary) == 1 and summary[0].details["entries"] == 995
        assert summary[0].details["counts"] == [{"action": "auth.failed", "why": "queue full",
                                                 "source": "10.0.0.1", "entries": 995}]
        assert summary[0].details["first_at"] == 1_767_261_605.0
        assert summary[0].details["last_at"] == 1_767_261_600.0 + 999
        assert any(e.target_id == "c-5000" for e in written)

    scenario(backend, tmp_path, work, queue_size=10)


def test_counts_are_written_once_due_and_bounded_per_source(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_writer, "SUMMARY_SECONDS", 0.3)
    monkeypatch.setattr(audit_writer, "COUNTED_KEYS", 3)

    async def work(writer: AuditWriter, counted: Counted, store: Store) -> None:
        await asyncio.sleep(0.05)  # (the writer waits for entries: the first count wakes it)
        for n in range(50):
            writer.count(replace(entry("auth.failed", n), source=f"10.0.0.{n % 5}"),
                         "too_many_failures")
        await asyncio.sleep(0.1)
        assert await store.audit_chain(0, 10) == []  # (not due yet)
        deadline = asyncio.get_running_loop().time() + 5
        while not (written := await store.audit_chain(0, 10)):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert [e.action for e in written] == ["audit.counted"]
        counts = {c["source"]: c["entries"] for c in written[0].details["counts"]}
        assert counts == {"10.0.0.0": 10, "10.0.0.1": 10, "10.0.0.2": 10, None: 20}

    scenario(backend, tmp_path, work)


def test_a_failing_store_is_told_and_what_was_lost_counted(backend: str,
                                                           tmp_path: Path) -> None:
    async def work(writer: AuditWriter, counted: Counted, store: Store) -> None:
        counted.failing = True
        writer.record_soon(entry("auth.failed"))
        with pytest.raises(AuditUnavailable, match="disk full"):
            await writer.record(entry())
        counted.failing = False
        await writer.record(entry(n=1))
        await writer.stop()
        written = await store.audit_chain(0, 100)
        assert [e.action for e in written] == ["transcript.read", "audit.counted"]
        assert written[1].details["counts"] == [
            {"action": "auth.failed", "why": "write failed", "source": "10.0.0.1",
             "entries": 1}]

    scenario(backend, tmp_path, work)


def test_stopping_writes_what_is_queued_and_then_refuses(backend: str,
                                                         tmp_path: Path) -> None:
    async def work(writer: AuditWriter, counted: Counted, store: Store) -> None:
        for n in range(20):
            writer.record_soon(entry("auth.failed", n))
        await writer.stop()
        assert len(await store.audit_chain(0, 100)) == 20
        with pytest.raises(AuditUnavailable):
            await writer.record(entry())
        writer.record_soon(entry("auth.failed"))  # (ignored)

    scenario(backend, tmp_path, work)


def test_stopping_with_a_failing_store_ends_and_says_so(
        backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def work(writer: AuditWriter, counted: Counted, store: Store) -> float:
        counted.failing = True
        for n in range(3):
            writer.record_soon(entry("auth.failed", n))
        started = asyncio.get_running_loop().time()
        await writer.stop()
        return asyncio.get_running_loop().time() - started

    assert scenario(backend, tmp_path, work) < 4.0
    assert "writing the audit log failed" in caplog.text
    assert "3 counted" in caplog.text
