"""The console under load: is the live wall fluid with 1,000 live conversations changing
at 2,000 segments/s? Measured in the browser, as a supervisor sees it.

Starts `contact-center serve` (embedded) on a throwaway database, signs an admin in to
the live wall in headless Chromium or Firefox (Debian's, through Playwright), starts the
conversations, then streams real text into them at the offered rate over several
ingest sockets. Every 250 ms a probe conversation starts and, 100 ms later, gets one
segment; the page records (in a MutationObserver, at the next animation frame) when the
probe's row appears and when its sentiment changes. Reports, without asserting anything:
the rate achieved, ingest-to-paint latency (p50, p95, p99) for both, the page's long
tasks (over 50 ms: count, total, longest; Chromium only), the frames drawn more than 50 ms
apart (both browsers), and the CPU of the server and the browser.

    python bench/console.py --conversations 1000 --rate 2000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.load import ROOT, cli, cpu_seconds, percentile, text_pool

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PASSWORD = "bench password, long enough"

# In the page: long tasks, and when each probe row appears or changes (Unix ms).
OBSERVE = """() => {
  window.bench = {long: [], gaps: [], appeared: {}, changed: {},
                  longtasks: PerformanceObserver.supportedEntryTypes.includes("longtask")};
  if (window.bench.longtasks) new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.bench.long.push(e.duration);
  }).observe({type: "longtask", buffered: true});
  // Frames more than 50 ms apart: what a supervisor sees as a stutter, in any browser
  // (Firefox has no long-task entries).
  let last = performance.now();
  const frame = (now) => {
    if (now - last > 50) window.bench.gaps.push(now - last);
    last = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const seen = (id, cell) => {
    const at = () => requestAnimationFrame(() => {
      if (!(id in window.bench.appeared)) window.bench.appeared[id] = Date.now();
      else if (!(id in window.bench.changed) && /\\d/.test(cell.textContent))
        window.bench.changed[id] = Date.now();
    });
    at();
  };
  new MutationObserver((records) => {
    for (const r of records) {
      const row = r.target.closest ? r.target.closest("[role=row]") : null;
      const rows = r.target.id === "wall-rows" ? [...r.addedNodes] : row ? [row] : [];
      for (const tr of rows) {
        const id = tr.dataset && tr.dataset.id;
        if (id && id.startsWith("probe-")) seen(id, tr.children[5] || tr);
      }
    }
  }).observe(document.getElementById("wall-rows"), {childList: true, subtree: true});
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def watch(url: str, token: str, heard: dict[str, dict[str, float]]) -> None:
    """The same board as a plain socket client (no browser): when each probe's row would
    appear and change, the ceiling the page's figures are compared with."""
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       max_queue=None) as ws:
        async for raw in ws:
            message = json.loads(raw)
            summary = message.get("conversation") or {}
            pid = summary.get("id", "")
            if message["type"] != "conversation.updated" or not pid.startswith("probe-"):
                continue
            times = heard.setdefault(pid, {"appeared": time.time() * 1000})
            if summary["sentiment"]["window"] is not None and "changed" not in times:
                times["changed"] = time.time() * 1000


async def load(base: str, token: str, args: argparse.Namespace,
               sent: dict[str, dict[str, float]], watcher: str,
               heard: dict[str, dict[str, float]]) -> dict[str, Any]:
    texts = text_pool()
    listening = asyncio.create_task(watch(
        base.replace("http", "ws") + "/v1/live?queue=probes", watcher, heard))
    url = base.replace("http", "ws") + "/v1/ingest"
    headers = {"Authorization": f"Bearer {token}"}
    sockets = [await connect(url, additional_headers=headers, max_queue=None)
               for _ in range(args.connections)]
    for ws in sockets:
        await ws.recv()
    readers = [asyncio.create_task(_drain(ws)) for ws in sockets]
    for c in range(args.conversations):
        await sockets[c % len(sockets)].send(json.dumps({
            "type": "conversation.started", "conversation": {
                "id": f"load-{c}", "queue": f"q{c % 4}", "agent_id": f"agent-{c % 50}"}}))
    await asyncio.sleep(2)
    started, sent_segments, probe = time.perf_counter(), 0, 0
    next_probe = started
    tick = 0.01  # send in 10 ms slices at the offered rate
    while (now := time.perf_counter()) - started < args.seconds:
        due = int((now - started) * args.rate) - sent_segments
        for _ in range(max(0, due)):
            c = sent_segments % args.conversations
            await sockets[c % len(sockets)].send(json.dumps({
                "type": "segment", "conversation_id": f"load-{c}",
                "segment_id": f"s{sent_segments}", "role": "customer",
                "text": texts[sent_segments % len(texts)]}))
            sent_segments += 1
        if now >= next_probe:
            pid = f"probe-{probe}"
            sent[pid] = {"start": time.time() * 1000}
            await sockets[0].send(json.dumps({"type": "conversation.started", "conversation": {
                "id": pid, "queue": "probes", "agent_id": "agent-probe"}}))
            asyncio.get_running_loop().call_later(0.1, _probe_segment, sockets[0], pid, sent)
            probe += 1
            next_probe += 0.25
        await asyncio.sleep(tick)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.5)
    for task in [*readers, listening]:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return {"segments_sent": sent_segments, "seconds": round(elapsed, 1),
            "offered_per_s": args.rate, "achieved_per_s": round(sent_segments / elapsed)}


def browser_cpu_seconds(browser: str) -> float:
    """CPU time of every process of the browser so far (browser, renderers, GPU,
    utilities)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if browser.encode() in (proc / "cmdline").read_bytes():
                total += cpu_seconds(int(proc.name))
        except OSError:
            continue
    return total


_SENDING: set[asyncio.Future[None]] = set()  # (held until sent)


def _probe_segment(ws: Any, pid: str, sent: dict[str, dict[str, float]]) -> None:
    sent[pid]["segment"] = time.time() * 1000
    sending = asyncio.ensure_future(ws.send(json.dumps({
        "type": "segment", "conversation_id": pid, "segment_id": "p1", "role": "customer",
        "text": "Thank you, that is wonderful, I love it!"})))
    _SENDING.add(sending)
    sending.add_done_callback(_SENDING.discard)


async def _drain(ws: Any) -> None:
    async for _ in ws:
        pass


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1),
            "p99_ms": round(percentile(values, 99), 1)}


@contextlib.contextmanager
def embedded_service() -> Iterator[tuple[subprocess.Popen[bytes], str, str, str, str]]:
    """`contact-center serve` (embedded) on a throwaway database: the process, its URL,
    the database, a connector's token and the admin's."""
    with tempfile.TemporaryDirectory() as tmp:
        db, port = str(Path(tmp) / "bench.db"), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "contact_center", "serve", "--port", str(port), "--db", db],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            time.sleep(3)
            cli(db, "users", "create", "bench-connector", "--profile", "Connector")
            connector = cli(db, "tokens", "create", "bench-connector")
            admin = cli(db, "tokens", "create", "admin")
            yield server, f"http://127.0.0.1:{port}", db, connector, admin
        finally:
            server.terminate()
            server.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000, help="segments per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--filter", default="",
                        help="type this into the wall's filter (e.g. 'probes', their queue: "
                             "the probes' rows are then on the page whatever their rank)")
    parser.add_argument("--browser", choices=["chromium", "firefox"], default="chromium",
                        help="Debian's chromium, or firefox-esr over WebDriver BiDi")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with embedded_service() as (server, base, db, token, watcher):
        subprocess.run([sys.executable, "-m", "contact_center", "users", "password",
                        "admin", "--db", db], input=f"{PASSWORD}\n{PASSWORD}\n",
                       text=True, check=True, capture_output=True, cwd=ROOT)
        with sync_playwright() as playwright:
            if args.browser == "firefox":
                browser = playwright.firefox.launch(
                    channel="moz-firefox", executable_path="/usr/bin/firefox-esr")
            else:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/console/sign-in?next=/console/wall")
            page.fill("#username", "admin")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/console/wall")
            page.locator("#count").wait_for()
            if args.filter:
                page.fill("#filter", args.filter)
            page.evaluate(OBSERVE)
            sent: dict[str, dict[str, float]] = {}
            heard: dict[str, dict[str, float]] = {}
            cpu = cpu_seconds(server.pid)
            browser_cpu = browser_cpu_seconds(args.browser)
            # (In a thread: Playwright's sync API holds this one's event loop.)
            done: dict[str, Any] = {}
            loader = threading.Thread(target=lambda: done.update(
                asyncio.run(load(base, token, args, sent, watcher, heard))))
            loader.start()
            loader.join()
            report = done
            report["server_cpu_us_per_segment"] = round(
                (cpu_seconds(server.pid) - cpu) / max(1, report["segments_sent"]) * 1e6)
            report["browser_cpu_share_of_a_core"] = round(
                (browser_cpu_seconds(args.browser) - browser_cpu) / report["seconds"], 2)
            seen = page.evaluate("() => window.bench")
            rows = page.locator("#wall-rows [role=row]").count()
            browser.close()
    appear = [seen["appeared"][p] - t["start"] for p, t in sent.items()
              if p in seen["appeared"]]
    change = [seen["changed"][p] - t["segment"] for p, t in sent.items()
              if p in seen["changed"] and "segment" in t]
    long_tasks = seen["long"]
    socket_appear = [h["appeared"] - sent[p]["start"] for p, h in heard.items() if p in sent]
    socket_change = [h["changed"] - sent[p]["segment"] for p, h in heard.items()
                     if "changed" in h and "segment" in sent.get(p, {})]
    report |= {
        "filter": args.filter or None,
        "live_rows_on_the_wall_at_the_end": rows,
        "new_conversation_to_paint": summary(appear),
        "segment_to_paint": summary(change),
        "ceiling_plain_socket_client": {"new_conversation": summary(socket_appear),
                                        "segment": summary(socket_change)},
        "browser": args.browser,
        "long_tasks": ({"count": len(long_tasks), "total_ms": round(sum(long_tasks)),
                        "longest_ms": round(max(long_tasks, default=0))}
                       if seen["longtasks"] else "not reported by this browser"),
        "frames_over_50_ms_apart": {"count": len(seen["gaps"]),
                                    "total_ms": round(sum(seen["gaps"])),
                                    "longest_ms": round(max(seen["gaps"], default=0))},
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores "
                   "(server, load and browser share them)",
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
