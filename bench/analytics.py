"""Analysts' queries on a million recorded turns: full-text search, aggregates, export.

Builds a throwaway store (SQLite, or a throwaway PostgreSQL database with --postgres) of
--conversations conversations of --turns turns each, made from the twitter-care corpus
(../shared/data) loaded many times over, spread over 30 days, 20 queues and 200 agents
in 20 teams, one in ten raising an alert. Then times, --repeat times each, the searches
an analyst makes (rare and common words, phrases, prefixes, boolean queries, filters),
the conversation search, the aggregates, and an export streamed to nowhere; and, in the
same run, the ceilings they are compared with: counting the matches alone, and reading
as many rows as the export from the table without searching. Reports what it measured
(p50, p99, rows/s and the ratios); asserts nothing.

    python bench/analytics.py --conversations 50000 --turns 20
    python bench/analytics.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics import aggregates  # noqa: E402
from analytics.fulltext import parse  # noqa: E402
from analytics.quality import load_corpus  # noqa: E402
from analytics.scoring import Scorer  # noqa: E402
from bench.load import throwaway_database  # noqa: E402
from contact_center.api.search import exported  # noqa: E402
from contact_center.stores import (  # noqa: E402
    AggregateQuery,
    FullTextFilters,
    FullTextQuery,
    SegmentRow,
    Store,
    WriteBatch,
)
from contact_center.stores.postgres import PostgresStore  # noqa: E402
from contact_center.stores.sqlite import SQLiteStore  # noqa: E402
from monitoring import codec  # noqa: E402
from monitoring.alerts import new_alert  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "twitter-care" / "conversations.jsonl"
START = 1_767_225_600.0  # 2026-01-01 UTC
DAYS = 30

SEARCHES: list[tuple[str, dict[str, Any]]] = [
    ("refund", {}),
    ("help", {}),  # common: most of the index
    ('"not working"', {}),
    ("cancel* account", {}),
    ("(refund OR chargeback) -thanks", {}),
    ("help", {"sort": "newest"}),
    ("password", {"filters": {"queue": "queue-3"}}),
    ("refund", {"filters": {"escalated": True}}),
    ("help", {"filters": {"sentiment": {"start": (None, -0.5)}}}),
    ("refund", {"since": START + 10 * 86400, "until": START + 11 * 86400}),
]


def make_store(db: str) -> Store:
    return PostgresStore(db) if "://" in db else SQLiteStore(Path(db), synchronous="OFF")


async def build(db: str, conversations: int, turns: int) -> int:
    corpus = load_corpus(CORPUS)
    scorer = Scorer()
    stream = [t for c in corpus for t in c["turns"]]
    scores = {t["text"]: scorer.score(t["text"]).as_dict() for t in stream}
    store = make_store(db)
    await store.open()
    segments, batch = 0, WriteBatch()
    spacing = DAYS * 86400 / conversations
    try:
        for n in range(conversations):
            cid, started = f"c{n:07d}", START + n * spacing
            agent, queue = f"agent-{n % 200}", f"queue-{n % 20}"
            first = n * turns % len(stream)
            clock = started
            for seq in range(1, turns + 1):
                turn = stream[(first + seq - 1) % len(stream)]
                role = "customer" if turn["speaker"] == "customer" else "agent"
                clock += 30.0
                batch.segments.append(SegmentRow(cid, str(seq), seq, role, role, turn["text"],
                                                 scores[turn["text"]], None, None, clock))
            segments += turns
            batch.conversations[cid] = ({
                "id": cid, "channel": "chat", "queue": queue, "agent_id": agent,
                "customer": {"id": None, "name": None, "email": None}, "recording": "all",
                "attributes": {}, "status": "ended", "started_at": started,
                "ended_at": clock + 60, "updated_at": clock + 60}, {})
            if n % 10 == 0:
                hit = {"rule_id": "churn", "rule_version": 1, "rule_name": "Churn",
                       "kind": "signal", "severity": "high", "reason": "churn",
                       "raised_at": started + 30, "evidence": {}}
                batch.alerts[f"a{n:07d}"] = new_alert(f"a{n:07d}", cid, agent, queue, hit)
            if len(batch.conversations) >= 500:
                await store.write(batch)
                batch = WriteBatch()
        await store.write(batch)
    finally:
        await store.close()
    return segments


async def timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))], 2)}


async def measure(db: str, repeat: int) -> dict[str, Any]:
    store = make_store(db)
    await store.open()
    report: dict[str, Any] = {"searches": [], "aggregates": []}
    try:
        for q, options in SEARCHES:
            filters = FullTextFilters(**options.get("filters", {}))
            query = FullTextQuery(query=parse(q), filters=filters, limit=20,
                                  **{k: v for k, v in options.items() if k != "filters"})
            times, hits = await timed(repeat, lambda query=query: store.search_turns(query))
            counting, found = await timed(
                repeat, lambda query=query: store.count_found(query, "turns"))
            report["searches"].append({
                "q": q, "options": {k: str(v) for k, v in options.items()},
                "found": found, "page": len(hits), **summary(times),
                "count_only": summary(counting),
                "page_over_count_p50": round(summary(times)["p50_ms"]
                                             / max(summary(counting)["p50_ms"], 1e-3), 2)})
            print(report["searches"][-1])
        query = FullTextQuery(query=parse("refund OR help"), limit=20)
        times, _ = await timed(repeat, lambda: store.search_conversations(query))
        report["conversation_search"] = {"q": "refund OR help", **summary(times)}
        print(report["conversation_search"])
        for group_by, interval in (("queue", None), ("queue", "day"), ("agent", "week")):
            async def aggregated(group_by: str = group_by,
                                 interval: str | None = interval) -> int:
                facts = await store.aggregate(AggregateQuery(group_by=group_by,
                                                             limit=1_000_000))
                return len(await asyncio.to_thread(aggregates.aggregate, facts, interval,
                                                   10_000))
            times, rows = await timed(max(3, repeat // 4), aggregated)
            report["aggregates"].append({"group_by": group_by, "interval": interval,
                                         "rows": rows, **summary(times)})
            print(report["aggregates"][-1])
        report["export"] = await export(store, db)
        print(report["export"])
    finally:
        await store.close()
    return report


async def export(store: Store, db: str) -> dict[str, Any]:
    """Stream every turn holding a common word; the ceiling: reading and encoding as many
    rows of the table by keyset pages of the same size, without a query."""
    query = FullTextQuery(query=parse("help"), sort="newest", until=time.time())
    total = await store.count_found(query, "turns")
    t0 = time.perf_counter()
    size = 0
    async for chunk in exported(store, query, "turns", "jsonl", total):
        size += len(chunk)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    read = await raw_read(db, total)
    ceiling = time.perf_counter() - t0
    return {"rows": total, "mb": round(size / 1e6, 1), "seconds": round(elapsed, 2),
            "rows_per_s": round(total / elapsed), "mb_per_s": round(size / 1e6 / elapsed, 1),
            "ceiling_rows_per_s": round(read / ceiling),
            "over_ceiling": round((total / elapsed) / (read / ceiling), 2)}


PAGE = ("SELECT * FROM segments WHERE (conversation_id, segment_id) > ({}, {}) "
        "ORDER BY conversation_id, segment_id LIMIT 1000")


async def raw_read(db: str, total: int) -> int:
    """Read and encode ``total`` rows of segments, a keyset page of 1,000 at a time."""
    read, key = 0, ("", "")
    if "://" in db:
        connection = await asyncpg.connect(db)
        try:
            while read < total:
                rows = await connection.fetch(PAGE.format("$1", "$2"), *key)
                if not rows:
                    break
                "".join(codec.dumps({k: v for k, v in r.items() if k != "text_search"})
                        for r in rows)
                read, key = read + len(rows), (rows[-1][0], rows[-1][1])
        finally:
            await connection.close()
        return read
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        while read < total:
            rows = connection.execute(PAGE.format("?", "?"), key).fetchall()
            if not rows:
                break
            "".join(codec.dumps(dict(r)) for r in rows)
            read, key = read + len(rows), (rows[-1][0], rows[-1][1])
    finally:
        connection.close()
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="a PostgreSQL server to make a throwaway database on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, throwaway_database(args.postgres) as postgres:
        db = postgres or str(Path(tmp) / "analytics.db")
        t0 = time.perf_counter()
        segments = asyncio.run(build(db, args.conversations, args.turns))
        built = time.perf_counter() - t0
        print(f"built {args.conversations} conversations, {segments} segments in {built:.0f}s")
        report = asyncio.run(measure(db, args.repeat))
    report |= {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {platform.python_implementation()} "
                          f"{platform.python_version()}",
               "store": "postgresql" if postgres else "sqlite", "command": " ".join(sys.argv),
               "conversations": args.conversations, "segments": segments,
               "build_s": round(built), "build_segments_per_s": round(segments / built)}
    out = ROOT / "bench" / "results" / f"analytics-{report['store']}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
