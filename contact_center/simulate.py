"""Replay real conversations as live traffic: the newcomer's way to see alerts fire.

Each conversation from a JSONL file (``twitter-care`` format) is started, its turns are
streamed as final segments at the chosen overall rate, and it is ended. Several
conversations run at once, each worker on its own ingest socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from analytics.quality import load_corpus

SHARED_CORPUS = Path("../shared/data/twitter-care/conversations.jsonl")


def default_source() -> Path:
    """The shared real corpus when present, else the small sample in the package."""
    if SHARED_CORPUS.is_file():
        return SHARED_CORPUS
    return Path(str(resources.files("contact_center") / "samples" / "conversations.jsonl"))


@dataclass
class Report:
    conversations: int = 0
    segments: int = 0
    acked: int = 0
    duplicates: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        rate = self.segments / self.elapsed if self.elapsed else 0.0
        errors = ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"{self.conversations} conversations, {self.segments} segments in "
                f"{self.elapsed:.1f}s ({rate:.1f} segments/s); events acked {self.acked} "
                f"(duplicates {self.duplicates}), errors: {errors}; alerts seen {self.alerts}")


class RateLimiter:
    """Spaces calls evenly at ``rate`` per second overall (no limit when rate <= 0)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def events_for(conversation: dict[str, Any], run_id: str, agent_id: str,
               recording: str) -> list[dict[str, Any]]:
    """The protocol events that replay one corpus conversation."""
    cid = f"{conversation['conversation_id']}-{run_id}"
    customer_id = f"customer-{conversation['conversation_id']}"
    events: list[dict[str, Any]] = [{
        "type": "conversation.started",
        "conversation": {
            "id": cid, "channel": conversation.get("channel", "chat"),
            "queue": conversation.get("queue", "default"), "agent_id": agent_id,
            "customer": {"id": customer_id}, "recording": recording,
            "attributes": {"source": "simulate"},
        },
    }]
    for turn in conversation["turns"]:
        role = "customer" if turn["speaker"] == "customer" else "agent"
        events.append({
            "type": "segment", "conversation_id": cid,
            "segment_id": str(turn.get("id") or turn["seq"]), "role": role,
            "participant_id": customer_id if role == "customer" else agent_id,
            "text": turn["text"], "final": True,
        })
    events.append({"type": "conversation.ended", "conversation_id": cid})
    return events


async def _send(ws: ClientConnection, event: dict[str, Any], report: Report) -> dict[str, Any]:
    await ws.send(json.dumps(event))
    reply: dict[str, Any] = json.loads(await ws.recv())
    if reply["type"] == "ack":
        report.acked += 1
        report.duplicates += reply["status"] == "duplicate"
    else:
        report.errors[reply["code"]] = report.errors.get(reply["code"], 0) + 1
    return reply


async def _worker(url: str, headers: dict[str, str], todo: asyncio.Queue[list[dict[str, Any]]],
                  limiter: RateLimiter, report: Report) -> None:
    async with connect(url, additional_headers=headers, max_size=2**20) as ws:
        await ws.recv()  # hello
        while True:
            try:
                events = todo.get_nowait()
            except asyncio.QueueEmpty:
                return
            for event in events:
                if event["type"] == "segment":
                    await limiter.wait()
                    report.segments += 1
                await _send(ws, event, report)
            report.conversations += 1


async def _watch_alerts(url: str, headers: dict[str, str], report: Report,
                        on_alert: Callable[[dict[str, Any]], None],
                        subscribed: asyncio.Event) -> None:
    async with connect(url, additional_headers=headers) as ws:
        await ws.recv()  # {"type": "subscribed", ...}
        subscribed.set()
        async for raw in ws:
            message = json.loads(raw)
            # What notifies a supervisor: a new alert, or one that got worse.
            if message.get("type") in ("alert.raised", "alert.escalated"):
                report.alerts += 1
                on_alert(message["alert"])


async def simulate(base_url: str, token: str, source: Path, *, rate: float = 20.0,
                   concurrency: int = 8, limit: int | None = None, agents: int = 5,
                   recording: str = "all", watch_token: str | None = None,
                   on_alert: Callable[[dict[str, Any]], None] = lambda alert: None) -> Report:
    ws_base = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    run_id = secrets.token_hex(3)
    todo: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for i, conversation in enumerate(load_corpus(source, limit)):
        todo.put_nowait(events_for(conversation, run_id, f"agent-{i % agents + 1}", recording))
    report, limiter = Report(), RateLimiter(rate)
    watcher = None
    if watch_token:
        subscribed = asyncio.Event()
        watcher = asyncio.create_task(_watch_alerts(
            f"{ws_base}/v1/alerts/stream", {"Authorization": f"Bearer {watch_token}"},
            report, on_alert, subscribed))
        await asyncio.wait([watcher, asyncio.create_task(subscribed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            watcher.result()  # it failed to subscribe: say why
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    await asyncio.gather(*(_worker(f"{ws_base}/v1/ingest", headers, todo, limiter, report)
                           for _ in range(max(1, concurrency))))
    report.elapsed = time.monotonic() - started
    if watcher is not None:
        await asyncio.sleep(0.5)  # the last alerts are pushed right after their acks
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    return report
