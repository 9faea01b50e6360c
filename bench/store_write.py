"""What the SQLite writer spends on a batch, table by table (issue 28).

Runs the embedded store's own write (`contact_center.stores.sqlite._write`) on a fresh
database (WAL, synchronous FULL, as ``contact-center serve`` opens it) of 1,000 live
conversations, in batches as the pipeline makes them: each event is a recorded customer
turn of the twitter-care corpus on a random conversation, with that conversation's whole
state (a live conversation's state mid-conversation, 1.5 KB as JSON).
Reports the writer thread's CPU and wall time per event for the conversations' states
alone, the turns alone (their table, index and full-text index), and both, at two batch
sizes; and the pages each commit adds to the write-ahead log (counted in a pass of its
own with checkpoints held off: the same on any machine, so a change to the writer can
be judged where timings are noisy). ``--grown N`` writes N turns before the timed part:
a turn lands on a page of its own in a larger table, so the cost per event grows with
the database. Asserts nothing; run it before and after a change to the writer, on the
same machine, and compare.

    python bench/store_write.py [--batches 300] [--repeat 3] [--grown 50000]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contact_center.stores import SegmentRow, WriteBatch  # noqa: E402
from contact_center.stores import sqlite as store  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "twitter-care" / "conversations.jsonl"
CONVERSATIONS = 1_000


def corpus_texts() -> list[str]:
    with CORPUS.open() as lines:
        return [t["text"] for line in lines for t in json.loads(line)["turns"]
                if t["speaker"] == "customer"]


def _turn(n: int) -> dict[str, Any]:
    return {"segment_id": f"s{n}", "role": "customer", "participant_id": "cust",
            "scores": {"neg": 0.213, "neu": 0.694, "pos": 0.093, "compound": -0.5106},
            "at": 1_733_530_000.0 + n}


STATE: dict[str, Any] = {  # the shape of Conversation.snapshot(), mid-conversation
    "participants": {"agent-7": {"role": "agent", "name": "Ann"},
                     "cust": {"role": "customer", "name": None}},
    "next_seq": 12, "rolling": {"values": [-0.4215, 0.0, 0.3612, -0.6249, -0.1027],
                                "ewma": -0.18234567},
    "rules": {"negative-trend": {"kind": "sentiment", "peak": -0.6249, "turns": 3,
                                 "breaches": [_turn(1), _turn(2), _turn(3)]},
              "churn": {"kind": "signal", "last_fired_at": 1_733_530_004.0,
                        "breaches": [_turn(4)]}},
    "last_customer_turn": _turn(9),
    "last_scores": {"cust": {"role": "customer", "at": 1_733_530_009.0,
                             "scores": {"neg": 0.2, "neu": 0.7, "pos": 0.1,
                                        "compound": -0.4215}}},
    "start_sentiment": -0.1, "counts": {"customer": 6, "agent": 5},
    "customer_waiting_since": None, "last_final_started_at": 1_733_530_009.0, "alerts": 1,
    "transfers": 0, "published": 11, "last_activity_at": 1_733_530_009.0, "recovering": 0,
    "outbound": False, "recording_paused": False, "unrecorded": [], "partials_kept": False,
}


def meta(n: int) -> dict[str, Any]:
    return {"id": f"c-{n:05d}", "channel": "chat", "queue": "billing", "agent_id": "agent-7",
            "customer": {"id": f"cust-{n}", "name": "Pat"}, "recording": "all",
            "attributes": {}, "status": "live", "started_at": 1_733_530_000.0,
            "ended_at": None, "updated_at": 1_733_530_000.0}


def batches(texts: list[str], parts: set[str], size: int, count: int,
            rng: random.Random) -> list[WriteBatch]:
    seqs = [0] * CONVERSATIONS
    made = []
    for _ in range(count):
        batch = WriteBatch()
        for _ in range(size):
            n = rng.randrange(CONVERSATIONS)
            seqs[n] += 1
            if "states" in parts:  # (changed, as each turn changes it: SQLite skips
                # rewriting a row whose bytes are the same)
                state = STATE | {"next_seq": seqs[n], "last_activity_at": time.time()}
                batch.conversations[f"c-{n:05d}"] = (meta(n), state)
            if "turns" in parts:
                batch.segments.append(SegmentRow(
                    f"c-{n:05d}", f"s{seqs[n]}", seqs[n], "customer", "cust",
                    rng.choice(texts), {"neg": 0.1, "neu": 0.8, "pos": 0.1, "compound": 0.0},
                    None, None, time.time()))
        made.append(batch)
    return made


def opened(folder: str, texts: list[str], grown: int) -> sqlite3.Connection:
    """A database as `serve` opens it, with the live conversations and ``grown`` turns."""
    db = sqlite3.connect(Path(folder) / "cc.db", isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA secure_delete=FAST")
    store._migrate(db)
    for first in range(0, CONVERSATIONS, 100):  # the live conversations, already there
        store._write(db, WriteBatch(conversations={
            f"c-{n:05d}": (meta(n), STATE) for n in range(first, first + 100)}))
    for batch in batches(texts, {"turns"}, 500, grown // 500, random.Random(-1)):
        for row in batch.segments:  # (ids of their own: the timed turns are new)
            row.segment_id = "g" + row.segment_id
        store._write(db, batch)
    return db


def per_event_us(texts: list[str], parts: set[str], size: int, count: int,
                 seed: int, grown: int) -> tuple[float, float]:
    """(CPU, wall) µs per event of writing ``count`` batches of ``size`` events."""
    with tempfile.TemporaryDirectory() as tmp:
        db = opened(tmp, texts, grown)
        work = batches(texts, parts, size, count, random.Random(seed))
        cpu, wall = time.thread_time(), time.perf_counter()
        for batch in work:
            store._write(db, batch)
        events = size * count
        result = ((time.thread_time() - cpu) / events * 1e6,
                  (time.perf_counter() - wall) / events * 1e6)
        db.close()
        return result


def log_pages(texts: list[str], parts: set[str], size: int, count: int, grown: int) -> float:
    """Pages added to the write-ahead log per commit (checkpoints held off)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = opened(tmp, texts, grown)
        work = batches(texts, parts, size, count, random.Random(0))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA wal_autocheckpoint=0")
        for batch in work:
            store._write(db, batch)
        pages = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        db.close()
        return pages / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--grown", type=int, default=0,
                        help="turns written before the timed part (default 0)")
    args = parser.parse_args()
    texts = corpus_texts()
    print(f"state {len(json.dumps(STATE, separators=(',', ':')))} bytes; "
          f"{len(texts)} customer turns, {statistics.mean(map(len, texts)):.0f} characters "
          f"on average; {args.grown:,} turns written before; SQLite {sqlite3.sqlite_version}")
    print("| events a batch | written | CPU µs an event (each run) | wall µs an event "
          "| log pages a commit |")
    print("|---|---|---|---|---|")
    for size in (20, 200):
        for parts in ({"states"}, {"turns"}, {"states", "turns"}):
            runs = [per_event_us(texts, parts, size, args.batches, seed, args.grown)
                    for seed in range(args.repeat)]
            pages = log_pages(texts, parts, size, args.batches, args.grown)
            print(f"| {size} | {' and '.join(sorted(parts))} | "
                  f"{' / '.join(f'{c:.1f}' for c, _ in runs)} | "
                  f"{' / '.join(f'{w:.1f}' for _, w in runs)} | {pages:.1f} |")


if __name__ == "__main__":
    main()
