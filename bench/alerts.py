"""Alert latency at a steady offered rate: ingest to the first push of a new alert on the
alert stream, and ingest to its webhook reaching a local receiver.

Starts `contact-center serve` on a throwaway SQLite database with the default rules,
registers a webhook (alert.raised) to a receiver in this process, listens on the alert
stream as a supervisor, and streams real text (as bench/load.py) at ``--rate`` segments
a second, paced, over several ingest sockets. The ack latency of the same run is the
ceiling the alert latencies are compared with (a shared machine is noisy: ratios hold
better than milliseconds). Reports what it measured; it asserts nothing.

    python bench/alerts.py --rate 2000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
from load import ROOT, cli, cpu_seconds, percentile, plans_for, text_pool
from websockets.asyncio.client import connect

Key = tuple[str, str]  # (conversation id, segment id)


def trigger_of(alert: dict[str, Any]) -> Key | None:
    """The segment that made the alert's newest hit fire."""
    segments = alert["hits"][-1]["evidence"]["segments"]
    return (alert["conversation_id"], segments[-1]["segment_id"]) if segments else None


class Receiver:
    """The webhook receiver: when each new alert's webhook arrived."""

    def __init__(self) -> None:
        self.arrived: dict[Key, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

            def do_POST(self) -> None:
                at = time.perf_counter()
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                key = trigger_of(body["data"]["alert"])
                if key is not None:
                    outer.arrived.setdefault(key, at)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # (the default, 5, refuses connections in a burst)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def paced(url: str, token: str, events: list[dict[str, Any]], rate: float,
                sent_at: dict[Key, float], acks: list[float], errors: list[str]) -> None:
    """Send ``events`` at ``rate`` a second (on schedule, whatever the answers)."""
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()
        pending: deque[tuple[str, float]] = deque()
        done = asyncio.Event()

        async def read() -> None:
            while pending or not done.is_set():
                reply = json.loads(await ws.recv())
                kind, t0 = pending.popleft()
                if reply["type"] != "ack":
                    errors.append(reply["code"])
                elif kind == "segment":
                    acks.append(time.perf_counter() - t0)

        reader = asyncio.create_task(read())
        start = time.perf_counter()
        for i, event in enumerate(events):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            if event["type"] == "segment":
                sent_at[(event["conversation_id"], event["segment_id"])] = now
            pending.append((event["type"], now))
            await ws.send(json.dumps(event))
        done.set()
        await reader


async def watch(url: str, token: str, raised: dict[Key, float],
                ready: asyncio.Event) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.recv()
        ready.set()
        async for raw in ws:
            at = time.perf_counter()
            event = json.loads(raw)
            if event["type"] == "alert.raised" and (key := trigger_of(event["alert"])):
                raised.setdefault(key, at)


def latencies(sent_at: dict[Key, float], arrived: dict[Key, float]) -> list[float]:
    return [at - sent_at[key] for key, at in arrived.items() if key in sent_at]


def ms(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": round(percentile(values, 50) * 1e3, 2),
            "p99": round(percentile(values, 99) * 1e3, 2)}


async def run(args: argparse.Namespace, base: str, tokens: dict[str, str],
              receiver: Receiver) -> dict[str, Any]:
    ws = base.replace("http", "ws", 1)
    made = httpx.post(f"{base}/v1/webhooks", json={"url": receiver.url,
                                                   "events": ["alert.raised"]},
                      headers={"Authorization": f"Bearer {tokens['hooks']}"})
    made.raise_for_status()
    turns = 20
    plans = plans_for(int(args.rate * args.seconds / turns) + 1, turns, text_pool())
    shares = [[e for plan in plans[i :: args.connections] for e in plan]
              for i in range(args.connections)]
    sent_at: dict[Key, float] = {}
    raised: dict[Key, float] = {}
    acks: list[float] = []
    errors: list[str] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch(f"{ws}/v1/alerts/stream", tokens["watch"], raised,
                                        ready))
    await ready.wait()
    per_socket = args.rate * (turns + 2) / turns / args.connections  # (starts and ends too)
    started = time.perf_counter()
    await asyncio.gather(*(paced(f"{ws}/v1/ingest", tokens["feed"], share, per_socket,
                                 sent_at, acks, errors) for share in shares))
    elapsed = time.perf_counter() - started
    await asyncio.sleep(2.0)  # the last alerts and webhooks
    watcher.cancel()
    log = httpx.get(f"{base}/v1/webhooks/{made.json()['id']}/deliveries?limit=1000",
                    headers={"Authorization": f"Bearer {tokens['hooks']}"}).json()
    retried = sum(d["attempts"] > 1 or d["status"] != "delivered" for d in log["deliveries"])
    alert = latencies(sent_at, raised)
    hook = latencies(sent_at, receiver.arrived)
    return {
        "offered_segments_per_s": args.rate,
        "achieved_segments_per_s": round(len(sent_at) / elapsed, 1),
        "segments": len(sent_at), "errors": len(errors),
        "ack_ms": ms(acks), "ingest_to_new_alert_push_ms": ms(alert),
        "ingest_to_webhook_ms": ms(hook),
        "webhooks_per_new_alert": round(len(receiver.arrived) / len(raised), 3)
        if raised else None,
        "webhooks_retried_or_undelivered_of_the_last_1000": retried,
        "ratios": {"new_alert_p99_to_ack_p99": round(percentile(alert, 99)
                                                     / percentile(acks, 99), 2),
                   "webhook_p99_to_new_alert_p99": round(percentile(hook, 99)
                                                         / percentile(alert, 99), 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000.0, help="segments a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        db = str(Path(tmp) / "bench.db")
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        env = os.environ | {"CC_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]'}
        server = subprocess.Popen(
            [sys.executable, "-m", "contact_center", "serve", "--port", str(port),
             "--db", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            tokens = {}
            for name, profile in (("feed", "Connector"), ("watch", "CallCenterManager"),
                                  ("hooks", "Admin")):
                cli(db, "users", "create", name, "--profile", profile)
                tokens[name] = cli(db, "tokens", "create", name)
            cpu = cpu_seconds(server.pid)
            report = asyncio.run(run(args, base, tokens, receiver))
            report["server_cpu_ms_per_segment"] = round(
                (cpu_seconds(server.pid) - cpu) * 1e3 / report["segments"], 3)
        finally:
            server.terminate()
            server.wait(30)
    report["machine"] = (f"{platform.machine()}, {platform.python_version()}, "
                         f"{len(os.sched_getaffinity(0))} cores")
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
