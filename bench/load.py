"""Load generator for the embedded server: segments/s and ingest-to-alert latency.

Starts `contact-center serve` on a throwaway database, streams real text (the VADER
human-rated snippets and the twitter-care conversations from ../shared/data) over
several ingest sockets with a window of unanswered events each, and listens on the
alert stream as a supervisor. Reports what it measured; it asserts nothing.

    python bench/load.py --conversations 200 --turns 20 --connections 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2 as httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def text_pool() -> list[str]:
    texts: list[str] = []
    for path in sorted((SHARED / "vader-groundtruth").glob("*.tsv")):
        with path.open(encoding="utf-8") as f:
            texts += [row[2] for row in csv.reader(f, delimiter="\t") if len(row) >= 3]
    corpus = SHARED / "twitter-care" / "conversations.jsonl"
    if not corpus.is_file():
        corpus = ROOT / "contact_center" / "samples" / "conversations.jsonl"
    with corpus.open(encoding="utf-8") as f:
        texts += [t["text"] for line in f for t in json.loads(line)["turns"]]
    return texts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def cli(db: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "contact_center", *args, "--db", str(db)],
                          check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()


async def stream(url: str, token: str, plans: list[list[dict[str, Any]]], window: int,
                 sent_at: dict[tuple[str, str], float], ack_latency: list[float],
                 errors: list[str]) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()
        inflight: deque[tuple[dict[str, Any], float]] = deque()

        async def read_one() -> None:
            reply = json.loads(await ws.recv())
            event, t0 = inflight.popleft()
            if reply["type"] != "ack":
                errors.append(reply["code"])
            elif event["type"] == "segment":
                ack_latency.append(time.perf_counter() - t0)

        for plan in plans:
            for event in plan:
                while len(inflight) >= window:
                    await read_one()
                now = time.perf_counter()
                if event["type"] == "segment":
                    sent_at[(event["conversation_id"], event["segment_id"])] = now
                inflight.append((event, now))
                await ws.send(json.dumps(event))
        while inflight:
            await read_one()


async def watch(url: str, token: str, sent_at: dict[tuple[str, str], float],
                alert_latency: list[float], ready: asyncio.Event) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()
        ready.set()
        async for raw in ws:
            received = time.perf_counter()
            event = json.loads(raw)
            if event["type"] not in ("alert.raised", "alert.updated", "alert.escalated"):
                continue
            alert = event["alert"]
            segments = alert["hits"][-1]["evidence"]["segments"]
            if not segments:
                continue
            trigger = segments[-1]["segment_id"]
            t0 = sent_at.get((alert["conversation_id"], trigger))
            if t0 is not None:
                alert_latency.append(received - t0)


def plans_for(n_conversations: int, turns: int, texts: list[str]) -> list[list[dict[str, Any]]]:
    plans, k = [], 0
    for c in range(n_conversations):
        cid = f"bench-{c}"
        plan: list[dict[str, Any]] = [{"type": "conversation.started", "conversation": {
            "id": cid, "queue": f"q{c % 4}", "agent_id": f"agent-{c % 25}", "recording": "all"}}]
        for t in range(turns):
            plan.append({"type": "segment", "conversation_id": cid, "segment_id": str(t),
                         "role": "customer" if t % 2 == 0 else "agent",
                         "text": texts[k % len(texts)]})
            k += 1
        plan.append({"type": "conversation.ended", "conversation_id": cid})
        plans.append(plan)
    return plans


async def run(args: argparse.Namespace, base: str, token: str, watcher: str) -> dict[str, Any]:
    texts = text_pool()
    plans = plans_for(args.conversations, args.turns, texts)
    sent_at: dict[tuple[str, str], float] = {}
    ack_latency: list[float] = []
    alert_latency: list[float] = []
    errors: list[str] = []
    ws_base = base.replace("http", "ws", 1)
    ready = asyncio.Event()
    watcher_task = asyncio.create_task(
        watch(f"{ws_base}/v1/alerts/stream", watcher, sent_at, alert_latency, ready))
    await ready.wait()
    shares = [plans[i :: args.connections] for i in range(args.connections)]
    started = time.perf_counter()
    await asyncio.gather(*(stream(f"{ws_base}/v1/ingest", token, share, args.window, sent_at,
                                  ack_latency, errors) for share in shares))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)
    watcher_task.cancel()
    segments = args.conversations * args.turns
    return {
        "segments": segments, "conversations": args.conversations,
        "connections": args.connections, "window": args.window,
        "elapsed_s": round(elapsed, 3), "segments_per_s": round(segments / elapsed, 1),
        "events_per_s": round((segments + 2 * args.conversations) / elapsed, 1),
        "ack_latency_ms": {"p50": round(percentile(ack_latency, 50) * 1e3, 2),
                           "p99": round(percentile(ack_latency, 99) * 1e3, 2)},
        "alerts": len(alert_latency),
        "ingest_to_alert_ms": {"p50": round(percentile(alert_latency, 50) * 1e3, 2),
                               "p99": round(percentile(alert_latency, 99) * 1e3, 2),
                               "mean": round(statistics.fmean(alert_latency) * 1e3, 2)
                               if alert_latency else None},
        "errors": len(errors), "text_pool": len(texts),
        "machine": f"{platform.machine()}, {platform.python_version()}, "
                   f"{len(os.sched_getaffinity(0))} cores",
    }


@contextlib.contextmanager
def throwaway_database(server: str | None) -> Iterator[str | None]:
    """A new database on ``server`` for this run, dropped after (None: no server)."""
    if server is None:
        yield None
        return
    name = f"cc_bench_{os.getpid()}_{os.urandom(3).hex()}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def count(db: str, table: str) -> int:
    if "://" not in db:
        with sqlite3.connect(db) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    async def fetch() -> int:
        connection = await asyncpg.connect(db)
        try:
            return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server as docs/deployment.md asks of a production one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return redis, f"redis://127.0.0.1:{port}/0"


def measure(args: argparse.Namespace, db: str, redis: str | None = None,
            workers: int = 0) -> dict[str, Any]:
    """Start the service (embedded, or one API node and ``workers`` workers on
    ``redis``), load it, stop it; the report, with every process's CPU time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scale_out = ["--redis", redis] if redis else []
    processes = {"server" if not redis else "api node": subprocess.Popen(
        [sys.executable, "-m", "contact_center", "serve", "--port", str(port),
         "--db", str(db), *scale_out], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd=ROOT)}
    for i in range(workers):
        processes[f"worker {i + 1}"] = subprocess.Popen(
            [sys.executable, "-m", "contact_center", "worker", "--db", str(db), *scale_out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                health = httpx.get(f"{base}/healthz").json()
                if health.get("partitions_unowned", 0) == 0 and \
                        health.get("workers", workers) == workers:
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.1)
        suffix = os.urandom(3).hex()
        cli(db, "users", "create", f"bench-{suffix}", "--profile", "Connector")
        cli(db, "users", "create", f"watch-{suffix}", "--profile", "CallCenterManager")
        token = cli(db, "tokens", "create", f"bench-{suffix}")
        watcher = cli(db, "tokens", "create", f"watch-{suffix}")
        cpu = {name: cpu_seconds(p.pid) for name, p in processes.items()}
        report = asyncio.run(run(args, base, token, watcher))
        report["cpu_s"] = {name: round(cpu_seconds(p.pid) - cpu[name], 2)
                           for name, p in processes.items()}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(15)
    # Every ack must be in the database.
    report["stored_segments"] = count(db, "segments")
    report["stored_alerts"] = count(db, "alerts")
    report["store"] = "postgresql" if "://" in db else "sqlite"
    report["deployment"] = f"scale-out, {workers} worker(s)" if redis else "embedded"
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=20, help="segments per conversation")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=64, help="unanswered events per socket")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="store in a throwaway database on this PostgreSQL server "
                             "(e.g. postgresql://postgres@127.0.0.1:5432/postgres) "
                             "instead of SQLite")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, throwaway_database(args.postgres) as postgres:
        report = measure(args, postgres or str(Path(tmp) / "bench.db"))
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
