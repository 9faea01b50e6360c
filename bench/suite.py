"""One command, one table (issue 16): the embedded server under saturated and open-loop
load, beside ceilings measured in the same run, each figure also as a ratio to them.

Ceilings (measured first, in the same run, on the same machine):
  - the reference scorer (vaderSentiment ``polarity_scores``) and the fast scorer
    (``analytics.fast_vader.FastAnalyzer(cache_size=0)``) alone: texts/s on the text
    pool, one process pinned to one core;
  - a bare WebSocket echo endpoint on the same server stack (bench/echo_server.py:
    Starlette under uvicorn with the options ``contact-center serve`` uses), driven by
    the same client: saturated (messages/s) and at the open-loop offered rate (ack
    latency).

Scenarios, each on a fresh ``contact-center serve`` and a fresh SQLite database
(``--only`` picks some):
  saturated   8 sockets x 64 events in flight, 5,000 conversations x 20 turns
              (conversation.started, 20 segments, conversation.ended), alert stream on
  monitored   2,000 segments/s offered open-loop over 1,000 live conversations, a
              monitor socket on every one, and the alert stream
  live100k    100,000 live conversations (started, one segment each), server RSS;
              then 2,000 segments/s offered open-loop across them
  sockets10k  10,000 ingest sockets held open (one conversation each, the client split
              over 2 processes); 2,000 segments/s offered open-loop across them
  restart     with 100,000 live conversations in the database (live100k's, else built
              the same way): SIGTERM, start again, seconds from process start to
              /readyz 200, and RSS
  scaleout    the scale-out deployment (one API node, --workers pipeline workers, a
              throwaway redis-server, a throwaway database on --postgres): saturated
              (1,000 conversations x 20 turns), then the open-loop rate over 1,000 live
              conversations
--quick: 1,000 saturated conversations, 300 monitored, 10,000 live, 1,000 sockets,
500 scale-out conversations, shorter open-loop runs.

Open-loop: every segment has a scheduled send time at a fixed rate (client processes
interleave their schedules) and is sent then, whatever the replies (but never more than
256 unanswered on a socket, the server's ingest window: past it a segment waits, its
latency still counted from its schedule); every latency (ack, ingest-to-alert,
segment-to-monitor) runs from the scheduled send time, so a stalled server is not hidden
by a stalled client (coordinated omission). The first seconds (--warmup) are sent but
not counted.

The client (bench/wire.py) prepares every frame before the timed part; it shares the
machine's cores with the server, so each scenario reports the CPU seconds of the server,
of the client and of the rest of the machine over its timed part. Every server gets
CC_MAX_SOCKETS_PER_TOKEN=20000: the suite opens all its sockets with one token (a user
with the Connector and CallCenterManager profiles); an admin token reads /metrics before
and after each timed part (batch sizes, commit times, the server's own ack latency).
It reports; it asserts nothing.

Diagnostics (they cost the server some CPU, so not for the reported figures):
--profile samples the server with py-spy during each timed part and the restart (top
functions and components in the JSON); --gc-probe runs each server under
bench/gc_probe.py and reports the garbage collector's pauses in each timed part.

    python bench/suite.py                 # about 4 minutes on 2 cores
    python bench/suite.py --quick         # scaled down, about 1.5 minutes
    python bench/suite.py --only saturated monitored --out /tmp/suite.json
    python bench/suite.py --gc-probe --profile --out bench/results/suite-diagnostics.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx2 as httpx
from load import (  # type: ignore[import-not-found]
    ROOT,
    cli,
    count,
    cpu_seconds,
    start_redis,
    text_pool,
    throwaway_database,
)
from scaleout import POSTGRES  # type: ignore[import-not-found]
from wire import HandshakeFailed, WireSocket, client_frame, open_socket  # type: ignore[import-not-found]

SCENARIOS = ("saturated", "monitored", "live100k", "sockets10k", "restart", "scaleout")
INGEST_WINDOW = 256  # the server's CC_INGEST_WINDOW: never more unanswered on one socket
ACK = (b'{"type":"ack"', b'{"type": "ack"')
REPLIES = b'{"type":"replies"'  # a frame of several replies (`?replies=batched`)
OPEN_CONCURRENCY = 200  # handshakes in progress at once, per client process
TICK = 0.001  # the open-loop sender's shortest sleep, seconds


# -- the client (runs in its own processes) ----------------------------------------------

def dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def started(cid: str, j: int) -> bytes:
    return client_frame(dumps({"type": "conversation.started", "conversation": {
        "id": cid, "queue": f"q{j % 4}", "agent_id": f"agent-{j % 25}", "recording": "all"}}))


def segment(cid: str, n: int, text: str) -> bytes:
    return client_frame(dumps({"type": "segment", "conversation_id": cid, "segment_id": f"s{n}",
                               "role": "customer" if n % 2 == 0 else "agent", "text": text}))


def ended(cid: str) -> bytes:
    return client_frame(dumps({"type": "conversation.ended", "conversation_id": cid}))


def replies_in(message: bytes) -> list[bytes]:
    """The replies a frame holds: itself, or each of a batched frame's (acks counted, not
    decoded, unless an error is among them)."""
    if not message.startswith(REPLIES):
        return [message]
    if b'{"type":"error"' not in message:
        return [ACK[0]] * message.count(ACK[0])
    return [dumps(reply) for reply in json.loads(message)["replies"]]


class Ingest:
    """One ingest socket: closed loop (a window of frames in flight) or open loop
    (frames sent when the ticker says, at most INGEST_WINDOW unanswered)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sock: WireSocket | None = None
        self.greeted = False
        self.inflight: deque[tuple[float, bool]] = deque()  # (time, latency counted?)
        self.backlog: deque[tuple[bytes, float, bool]] = deque()
        self.frames: list[tuple[bytes, tuple[str, str] | None]] = []  # closed loop
        self.next = 0
        self.window = 0

    def on_messages(self, messages: list[bytes]) -> None:
        now = time.perf_counter()
        if not self.greeted:
            self.greeted = True
            messages = messages[1:]
        if any(message.startswith(REPLIES) for message in messages):
            messages = [reply for message in messages for reply in replies_in(message)]
        client, inflight = self.client, self.inflight
        latency, due = client.ack_latency, client.ack_at
        for message in messages:
            if not inflight:
                client.unexpected += 1
                continue
            sent, counted = inflight.popleft()
            if message.startswith(ACK):
                if counted:
                    latency.append(now - sent)
                    due.append(sent)
            else:
                client.error(message)
        if self.window:
            self.fill(now)
        elif self.backlog:
            out = []
            while self.backlog and len(inflight) < INGEST_WINDOW:
                frame, at, counted = self.backlog.popleft()
                out.append(frame)
                inflight.append((at, counted))
            assert self.sock is not None
            self.sock.send(b"".join(out))
        client.answered(len(messages), now)

    def fill(self, now: float) -> None:
        k = min(self.window - len(self.inflight), len(self.frames) - self.next)
        if k <= 0:
            return
        batch = self.frames[self.next:self.next + k]
        self.next += k
        sent_at = self.client.sent_at
        for _, key in batch:
            self.inflight.append((now, key is not None))
            if key is not None:
                sent_at[key] = now
        assert self.sock is not None
        self.sock.send(b"".join(frame for frame, _ in batch))

    def send_at(self, frame: bytes, at: float, counted: bool) -> None:
        if self.sock is None or not self.sock.open:
            self.client.errors["socket_closed"] = self.client.errors.get("socket_closed", 0) + 1
            self.client.answered(1, time.perf_counter())
        elif len(self.inflight) < INGEST_WINDOW:
            self.sock.send(frame)
            self.inflight.append((at, counted))
        else:
            self.backlog.append((frame, at, counted))
            self.client.held_back += 1

    def lost(self, code: int | None) -> None:
        """The server closed the socket: whatever it still owed is an error."""
        owed = len(self.inflight) + len(self.backlog) + max(0, len(self.frames) - self.next)
        self.inflight.clear()
        self.backlog.clear()
        self.next = len(self.frames)
        if owed:
            self.client.errors[f"closed_{code}"] = self.client.errors.get(f"closed_{code}", 0) \
                + owed
            self.client.answered(owed, time.perf_counter())


class Monitor:
    """A supervisor's monitor socket on one conversation."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sock: WireSocket | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_messages(self, messages: list[bytes]) -> None:
        now = time.perf_counter()
        client = self.client
        for message in messages:
            client.monitor_messages += 1
            event = json.loads(message)
            kind = event.get("type")
            if kind == "segment" and event.get("final", True):
                sent = client.sent_at.get((event.get("conversation_id"), event.get("segment_id")))
                if sent is not None and sent >= client.count_from:
                    client.monitor_latency.append(now - sent)
            elif kind == "live" and not self.live.done():
                self.live.set_result(None)


class Alerts:
    """A supervisor on the alert stream; latency from the trigger segment's send time."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sock: WireSocket | None = None
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_messages(self, messages: list[bytes]) -> None:
        now = time.perf_counter()
        client = self.client
        for message in messages:
            event = json.loads(message)
            if event.get("type") == "subscribed" and not self.subscribed.done():
                self.subscribed.set_result(None)
            # A hit's push: a new alert, or one joining (or escalating) an open one.
            if event.get("type") not in ("alert.raised", "alert.updated", "alert.escalated"):
                continue
            alert = event["alert"]
            client.alerts += event["type"] == "alert.raised"
            hit = alert["hits"][-1]
            if hit["kind"] == "response_time":  # raised by the clock, not a segment
                client.clock_alerts += 1
                continue
            segments = (hit.get("evidence") or {}).get("segments") or []
            if segments:
                sent = client.sent_at.get((alert["conversation_id"],
                                           segments[-1]["segment_id"]))
                if sent is not None and sent >= client.count_from:
                    client.alert_latency.append(now - sent)
                    client.alert_sent.append(sent)


class Client:
    """One client process's share of a scenario (its spec: see ``spec_for`` and
    ``split``): open the ingest sockets, set up (start conversations), open monitors and
    the alert stream, prepare every frame, say ready, and at the parent's t0 run the
    timed part, closed or open loop; the report goes back through the pipe."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.ack_latency: list[float] = []
        self.ack_at: list[float] = []  # when each counted segment was (to be) sent
        self.monitor_latency: list[float] = []
        self.alert_latency: list[float] = []
        self.alert_sent: list[float] = []
        self.send_lag: list[float] = []
        self.sent_at: dict[tuple[str, str], float] = {}
        self.count_from = 0.0
        self.errors: dict[str, int] = {}
        self.unexpected = self.alerts = self.clock_alerts = self.monitor_messages = 0
        self.held_back = 0
        self.pending = 0
        self.last_reply = 0.0
        self.all_answered: asyncio.Future[None] | None = None

    def error(self, message: bytes) -> None:
        try:
            code = str(json.loads(message).get("code"))
        except ValueError:
            code = "unreadable_reply"
        self.errors[code] = self.errors.get(code, 0) + 1

    def answered(self, n: int, now: float) -> None:
        self.pending -= n
        self.last_reply = now
        if self.pending <= 0 and self.all_answered is not None \
                and not self.all_answered.done():
            self.all_answered.set_result(None)

    async def open_all(self, consumers: list[Any], paths: list[str], token: str,
                       required: bool = True) -> tuple[int, float]:
        """Open one socket per consumer; (failures, seconds)."""
        spec = self.spec
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        failures: list[str] = []

        async def one(consumer: Any, path: str) -> None:
            async with gate:
                for attempt in range(4):
                    try:
                        consumer.sock = await open_socket(spec["host"], spec["port"], path,
                                                          token, consumer.on_messages)
                        return
                    except (OSError, HandshakeFailed, TimeoutError) as exc:
                        if attempt == 3:
                            failures.append(f"{type(exc).__name__}: {exc}")
                        await asyncio.sleep(0.2 * (attempt + 1))

        started_at = time.perf_counter()
        await asyncio.gather(*(one(c, p) for c, p in zip(consumers, paths, strict=True)))
        if failures and required:
            raise RuntimeError(f"{len(failures)} of {len(consumers)} sockets failed to open: "
                               f"{failures[0]}")
        return len(failures), time.perf_counter() - started_at

    async def closed_loop(self, ingests: list[Ingest], window: int, at: float) -> float:
        """Send every ingest's frames, ``window`` in flight each; seconds from ``at`` to
        the last reply."""
        loop = asyncio.get_running_loop()
        self.all_answered = loop.create_future()
        self.pending = sum(len(i.frames) - i.next for i in ingests)
        if self.pending == 0:
            return 0.0
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        now = time.perf_counter()
        for ingest in ingests:
            ingest.window = window
            ingest.fill(now)
        await asyncio.wait_for(self.all_answered, self.spec.get("timeout", 600))
        for ingest in ingests:
            ingest.window = 0
        return self.last_reply - at

    async def ticker(self, schedule: list[tuple[float, Ingest, bytes, tuple[str, str]]],
                     t0: float) -> None:
        sent_at, lag = self.sent_at, self.send_lag
        clock, sleep = time.perf_counter, asyncio.sleep
        i, n = 0, len(schedule)
        while i < n:
            now = clock()
            while i < n:
                offset, ingest, frame, key = schedule[i]
                at = t0 + offset
                if at > now:
                    break
                sent_at[key] = at
                ingest.send_at(frame, at, at >= self.count_from)
                lag.append(now - at)
                i += 1
            if i < n:
                # At least a millisecond: the event loop's timers have that resolution, and
                # shorter sleeps would spin (the lateness is counted in every latency).
                await sleep(max(TICK, t0 + schedule[i][0] - clock()))

    async def run(self, pipe: Connection) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        part, parts = spec["part"], spec["parts"]
        conversations = [f"{spec['prefix']}{g}" for g in range(part, spec["conversations"], parts)]
        texts = text_pool()
        k = part * 7919  # each process its own stretch of the text pool
        info: dict[str, Any] = {"conversations": len(conversations)}

        ingests = [Ingest(self) for _ in range(spec["connections"])]
        _, info["ingest_connect_s"] = await self.open_all(
            ingests, [f"/v1/ingest?replies={spec['replies']}"] * len(ingests), spec["token"])
        for ingest in ingests:
            assert ingest.sock is not None
            ingest.sock.closed.add_done_callback(
                lambda f, i=ingest: i.lost(None if f.cancelled() else f.result()))
        home = {cid: ingests[j % len(ingests)] for j, cid in enumerate(conversations)}
        done_segments = dict.fromkeys(conversations, 0)

        setup = spec.get("setup")
        if setup is not None:
            for j, cid in enumerate(conversations):
                home[cid].frames.append((started(cid, part + j * parts), None))
                for n in range(setup["segments"]):
                    home[cid].frames.append((segment(cid, n, texts[k % len(texts)]), None))
                    k += 1
                done_segments[cid] = setup["segments"]
            events = sum(len(i.frames) for i in ingests)
            seconds = await self.closed_loop(ingests, setup["window"], time.perf_counter())
            info["setup"] = {"events": events, "seconds": round(seconds, 3),
                             "events_per_s": round(events / seconds, 1) if seconds else None,
                             "errors": self.errors}
            self.errors = {}
            for ingest in ingests:
                ingest.frames, ingest.next = [], 0

        monitors: list[Monitor] = []
        if spec.get("monitors"):
            watched = conversations[:spec["monitors"]]
            monitors = [Monitor(self) for _ in watched]
            info["monitor_failures"], info["monitor_connect_s"] = await self.open_all(
                monitors, [f"/v1/conversations/{c}/monitor" for c in watched],
                spec["manager_token"], required=False)
            live = [m.live for m in monitors if m.sock is not None]
            await asyncio.wait_for(asyncio.gather(*live), 120)
            info["monitors"] = len(live)
        alerts = None
        if spec.get("alerts"):
            alerts = Alerts(self)
            await self.open_all([alerts], ["/v1/alerts/stream"], spec["manager_token"])
            await asyncio.wait_for(alerts.subscribed, 30)

        load = spec["load"]
        schedule: list[tuple[float, Ingest, bytes, tuple[str, str]]] = []
        if load["mode"] == "closed":
            for j, cid in enumerate(conversations):
                frames = home[cid].frames
                frames.append((started(cid, part + j * parts), None))
                for n in range(load["turns"]):
                    frames.append((segment(cid, n, texts[k % len(texts)]), (cid, f"s{n}")))
                    k += 1
                frames.append((ended(cid), None))
        else:
            rate = load["rate"] / parts
            for i in range(int(rate * load["duration"])):
                cid = conversations[i % len(conversations)]
                n = done_segments[cid]
                done_segments[cid] = n + 1
                schedule.append(((i + part / parts) / rate, home[cid],
                                 segment(cid, n, texts[k % len(texts)]), (cid, f"s{n}")))
                k += 1

        pipe.send({"ready": info})
        t0 = await loop.run_in_executor(None, pipe.recv)
        cpu = time.process_time()
        report: dict[str, Any] = {"setup": info}
        if load["mode"] == "closed":
            self.count_from = t0
            report["events"] = sum(len(i.frames) for i in ingests)
            report["segments"] = len(conversations) * load["turns"]
            report["elapsed_s"] = await self.closed_loop(ingests, load["window"], t0)
        else:
            self.count_from = t0 + load["warmup"]
            self.all_answered = loop.create_future()
            self.pending = len(schedule)
            report["events"] = report["segments"] = len(schedule)
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            if schedule:
                await self.ticker(schedule, t0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_answered, spec.get("drain_timeout", 60))
            report["elapsed_s"] = max(0.0, self.last_reply - t0)
            report["unanswered"] = max(0, self.pending)
        await asyncio.sleep(spec.get("tail", 0.5))  # monitors and alerts catch up
        report["client_cpu_s"] = time.process_time() - cpu
        report["t0"] = t0
        report.update(
            ack_latency=self.ack_latency, ack_at=self.ack_at, monitor_latency=self.monitor_latency,
            alert_latency=self.alert_latency, alert_sent=self.alert_sent,
            send_lag=self.send_lag, errors=self.errors,
            unexpected=self.unexpected, alerts=self.alerts, clock_alerts=self.clock_alerts,
            monitor_messages=self.monitor_messages, held_back=self.held_back)
        for consumer in [*ingests, *monitors, *([alerts] if alerts else [])]:
            if consumer.sock is not None:
                consumer.sock.close()
        await asyncio.sleep(0.1)
        return report


def client_process(spec: dict[str, Any], pipe: Connection) -> None:
    try:
        import uvloop

        result = uvloop.run(Client(spec).run(pipe))
    except BaseException as exc:  # reported to the parent, which reports it
        result = {"error": f"{type(exc).__name__}: {exc}"}
    pipe.send(result)


# -- the parent: servers, ceilings, scenarios ----------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Server:
    """``contact-center serve`` (or the echo server) as a subprocess."""

    def __init__(self, db: str | None, log: Path, echo: bool = False) -> None:
        self.db, self.log, self.echo = db, log, echo
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.ready_body: dict[str, Any] = {}
        self.first_answer_s: float | None = None
        self.admin_token = ""
        self.gc_log: Path | None = None  # set: run under bench/gc_probe.py, log here
        self.gc_pauses: dict[str, Any] = {}
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> dict[str, int]:
        """Every process of the deployment, by role (their CPU time is reported)."""
        return {"server": self.pid}

    def start(self, spawned: Callable[[int], None] | None = None) -> float:
        """Start it; seconds from the process's start to /readyz 200 (echo: to the port
        accepting connections). ``spawned(pid)`` is called as soon as it runs."""
        self.port = free_port()
        if self.echo:
            cmd = [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(self.port)]
        else:
            probe = [] if self.gc_log is None else [
                str(ROOT / "bench" / "gc_probe.py"), str(self.gc_log)]
            cmd = [sys.executable, *probe, "-m", "contact_center", "serve",
                   "--port", str(self.port), "--db", str(self.db)]
        env = os.environ | {"CC_MAX_SOCKETS_PER_TOKEN": "20000"}
        with self.log.open("ab") as log:
            began = self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT, env=env)
        if spawned is not None:
            spawned(self.proc.pid)
        self.first_answer_s = None
        with httpx.Client() as http:
            while time.perf_counter() - began < 300:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; "
                                       f"see {self.log}:\n" + self.log_tail())
                if self.echo:
                    with contextlib.suppress(OSError), \
                            socket.create_connection(("127.0.0.1", self.port), 0.5):
                        return time.perf_counter() - began
                else:
                    try:
                        answer = http.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
                        if self.first_answer_s is None:
                            self.first_answer_s = time.perf_counter() - began
                        if answer.status_code == 200:
                            ready = time.perf_counter() - began
                            self.ready_body = answer.json()
                            return ready
                    except httpx.TransportError:
                        pass
                time.sleep(0.01)
        raise RuntimeError("server not ready after 300 s")

    def metrics(self) -> dict[str, float]:
        """The /metrics counters this suite reads, summed over their labels."""
        if self.echo or not self.admin_token:
            return {}
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10,
                             headers={"Authorization": f"Bearer {self.admin_token}"}).text
        except httpx.TransportError:
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in METRICS:
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            elif name in HISTOGRAMS and 'le="' in line:
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                key = f"{name}|{bound}"
                found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> float:
        """SIGTERM; seconds until it exited."""
        assert self.proc is not None
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        stopped = time.perf_counter() - began
        if self.gc_log is not None and self.gc_log.is_file():
            self.gc_pauses = json.loads(self.gc_log.read_text())
            self.gc_log.unlink()
        return stopped

    def gc(self, window: list[float]) -> dict[str, Any] | None:
        """The collector's pauses within ``window`` (perf_counter seconds), by generation,
        and the longest ones (seconds from the window's start), if it ran under the probe."""
        if self.gc_log is None or not self.gc_pauses:
            return None
        totals = self.gc_pauses["totals"]
        first = max((t for t in totals if t[0] <= window[0]), default=[window[0], [0] * 3,
                                                                           [0.0] * 3, [0] * 3],
                    key=lambda t: t[0])
        last = min((t for t in totals if t[0] >= window[1]), default=totals[-1],
                   key=lambda t: t[0])
        inside = [p for p in self.gc_pauses["pauses"] if window[0] <= p[1] <= window[1]]
        out: dict[str, Any] = {"from_totals_s": [round(first[0] - window[0], 2),
                                                 round(last[0] - window[1], 2)]}
        for generation in (0, 1, 2):
            out[f"gen{generation}"] = {
                "count": last[1][generation] - first[1][generation],
                "total_ms": round((last[2][generation] - first[2][generation]) * 1e3, 1),
                "max_logged_ms": round(max((p[2] for p in inside if p[0] == generation),
                                           default=0.0) * 1e3, 1),
                "collected": (last[3][generation] - first[3][generation]
                              if len(last) > 3 and len(first) > 3 else None)}
        longest = sorted(inside, key=lambda p: -p[2])[:5]
        by_second: dict[int, float] = {}
        for p in inside:
            second = int(p[1] - window[0])
            by_second[second] = by_second.get(second, 0.0) + p[2] * 1e3
        out["logged_ms_by_second"] = {k: round(v, 1) for k, v in sorted(by_second.items())}
        out["longest"] = [{"generation": int(p[0]), "at_s": round(p[1] - window[0], 2),
                           "ms": round(p[2] * 1e3, 1), "collected": int(p[3])}
                          for p in longest]
        return out


class ScaleOut(Server):
    """The scale-out deployment on this machine: one API node (``serve --redis``),
    ``workers`` pipeline workers, a throwaway redis-server (as bench/load.py starts it)
    and a throwaway database on the PostgreSQL server ``db`` names."""

    def __init__(self, db: str, log: Path, workers: int, redis: str, redis_pid: int) -> None:
        super().__init__(db, log)
        self.workers, self.redis, self.redis_pid = workers, redis, redis_pid
        self.worker_procs: list[subprocess.Popen[bytes]] = []

    def pids(self) -> dict[str, int]:
        return {"api node": self.pid} | {
            f"worker {i + 1}": w.pid for i, w in enumerate(self.worker_procs)} | {
            "redis": self.redis_pid}

    def start(self, spawned: Callable[[int], None] | None = None) -> float:
        self.port = free_port()
        began = time.perf_counter()
        common = ["--db", str(self.db), "--redis", self.redis]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "contact_center", "serve", "--port", str(self.port),
                 *common], stdout=log, stderr=log, cwd=ROOT,
                env=os.environ | {"CC_MAX_SOCKETS_PER_TOKEN": "20000"})
            self.worker_procs = [subprocess.Popen(
                [sys.executable, "-m", "contact_center", "worker", *common],
                stdout=log, stderr=log, cwd=ROOT) for _ in range(self.workers)]
        with httpx.Client() as http:
            while time.perf_counter() - began < 120:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"API node exited; see {self.log}:\n" + self.log_tail())
                with contextlib.suppress(httpx.TransportError, ValueError):
                    answer = http.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
                    body = answer.json()
                    if answer.status_code == 200 and body.get("partitions_unowned") == 0 \
                            and body.get("workers") == self.workers:
                        self.ready_body = body
                        return time.perf_counter() - began
                time.sleep(0.05)
        raise RuntimeError("scale-out deployment not ready after 120 s")

    def stop(self) -> float:
        began = time.perf_counter()
        for process in [*self.worker_procs, self.proc]:
            if process is not None:
                process.terminate()
        for process in [*self.worker_procs, self.proc]:
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        return time.perf_counter() - began


def credentials(db: str) -> str:
    """A user with the Connector and CallCenterManager profiles, and its token."""
    name = f"bench-{os.urandom(3).hex()}"
    cli(db, "users", "create", name, "--profile", "Connector", "--profile", "CallCenterManager")
    return str(cli(db, "tokens", "create", name))


def summary(values: list[float], scale: float = 1e3) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max (milliseconds by default) and the count."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q / 100 * n))] * scale, 2)

    return {"n": n, "p50": at(50), "p90": at(90), "p99": at(99), "p999": at(99.9),
            "max": round(ordered[-1] * scale, 2)}


def drive(specs: list[dict[str, Any]], server: Server | None = None,
          timeout: float = 900, profile: Path | None = None) -> dict[str, Any]:
    """Run the client processes: they connect and set up, then start the timed part
    together; the merged report, with the server's CPU seconds and peak RSS over it."""
    context = mp.get_context("fork")
    pipes, processes = [], []
    peak = [0.0]
    cpus: dict[str, float] = {}
    for spec in specs:
        mine, theirs = context.Pipe()
        process = context.Process(target=client_process, args=(spec, theirs), daemon=True)
        process.start()
        pipes.append(mine)
        processes.append(process)

    def receive(pipe: Connection) -> dict[str, Any]:
        began = time.perf_counter()
        while not pipe.poll(0.25):
            if server is not None:
                peak[0] = max(peak[0], rss_mb(server.pid))
            if time.perf_counter() - began > timeout:
                raise RuntimeError("client did not answer in time")
        message: dict[str, Any] = pipe.recv()
        if "error" in message:
            raise RuntimeError(f"client failed: {message['error']}")
        return message

    try:
        readies = [receive(pipe)["ready"] for pipe in pipes]
        report: dict[str, Any] = {}
        if server is not None:
            report["server_rss_mb_before"] = rss_mb(server.pid)
            cpus = {name: cpu_seconds(pid) for name, pid in server.pids().items()}
        peak[0] = report.get("server_rss_mb_before", 0.0)
        metrics_before = server.metrics() if server is not None else {}
        spy = start_profile(server.pid, profile) if server is not None and profile else None
        t0 = time.perf_counter() + 0.3
        busy = machine_busy_s()
        for pipe in pipes:
            pipe.send(t0)
        results = [receive(pipe) for pipe in pipes]
        report["window"] = [t0, time.perf_counter()]
        report["machine_busy_cpu_s"] = round(machine_busy_s() - busy, 2)
        report["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        if spy is not None:
            report["profile"] = stop_profile(spy, profile)  # type: ignore[arg-type]
        if server is not None:
            used = {name: round(cpu_seconds(pid) - cpus[name], 2)
                    for name, pid in server.pids().items()}
            report["server_cpu_s"] = round(sum(used.values()), 2)
            if len(used) > 1:
                report["server_cpu_s_by_process"] = used
            report["server_rss_mb_after"] = rss_mb(server.pid)
            report["server_rss_mb_peak"] = max(peak[0], report["server_rss_mb_after"])
            report["server_metrics"] = pipeline_figures(metrics_before, server.metrics())
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    report["client_processes"] = len(specs)
    report["client_cpu_s"] = round(sum(r["client_cpu_s"] for r in results), 2)
    # What the rest of the machine (other jobs, the kernel's share not charged to us, and
    # PostgreSQL in the scale-out runs) used meanwhile: a confound to know about.
    report["other_cpu_s"] = round(report["machine_busy_cpu_s"] - report["client_cpu_s"]
                                  - report.get("server_cpu_s", 0.0), 2)
    report["setup"] = readies if len(readies) > 1 else readies[0]
    report["events"] = sum(r["events"] for r in results)
    report["segments"] = sum(r["segments"] for r in results)
    report["elapsed_s"] = round(max(r["elapsed_s"] for r in results), 3)
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    report["errors"] = errors
    for key in ("unexpected", "alerts", "clock_alerts", "monitor_messages", "held_back",
                "unanswered"):
        report[key] = sum(r.get(key, 0) for r in results)
    for key, name in (("ack_latency", "ack_ms"), ("monitor_latency", "segment_to_monitor_ms"),
                      ("alert_latency", "ingest_to_alert_ms"), ("send_lag", "client_send_lag_ms")):
        values = [v for r in results for v in r[key]]
        if values or key == "ack_latency":
            report[name] = summary(values)
    # Ack latency by second of the timed part (by when each segment was due): growth shows.
    by_second: dict[int, list[float]] = {}
    for r in results:
        for sent, latency in zip(r["ack_at"], r["ack_latency"], strict=True):
            by_second.setdefault(int(sent - r["t0"]), []).append(latency)
    # An alert against its own segment's ack (both timed from the segment's schedule,
    # which tells segments apart in an open loop; a closed loop sends many at once).
    acked = {sent: latency for r in results
             for sent, latency in zip(r["ack_at"], r["ack_latency"], strict=True)}
    if len(acked) < sum(len(r["ack_at"]) for r in results):
        acked = {}
    extra = [alert - acked[sent] for r in results
             for sent, alert in zip(r.get("alert_sent", []), r["alert_latency"], strict=True)
             if sent in acked]
    report["alert_after_its_ack_ms"] = summary(extra)
    report["ack_of_alerting_segments_ms"] = summary(
        [acked[sent] for r in results for sent in r.get("alert_sent", []) if sent in acked])
    report["ack_ms_by_second"] = [
        {"second": k} | {q: v for q, v in summary(by_second[k]).items() if q in ("n", "p50", "p99")}
        for k in sorted(by_second)]
    return report


METRICS = ("cc_batch_events_sum", "cc_batch_events_count", "cc_commit_seconds_sum",
           "cc_commit_seconds_count", "cc_ingest_reply_seconds_sum",
           "cc_ingest_reply_seconds_count", "cc_segments_scored_total",
           "cc_alerts_raised_total", "cc_slow_client_disconnects_total", "cc_refused_total")


HISTOGRAMS = ("cc_commit_seconds_bucket", "cc_ingest_reply_seconds_bucket")


def bucket_quantile(before: dict[str, float], after: dict[str, float], name: str,
                    q: float) -> str | None:
    """The histogram bucket holding quantile ``q`` of what was observed between the two
    scrapes, as its upper bound in ms ("<= 25"): Prometheus's buckets are that coarse."""
    bounds = sorted(((float(k.split("|")[1]), after[k] - before.get(k, 0.0))
                     for k in after if k.startswith(name + "|")), key=lambda b: b[0])
    if not bounds or bounds[-1][1] <= 0:
        return None
    total = bounds[-1][1]  # cumulative: +Inf holds them all
    for bound, n in bounds:
        if n >= q * total:
            return f"<= {bound * 1e3:g}" if bound != float("inf") else "> last bucket"
    return None


def pipeline_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the server's own metrics (/metrics) say about the timed part."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS}
    batches = d["cc_batch_events_count"]
    commits = d["cc_commit_seconds_count"]
    replies = d["cc_ingest_reply_seconds_count"]
    return {
        "batches": int(batches),
        "events_per_batch": round(d["cc_batch_events_sum"] / batches, 1) if batches else None,
        "commit_s_total": round(d["cc_commit_seconds_sum"], 2),
        "commit_ms_mean": round(d["cc_commit_seconds_sum"] / commits * 1e3, 2)
        if commits else None,
        "commit_ms_p99_bucket": bucket_quantile(before, after, "cc_commit_seconds_bucket", 0.99),
        "server_reply_ms_mean": round(d["cc_ingest_reply_seconds_sum"] / replies * 1e3, 2)
        if replies else None,
        "server_reply_ms_p99_bucket": bucket_quantile(before, after,
                                                      "cc_ingest_reply_seconds_bucket", 0.99),
        "segments_scored": int(d["cc_segments_scored_total"]),
        "alerts_raised": int(d["cc_alerts_raised_total"]),
        "slow_client_disconnects": int(d["cc_slow_client_disconnects_total"]),
        "refused": int(d["cc_refused_total"]),
    }


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (all threads, 100 Hz, without pausing it)."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "100",
                             "--nonblocking", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(spy: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Stop py-spy; the functions holding most samples, by self and inclusive time."""
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return {"error": "py-spy did not stop"}
    if not out.is_file():
        return {"error": "py-spy wrote nothing"}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    parts: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = [short(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        part = component(frames[-1])
        parts[part] = parts.get(part, 0) + samples
        for frame in set(frames):
            if not any(root in frame for root in ROOT_FRAMES):
                inclusive[frame] = inclusive.get(frame, 0) + samples

    def top(counts: dict[str, int], n: int = 25) -> list[tuple[str, float]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [(name, round(100 * c / total, 1)) for name, c in ranked]

    return {"file": str(out), "samples": total, "by_component_self_pct": top(parts),
            "self_pct": top(own), "inclusive_pct": top(inclusive, 40)}


# Frames under which (nearly) everything runs: left out of the inclusive ranking.
ROOT_FRAMES = ("runpy>", "click/core.py", "uvicorn/main.py", "uvicorn/server.py",
               "uvicorn/_compat.py", "asyncio/runners.py", "threading.py", "futures/thread.py",
               "contact_center/__main__.py", "contact_center/cli.py")
# Where a sample's own (leaf) frame lives -> the part of the server it counts for.
COMPONENTS = (("scorer", ("fast_vader", "vaderSentiment", "analytics/scoring")),
              ("rules and signals", ("analytics/rules", "analytics/signals")),
              ("conversation state, snapshots", ("contact_center/conversation",
                                                 "contact_center/applier")),
              ("JSON", ("json/",)),
              ("pydantic", ("pydantic",)),
              ("store (SQLite)", ("stores/sqlite", "sqlite3")),
              ("WebSocket/HTTP stack", ("websockets/", "uvicorn/", "starlette/", "fastapi/",
                                        "httptools")),
              ("auth, metrics, logs", ("api/auth", "monitoring/credentials",
                                       "contact_center/limits", "contact_center/logs",
                                       "contact_center/service_metrics", "prometheus_client",
                                       "logging/")),
              # (frames are shortened to their last two path parts: see `short`)
              ("pipeline, ingest, live streams", ("contact_center/", "api/", "monitoring/",
                                                  "feeds/")),
              ("event loop (I/O, callbacks)", ("asyncio/", "uvloop")))


def component(frame: str) -> str:
    for name, marks in COMPONENTS:
        if any(mark in frame for mark in marks):
            return name
    return "other"



def short(frame: str) -> str:
    """'fn (/long/path/pkg/mod.py:12)' -> 'fn (pkg/mod.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if path else name


INGEST_REPLIES = "batched"  # how the ingest sockets take their replies (--replies)


def spec_for(server: Server, token: str, **kw: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "token": token, "manager_token": token,
            "part": 0, "parts": 1, "prefix": "c-", "replies": INGEST_REPLIES, **kw}


def split(spec: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """The same work over ``parts`` client processes (conversations and sockets split)."""
    return [spec | {"part": p, "parts": parts,
                    "connections": max(1, spec["connections"] // parts),
                    "monitors": (spec.get("monitors") or 0) // parts,
                    "alerts": spec.get("alerts") and p == 0} for p in range(parts)]


# -- ceilings -----------------------------------------------------------------------------

def _scorers(pipe: Connection, repeat: int) -> None:
    sys.path.insert(0, str(ROOT))
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from analytics.fast_vader import FastAnalyzer

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    texts = text_pool()
    rates: dict[str, float] = {}
    for _ in range(repeat):
        for name, score in (("reference", SentimentIntensityAnalyzer().polarity_scores),
                            ("fast", FastAnalyzer(cache_size=0).polarity_scores)):
            began = time.perf_counter()
            for text in texts:
                score(text)
            rates[name] = max(rates.get(name, 0.0), len(texts) / (time.perf_counter() - began))
    pipe.send({"texts": len(texts), "pinned_to_cpu": cpu,
               "texts_per_s": {k: round(v) for k, v in rates.items()}})


def commit_ceiling(folder: Path, n: int = 300) -> dict[str, Any]:
    """The floor of every batch's commit: SQLite in WAL mode with synchronous=FULL (the
    server's settings), one small row per transaction, on the disk the servers use."""
    path = folder / "commit-ceiling.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (x TEXT)")
        times = []
        for _ in range(n):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES ('x')")
            db.execute("COMMIT")
            times.append((time.perf_counter() - began) * 1000)
    finally:
        db.close()
        for leftover in folder.glob("commit-ceiling.db*"):
            leftover.unlink()
    times.sort()
    return {"commits": n, "p50_ms": round(times[n // 2], 3),
            "p99_ms": round(times[int(n * 0.99)], 3)}


def scorer_ceilings(repeat: int) -> dict[str, Any]:
    context = mp.get_context("fork")
    mine, theirs = context.Pipe()
    process = context.Process(target=_scorers, args=(theirs, repeat))
    process.start()
    result: dict[str, Any] = mine.recv()
    process.join()
    return result


# -- scenarios ----------------------------------------------------------------------------

class Suite:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.q = args.quick
        self.live_server: tuple[Server, str, int] | None = None  # kept for restart
        self.live_report: dict[str, Any] = {}

    def fresh(self, name: str) -> tuple[Server, str, float]:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        server = Server(str(folder / "cc.db"), folder / "server.log")
        if self.args.gc_probe:
            server.gc_log = folder / "gc.json"
        ready = server.start()
        token = credentials(str(server.db))
        server.admin_token = str(cli(str(server.db), "tokens", "create", "admin"))
        return server, token, ready

    def profile(self, name: str) -> Path | None:
        if not self.args.profile:
            return None
        folder = self.args.profile_dir or self.tmp
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"profile-{name}.txt"

    def open_load(self, rate: float, duration: float) -> dict[str, Any]:
        return {"mode": "open", "rate": rate, "duration": duration,
                "warmup": self.args.warmup}

    def ceilings(self) -> dict[str, Any]:
        a = self.args
        print("ceilings: scorers ...", flush=True)
        out: dict[str, Any] = {"scorers": scorer_ceilings(1 if self.q else 2)}
        print("ceilings: a commit ...", flush=True)
        out["commit"] = commit_ceiling(self.tmp)
        echo = Server(None, self.tmp / "echo.log", echo=True)
        echo.start()
        try:
            print("ceilings: echo saturated ...", flush=True)
            n = 2500 if self.q else 10_000
            out["echo_saturated"] = drive([spec_for(
                echo, "x", conversations=n, connections=8,
                load={"mode": "closed", "turns": 20, "window": 64})], echo)
            out["echo_saturated"]["events_per_s"] = round(
                out["echo_saturated"]["events"] / out["echo_saturated"]["elapsed_s"], 1)
            print(f"ceilings: echo open loop {a.rate:,.0f}/s ...", flush=True)
            out["echo_open"] = drive([spec_for(
                echo, "x", conversations=1000, connections=8, setup=None,
                load=self.open_load(a.rate, 6 if self.q else 12))], echo)
        finally:
            echo.stop()
        return out

    def saturated(self) -> dict[str, Any]:
        server, token, ready = self.fresh("saturated")
        try:
            n = 1000 if self.q else 5000
            report = drive([spec_for(server, token, conversations=n, connections=8,
                                     alerts=True,
                                     load={"mode": "closed", "turns": 20, "window": 64})],
                           server, profile=self.profile("saturated"))
        finally:
            server.stop()
        report["gc"] = server.gc(report["window"])
        report["start_empty_s"] = round(ready, 3)
        report["segments_per_s"] = round(report["segments"] / report["elapsed_s"], 1)
        report["events_per_s"] = round(report["events"] / report["elapsed_s"], 1)
        report["stored_segments"] = count(server.db, "segments")
        report["stored_alerts"] = count(server.db, "alerts")
        report["shape"] = f"8 sockets x 64 in flight, {n:,} conversations x 20 turns"
        return report

    def monitored(self) -> dict[str, Any]:
        """``--repeat`` back-to-back runs, each on a fresh server: the first in full, the
        figures of every run under ``runs``."""
        reports = [self._monitored_once(n) for n in range(max(1, self.args.repeat))]
        report = reports[0]
        report["runs"] = [{
            "achieved_per_s": r["achieved_per_s"],
            "server_cpu_us_per_segment": round(r["server_cpu_s"] / r["segments"] * 1e6),
            **{key: {q: r.get(key, {}).get(q) for q in ("p50", "p99", "max")}
               for key in ("ack_ms", "ingest_to_alert_ms", "segment_to_monitor_ms")},
        } for r in reports]
        return report

    def _monitored_once(self, n: int) -> dict[str, Any]:
        a = self.args
        server, token, ready = self.fresh("monitored" if n == 0 else f"monitored-{n + 1}")
        size = 300 if self.q else a.monitored_conversations
        try:
            report = drive(split(spec_for(
                server, token, conversations=size, connections=8, monitors=size, alerts=True,
                setup={"segments": 0, "window": 64},
                load=self.open_load(a.rate, 10 if self.q else 30)), 1), server,
                profile=self.profile("monitored"))
        finally:
            server.stop()
        report["gc"] = server.gc(report["window"])
        report["start_empty_s"] = round(ready, 3)
        report["offered_per_s"] = a.rate
        report["achieved_per_s"] = round(report["segments"] / report["elapsed_s"], 1)
        report["shape"] = (f"{a.rate:,.0f} segments/s open loop over {size:,} live "
                           f"conversations on 8 sockets, {size:,} monitors, 1 alert stream")
        return report

    def build_live(self, name: str, n: int, load: dict[str, Any] | None) -> dict[str, Any]:
        server, token, ready = self.fresh(name)
        try:
            idle = rss_mb(server.pid)
            report = drive([spec_for(server, token, conversations=n, connections=8,
                                     setup={"segments": 1, "window": 64},
                                     load=load or {"mode": "open", "rate": 1, "duration": 0,
                                                   "warmup": 0})], server,
                           profile=self.profile(name) if load else None)
        except BaseException:
            server.stop()
            raise
        report["start_empty_s"] = round(ready, 3)
        report["server_rss_mb_idle"] = idle
        report["live_conversations"] = n
        before = report["server_rss_mb_before"]
        report["rss_kb_per_conversation"] = round((before - idle) * 1024 / n, 2)
        self.live_server = (server, token, n)
        self.live_report = report
        return report

    def live100k(self) -> dict[str, Any]:
        a = self.args
        n = 10_000 if self.q else 100_000
        report = self.build_live("live100k", n, self.open_load(a.rate, 10 if self.q else 20))
        report["offered_per_s"] = a.rate
        report["achieved_per_s"] = round(report["segments"] / report["elapsed_s"], 1)
        report["shape"] = (f"{n:,} live conversations (started + 1 segment each) on 8 "
                           f"sockets; then {a.rate:,.0f} segments/s open loop across them")
        if "restart" not in self.args.only:
            self.live_server[0].stop()  # type: ignore[index]
            report["gc"] = self.live_server[0].gc(report["window"])  # type: ignore[index]
            self.live_server = None
        return report

    def restart(self) -> dict[str, Any]:
        n = 10_000 if self.q else 100_000
        report: dict[str, Any] = {}
        if self.live_server is None:
            print(f"restart: building {n:,} live conversations ...", flush=True)
            built = self.build_live("restart", n, None)
            report["built"] = {k: built[k] for k in ("setup", "server_rss_mb_before")}
        assert self.live_server is not None
        server, token, n = self.live_server
        self.live_server = None
        report["rss_mb_before_stop"] = rss_mb(server.pid)
        report["shutdown_s"] = round(server.stop(), 3)
        if "window" in self.live_report:
            self.live_report["gc"] = server.gc(self.live_report["window"])
        if server.gc_log is not None:
            server.gc_log = server.gc_log.with_name("gc-restart.json")
        out = self.profile("restart")
        spies: list[subprocess.Popen[bytes]] = []
        try:
            report["ready_s"] = round(server.start(
                None if out is None else lambda pid: spies.append(start_profile(pid, out))), 3)
            if spies and out is not None:
                report["profile"] = stop_profile(spies[0], out)
            report["first_answer_s"] = round(server.first_answer_s or float("nan"), 3)
            # Events are taken from ready on; the live views answer once all are restored.
            with httpx.Client() as http:
                agents = http.get(f"http://127.0.0.1:{server.port}/v1/live/agents",
                                  headers={"Authorization": f"Bearer {token}"}, timeout=300)
            agents.raise_for_status()
            report["restored_s"] = round(time.perf_counter() - server.started_at, 3)
            report["live_conversations_after"] = sum(
                a["conversations"] for a in agents.json()["agents"])
            report["live_conversations_at_ready"] = server.ready_body.get("live_conversations")
            report["rss_mb_after"] = rss_mb(server.pid)
            time.sleep(1.0)
            report["rss_mb_after_1s"] = rss_mb(server.pid)
        finally:
            server.stop()
        report["gc_during_start"] = server.gc(
            [server.started_at, server.started_at + report.get("ready_s", 0.0)])
        report["live_conversations"] = n
        report["db_mb"] = round(sum(p.stat().st_size for p in Path(server.db).parent.glob(
            "cc.db*")) / 2**20, 1)
        return report

    def scaleout(self) -> dict[str, Any]:
        """The scale-out deployment (API node, 2 workers, Redis, PostgreSQL): saturated,
        then the open-loop rate over live conversations, in one deployment."""
        a = self.args
        folder = self.tmp / "scaleout"
        folder.mkdir(exist_ok=True)
        report: dict[str, Any] = {}
        with throwaway_database(a.postgres) as db:
            assert db is not None
            redis, url = start_redis(str(folder))
            server = ScaleOut(db, folder / "server.log", a.workers, url, redis.pid)
            try:
                report["start_empty_s"] = round(server.start(), 3)
                token = credentials(db)
                server.admin_token = str(cli(db, "tokens", "create", "admin"))
                n = 500 if self.q else 1000
                sat = drive([spec_for(server, token, conversations=n, connections=8,
                                      alerts=True, prefix="sat-",
                                      load={"mode": "closed", "turns": 20, "window": 64})],
                            server, profile=self.profile("scaleout-saturated"))
                sat["segments_per_s"] = round(sat["segments"] / sat["elapsed_s"], 1)
                sat["events_per_s"] = round(sat["events"] / sat["elapsed_s"], 1)
                sat["shape"] = f"8 sockets x 64 in flight, {n:,} conversations x 20 turns"
                report["saturated"] = sat
                live = drive([spec_for(server, token, conversations=1000, connections=8,
                                       alerts=True, prefix="open-",
                                       setup={"segments": 0, "window": 64},
                                       load=self.open_load(a.rate, 8 if self.q else 15))],
                             server, profile=self.profile("scaleout-open"))
                live["offered_per_s"] = a.rate
                live["achieved_per_s"] = round(live["segments"] / live["elapsed_s"], 1) \
                    if live["elapsed_s"] else None
                live["shape"] = (f"{a.rate:,.0f} segments/s open loop over 1,000 live "
                                 "conversations on 8 sockets, 1 alert stream")
                report["open"] = live
            finally:
                server.stop()
                redis.terminate()
                redis.wait(10)
            report["stored_segments"] = count(db, "segments")
        report["deployment"] = (f"API node + {a.workers} workers, redis-server (AOF everysec), "
                                "PostgreSQL")
        return report

    def sockets10k(self) -> dict[str, Any]:
        a = self.args
        n = 1000 if self.q else 10_000
        procs = a.client_processes
        server, token, ready = self.fresh("sockets10k")
        try:
            idle = rss_mb(server.pid)
            report = drive(split(spec_for(
                server, token, conversations=n, connections=n,
                setup={"segments": 0, "window": 1},
                load=self.open_load(a.rate, 10 if self.q else 20)), procs), server,
                profile=self.profile("sockets10k"))
        finally:
            server.stop()
        report["gc"] = server.gc(report["window"])
        report["start_empty_s"] = round(ready, 3)
        report["server_rss_mb_idle"] = idle
        report["rss_kb_per_socket"] = round(
            (report["server_rss_mb_before"] - idle) * 1024 / n, 2)
        report["offered_per_s"] = a.rate
        report["achieved_per_s"] = round(report["segments"] / report["elapsed_s"], 1)
        report["sockets"] = n
        report["shape"] = (f"{n:,} ingest sockets (one live conversation each), client split "
                           f"over {procs} processes of {n // procs:,} sockets; "
                           f"{a.rate:,.0f} segments/s open loop across them")
        return report


# -- the table ----------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 0) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def table(r: dict[str, Any], quick: bool) -> str:
    c = r.get("ceilings", {})
    ref = c.get("scorers", {}).get("texts_per_s", {}).get("reference")
    fast = c.get("scorers", {}).get("texts_per_s", {}).get("fast")
    echo = c.get("echo_saturated", {}).get("events_per_s")
    echo_p99 = c.get("echo_open", {}).get("ack_ms", {}).get("p99")
    rows: list[tuple[str, str, str, str, str, str, str]] = []

    def row(scenario: str, figure: str, value: str, target: str = "", met: bool | None = None,
            ratio: str = "", cpu: str = "") -> None:
        verdict = "" if met is None else ("yes" if met else "**no**")
        rows.append((scenario, figure, value, target, verdict, ratio, cpu))

    def cpu_of(s: dict[str, Any]) -> str:
        return (f"{fmt(s.get('server_cpu_s'), 1)} / {fmt(s.get('client_cpu_s'), 1)} / "
                f"{fmt(max(0.0, s.get('other_cpu_s', 0.0)), 1)} in {fmt(s.get('elapsed_s'), 1)} s")

    def lat(s: dict[str, Any], key: str) -> tuple[str, float | None]:
        d = s.get(key, {})
        if not d.get("n"):
            return "-", None
        return f"{fmt(d['p50'], 1)} / {fmt(d['p99'], 1)} / {fmt(d['max'], 0)}", d["p99"]

    def diagnostic_rows(scenario: str, s: dict[str, Any]) -> None:
        """What the server waited on (its commits) and, with --gc-probe, the collector."""
        m = s.get("server_metrics") or {}
        if m.get("batches") and s.get("elapsed_s"):
            commit = f"{c['commit']['p50_ms']:.2f} ms" if "commit" in c else ""
            row(scenario, "commits: events per batch; mean ms; share of the run committing",
                f"{m['events_per_batch']}; {m['commit_ms_mean']}; "
                f"{m['commit_s_total'] / s['elapsed_s']:.0%}",
                ratio=f"an empty commit here: p50 {commit}" if commit else "")
        g = s.get("gc")
        if g:
            longest = g["longest"][0] if g["longest"] else None
            row(scenario, "GC in the timed part: full collections, longest pause",
                f"{g['gen2']['count']}, {fmt(longest['ms'] if longest else 0, 0)} ms",
                ratio=f"all collections {sum(g[f'gen{i}']['total_ms'] for i in range(3)):,.0f} ms")

    def vs_echo(p99: float | None, s: dict[str, Any] | None = None) -> str:
        notes = [f"{p99 / echo_p99:.1f}x echo's p99" if p99 and echo_p99 else ""]
        bucket = (s or {}).get("server_metrics", {}).get("server_reply_ms_p99_bucket")
        if bucket:
            notes.append(f"server's own p99 {bucket} ms")
        return "; ".join(n for n in notes if n)

    if "scorers" in c:
        row("ceiling", "reference scorer, texts/s (1 core)", fmt(ref))
        row("ceiling", "fast scorer (no cache), texts/s (1 core)", fmt(fast),
            ratio=f"{fast / ref:.2f}x reference" if ref and fast else "")
    if "commit" in c:
        row("ceiling", "SQLite commit of one row (WAL, synchronous FULL): p50 / p99 ms",
            f"{c['commit']['p50_ms']:.2f} / {c['commit']['p99_ms']:.2f}")
    if "echo_saturated" in c:
        e = c["echo_saturated"]
        row("ceiling", "echo endpoint saturated, messages/s (8 x 64)", fmt(echo),
            cpu=cpu_of(e))
        text, _ = lat(c["echo_open"], "ack_ms")
        row("ceiling", f"echo endpoint at {fmt(r['args']['rate'])}/s: ack p50 / p99 / max ms",
            text, cpu=cpu_of(c["echo_open"]))
    if "saturated" in r:
        s = r["saturated"]
        ratios = []
        if echo:
            ratios.append(f"{s['events_per_s'] / echo:.2f}x echo (events)")
        if ref and fast:
            ratios.append(f"{s['segments_per_s'] / ref:.2f}x reference scorer, "
                          f"{s['segments_per_s'] / fast:.2f}x fast scorer")
        row("saturated", "segments/s (recording all)", fmt(s["segments_per_s"]), "≥ 12,000",
            s["segments_per_s"] >= 12_000, "; ".join(ratios), cpu_of(s))
        row("saturated", "ack p50 / p99 / max ms", lat(s, "ack_ms")[0], ratio=vs_echo(None, s))
        row("saturated", "ingest→alert p50 / p99 ms",
            f"{fmt(s['ingest_to_alert_ms'].get('p50'), 1)} / "
            f"{fmt(s['ingest_to_alert_ms'].get('p99'), 1)}"
            if "ingest_to_alert_ms" in s else "-", ratio=f"{s['alerts']:,} alerts")
        row("saturated", "server CPU per segment",
            f"{s['server_cpu_s'] / s['segments'] * 1e6:.0f} µs",
            ratio=f"fast scorer alone: {1e6 / fast:.0f} µs" if fast else "")
        diagnostic_rows("saturated", s)
    if "monitored" in r:
        s = r["monitored"]
        row("monitored", "achieved segments/s (offered)",
            f"{fmt(s['achieved_per_s'])} ({fmt(s['offered_per_s'])})", cpu=cpu_of(s))
        text, p99 = lat(s, "ack_ms")
        row("monitored", "ack p50 / p99 / max ms", text, ratio=vs_echo(p99, s))
        text, p99 = lat(s, "ingest_to_alert_ms")
        row("monitored", "ingest→alert p50 / p99 / max ms", text, "p99 ≤ 20",
            None if p99 is None else p99 <= 20,
            f"{s['ingest_to_alert_ms'].get('n', 0):,} alerts; " + vs_echo(p99))
        if s.get("alert_after_its_ack_ms", {}).get("n"):
            mine = s["ack_of_alerting_segments_ms"]
            row("monitored", "alert after its segment's own ack p50 / p99 / max ms",
                lat(s, "alert_after_its_ack_ms")[0],
                ratio=f"those segments' acks p50 / p99: {fmt(mine['p50'], 1)} / "
                      f"{fmt(mine['p99'], 1)} ms")
        text, p99 = lat(s, "segment_to_monitor_ms")
        row("monitored", "segment→monitor p50 / p99 / max ms", text, "p99 ≤ 20",
            None if p99 is None else p99 <= 20,
            f"{s['segment_to_monitor_ms'].get('n', 0):,} pushes; " + vs_echo(p99))
        runs = s.get("runs", [])
        if runs:
            def p99s(key: str) -> list[float]:
                return [run[key]["p99"] if run[key]["p99"] is not None else float("inf")
                        for run in runs]

            each = "; ".join(
                f"{fmt(run['ack_ms']['p99'], 1)} / {fmt(run['ingest_to_alert_ms']['p99'], 1)}"
                f" / {fmt(run['segment_to_monitor_ms']['p99'], 1)}" for run in runs)
            row("monitored", f"each of {len(runs)} runs: ack / alert / monitor p99 ms", each,
                "≤ 15 / 20 / 20 in each",
                all(a <= 15 for a in p99s("ack_ms"))
                and all(v <= 20 for key in ("ingest_to_alert_ms", "segment_to_monitor_ms")
                        for v in p99s(key)))
            cpu = [run["server_cpu_us_per_segment"] for run in runs]
            saturated = (r["saturated"]["server_cpu_s"] / r["saturated"]["segments"] * 1e6
                         if "saturated" in r else None)
            row("monitored", "server CPU per segment, each run",
                "; ".join(f"{c} µs" for c in cpu),
                "≤ 1.5x saturated" if saturated else "",
                all(c <= 1.5 * saturated for c in cpu) if saturated else None,
                f"{max(cpu) / saturated:.2f}x saturated's {saturated:.0f} µs (worst run)"
                if saturated else "")
        diagnostic_rows("monitored", s)
    if "live100k" in r:
        s = r["live100k"]
        n = s["live_conversations"]
        row(f"live ({n:,})", "server RSS MB: idle → live → after load",
            f"{fmt(s['server_rss_mb_idle'])} → {fmt(s['server_rss_mb_before'])} → "
            f"{fmt(s['server_rss_mb_after'])}", "≤ 1,024", s["server_rss_mb_peak"] <= 1024,
            f"{s['rss_kb_per_conversation']:.1f} KB per live conversation", cpu_of(s))
        setup = s["setup"].get("setup", {})
        row(f"live ({n:,})", "setup: events/s (start + 1 segment each)",
            fmt(setup.get("events_per_s")))
        text, p99 = lat(s, "ack_ms")
        row(f"live ({n:,})", f"ack p50 / p99 / max ms at {fmt(s['offered_per_s'])}/s", text,
            "p99 ≤ 50", None if p99 is None else p99 <= 50, vs_echo(p99, s))
        diagnostic_rows(f"live ({n:,})", s)
    if "sockets10k" in r:
        s = r["sockets10k"]
        n = s["sockets"]
        setups = s["setup"] if isinstance(s["setup"], list) else [s["setup"]]
        connect = max(x.get("ingest_connect_s", 0) for x in setups)
        row(f"sockets ({n:,})", "open all sockets, s; server RSS MB idle → open",
            f"{connect:.1f}; {fmt(s['server_rss_mb_idle'])} → {fmt(s['server_rss_mb_before'])}",
            ratio=f"{s['rss_kb_per_socket']:.1f} KB per socket", cpu=cpu_of(s))
        text, p99 = lat(s, "ack_ms")
        row(f"sockets ({n:,})", f"ack p50 / p99 / max ms at {fmt(s['offered_per_s'])}/s",
            text, "p99 ≤ 100", None if p99 is None else p99 <= 100, vs_echo(p99, s))
        diagnostic_rows(f"sockets ({n:,})", s)
    if "restart" in r:
        s = r["restart"]
        n = s["live_conversations"]
        empty = next((r[k]["start_empty_s"] for k in ("live100k", "saturated", "monitored")
                      if k in r and "start_empty_s" in r[k]), None)
        row(f"restart ({n:,} live)", "process start → /readyz 200, s",
            f"{s['ready_s']:.2f}", "≤ 3", s["ready_s"] <= 3,
            f"{s['ready_s'] / empty:.1f}x an empty database's {empty:.2f} s" if empty else "")
        if "restored_s" in s:
            row(f"restart ({n:,} live)", "process start → all restored (live views answer), s",
                f"{s['restored_s']:.2f}", ratio="events are taken from /readyz 200 on")
        row(f"restart ({n:,} live)", "live conversations restored; RSS MB after",
            f"{fmt(s['live_conversations_after'])}; {fmt(s['rss_mb_after'])}",
            ratio=f"shutdown (SIGTERM → exit) {s['shutdown_s']:.2f} s")
    if "scaleout" in r:
        s = r["scaleout"]
        sat, live = s["saturated"], s["open"]
        embedded = r.get("saturated", {}).get("segments_per_s")
        row("scale-out", "saturated segments/s (8 x 64)", fmt(sat["segments_per_s"]),
            ratio="; ".join(x for x in (
                f"{sat['events_per_s'] / echo:.2f}x echo (events)" if echo else "",
                f"{sat['segments_per_s'] / embedded:.2f}x embedded" if embedded else "") if x),
            cpu=cpu_of(sat))
        row("scale-out", "saturated ack p50 / p99 / max ms", lat(sat, "ack_ms")[0])
        by_process = sat.get("server_cpu_s_by_process", {})
        workers = sum(v for k, v in by_process.items() if k.startswith("worker"))
        if workers:
            per = workers / sat["segments"] * 1e6
            ours = r.get("saturated", {})
            mine = ours["server_cpu_s"] / ours["segments"] * 1e6 if ours.get("segments") else 0
            row("scale-out", "saturated: the workers' CPU per segment", f"{per:.0f} µs",
                "≤ 1.3x embedded", per <= 1.3 * mine if mine else None,
                "; ".join(x for x in (
                    f"{per / mine:.2f}x the embedded server's {mine:.0f} µs" if mine else "",
                    "the API node {:.0f} µs, Redis {:.0f} µs; PostgreSQL's in the rest".format(
                        *(by_process.get(k, 0) / sat["segments"] * 1e6
                          for k in ("api node", "redis")))) if x))
        row("scale-out", f"achieved segments/s at {fmt(live['offered_per_s'])}/s offered",
            fmt(live["achieved_per_s"]), cpu=cpu_of(live))
        text, p99 = lat(live, "ack_ms")
        row("scale-out", "open loop: ack p50 / p99 / max ms", text, ratio=vs_echo(p99, live))
        text, p99 = lat(live, "ingest_to_alert_ms")
        row("scale-out", "open loop: ingest→alert p50 / p99 / max ms", text, ratio=vs_echo(p99))
    lines = ["| scenario | figure | measured | target | met | vs ceilings / notes "
             "| CPU s: server / client / rest of machine, in wall s |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(x) + " |" for x in rows]
    busy = []
    timed = [(name, part) for name, part in r.items() if isinstance(part, dict)]
    timed += [(f"{name} {k}", v) for name, part in timed for k, v in part.items()
              if isinstance(v, dict)]
    for label, s in timed:
        if label.startswith("scaleout"):  # its "rest of the machine" includes PostgreSQL
            continue
        other, wall = s.get("other_cpu_s"), s.get("elapsed_s")
        if other is not None and wall is not None and other > 0.2 * max(1.0, wall):
            busy.append(f"{label} ({other:.1f} CPU s in {wall:.0f} s)")
    if busy:
        lines.append("\nOther processes were busy on this machine during: " + ", ".join(busy)
                     + "; those figures are disturbed (rerun when the machine is quiet).")
    if quick:
        lines.append("\n--quick: scaled down (see each scenario's shape); the targets are "
                     "for the full sizes.")
    return "\n".join(lines)


def source_state() -> dict[str, Any]:
    """The commit measured, and the files changed on top of it (read-only git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--porcelain",
                                        "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed": changed,
            # the same hash, the same working tree (other engineers edit it meanwhile)
            "diff_sha256": hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="scaled down: 10,000 live conversations, 1,000 sockets, "
                             "shorter runs")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        metavar="SCENARIO", help=f"some of: {', '.join(SCENARIOS)}")
    parser.add_argument("--no-ceilings", action="store_true",
                        help="skip the ceilings (no ratios then)")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="offered segments/s of the open-loop scenarios")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of open-loop load sent but not counted")
    parser.add_argument("--monitored-conversations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="back-to-back runs of the monitored scenario, each on a fresh "
                             "server (its targets hold for each)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="client processes for sockets10k")
    parser.add_argument("--postgres", default=POSTGRES, metavar="URL",
                        help="PostgreSQL server for the scale-out scenario's throwaway database")
    parser.add_argument("--workers", type=int, default=2,
                        help="pipeline workers of the scale-out scenario")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy during each timed part (and the "
                             "restart), top functions and components in the JSON; it costs "
                             "the server some CPU: not for the reported figures")
    parser.add_argument("--profile-dir", type=Path, default=None,
                        help="keep py-spy's raw samples (collapsed stacks) here")
    parser.add_argument("--gc-probe", action="store_true",
                        help="run each contact-center server under bench/gc_probe.py and "
                             "report the garbage collector's pauses in each timed part")
    parser.add_argument("--replies", choices=("single", "batched"), default="batched",
                        help="how the ingest sockets take their replies: one a frame, or "
                             "those settled together in one frame (?replies=batched)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON report [default: bench/results/suite.json, with --quick "
                             "bench/results/suite-quick.json]")
    args = parser.parse_args()
    global INGEST_REPLIES
    INGEST_REPLIES = args.replies
    if args.out is None:
        args.out = ROOT / "bench" / "results" / (
            "suite-quick.json" if args.quick else "suite.json")

    began = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "cpus_usable": len(os.sched_getaffinity(0)),
                    "python": f"{platform.python_implementation()} {platform.python_version()}",
                    "fd_limit": __import__("resource").getrlimit(
                        __import__("resource").RLIMIT_NOFILE)[0]},
        "command": " ".join(["python", *sys.argv]),
        "source": source_state(),
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    order = [s for s in SCENARIOS if s in args.only]
    if "restart" in order and "live100k" in order:  # restart reuses live100k's server
        order.remove("restart")
        order.insert(order.index("live100k") + 1, "restart")
    with tempfile.TemporaryDirectory(prefix="cc-suite-") as tmp:
        suite = Suite(args, Path(tmp))
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if not args.no_ceilings:
            steps.append(("ceilings", suite.ceilings))
        steps += [(name, getattr(suite, name)) for name in order]
        for name, step in steps:
            print(f"== {name}", flush=True)
            started_at = time.perf_counter()
            try:
                results[name] = step()
            except Exception as exc:  # report it and go on with the next scenario
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"   failed: {results[name]['error']}", flush=True)
            if isinstance(results[name], dict):
                results[name]["wall_s"] = round(time.perf_counter() - started_at, 1)
            print(f"   {time.perf_counter() - started_at:.0f} s", flush=True)
        if suite.live_server is not None:
            suite.live_server[0].stop()
    results["wall_s"] = round(time.perf_counter() - began, 1)
    ok = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    results["table"] = table(ok, args.quick)
    print()
    print(results["table"])
    print(f"\n{results['wall_s']:.0f} s in all; {results['command']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
