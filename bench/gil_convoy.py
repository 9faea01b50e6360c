"""What a busy event loop costs the SQLite writer thread (issue 28).

A writer thread commits 200-row transactions to SQLite (WAL, synchronous FULL) while the
main thread is idle, then while it spins in pure Python as a busy event loop does. Rows
go in either with ``executemany`` (one step per row: the sqlite3 module gives the
interpreter lock up for each step and must take it back after) as one statement
reading a JSON array (as `contact_center.stores.sqlite._bulk` did until 2026-12-07), or
as multi-row ``VALUES`` statements of power-of-two row counts (as it does now: 200 rows
are 3 statements). Each at Python's default
switch interval (5 ms) and at the 0.5 ms `contact-center serve` sets. Reports ms per
commit; asserts nothing.

    python bench/gil_convoy.py
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROWS = 200
COMMITS = 20


def commit_ms(db: sqlite3.Connection, how: str, first: int) -> float:
    rows = [[f"c{i % 1000}", first + i, "a turn of a customer's words " * 4]
            for i in range(ROWS * COMMITS)]
    started = time.perf_counter()
    for n in range(COMMITS):
        batch = rows[n * ROWS:(n + 1) * ROWS]
        db.execute("BEGIN IMMEDIATE")
        if how == "executemany":
            db.executemany("INSERT INTO t VALUES (?, ?, ?)", batch)
        elif how == "VALUES chunks":
            for chunk in chunked(batch):
                db.execute("INSERT INTO t VALUES " + ", ".join(["(?, ?, ?)"] * len(chunk)),
                           [value for row in chunk for value in row])
        else:
            db.execute("INSERT INTO t SELECT json_extract(value, '$[0]'), json_extract(value, "
                       "'$[1]'), json_extract(value, '$[2]') FROM json_each(?)",
                       (json.dumps(batch),))
        db.execute("COMMIT")
    return (time.perf_counter() - started) / COMMITS * 1000


def chunked(rows: list[list[object]]) -> list[list[list[object]]]:
    """As `contact_center.stores.sqlite._bulk` splits rows: power-of-two chunks."""
    chunks, start = [], 0
    while start < len(rows):
        size = 1 << ((len(rows) - start).bit_length() - 1)
        chunks.append(rows[start:start + size])
        start += size
    return chunks


def measure(db: sqlite3.Connection, how: str, busy: bool, first: int) -> float:
    result: list[float] = []
    writer = threading.Thread(target=lambda: result.append(commit_ms(db, how, first)))
    writer.start()
    while busy and writer.is_alive():  # the busy event loop: pure Python, never waiting
        sum(range(1000))
    writer.join()
    return result[0]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "t.db", check_same_thread=False,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (c TEXT, n INTEGER, text TEXT, PRIMARY KEY (c, n))")
        print(f"ms per commit of {ROWS} rows (mean of {COMMITS})")
        print("| switch interval | rows as | main thread idle | main thread busy |")
        print("|---|---|---|---|")
        first = 0
        for interval in (0.005, 0.0005):
            sys.setswitchinterval(interval)
            for how in ("executemany", "one JSON statement", "VALUES chunks"):
                figures = []
                for busy in (False, True):
                    figures.append(measure(db, how, busy, first))
                    first += ROWS * COMMITS
                print(f"| {interval * 1000:g} ms | {how} | {figures[0]:.1f} | {figures[1]:.1f} |")


if __name__ == "__main__":
    main()
