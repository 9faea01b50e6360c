"""What live boards cost the server, their pushes one a frame or batched.

Starts `contact-center serve` (embedded) on a throwaway database, opens --boards
unfiltered live boards (`/v1/live?pushes=single|batched`), starts the conversations,
then streams real text into them at the offered rate for --seconds. Prints the server's
CPU per segment and the frames and messages each board received. Run both modes, in
turns, on the same build:

    python bench/boards.py --pushes single && python bench/boards.py --pushes batched
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.console import embedded_service
from bench.load import cpu_seconds, text_pool

INGEST_SOCKETS = 8


async def board(url: str, token: str, counts: dict[str, int]) -> None:
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       max_queue=None, max_size=None) as ws:
        async for raw in ws:
            message = json.loads(raw)
            counts["frames"] += 1
            counts["messages"] += len(message["pushes"]) if message["type"] == "pushes" else 1


async def measure(base: str, connector: str, watcher: str, args: argparse.Namespace,
                  server_pid: int) -> dict[str, Any]:
    texts, counts = text_pool(), {"frames": 0, "messages": 0}
    ws_base = base.replace("http", "ws")
    boards = [asyncio.create_task(board(f"{ws_base}/v1/live?pushes={args.pushes}", watcher,
                                        counts)) for _ in range(args.boards)]
    headers = {"Authorization": f"Bearer {connector}"}
    sockets = [await connect(f"{ws_base}/v1/ingest", additional_headers=headers,
                             max_queue=None) for _ in range(INGEST_SOCKETS)]
    for ws in sockets:
        await ws.recv()
    readers = [asyncio.create_task(_drain(ws)) for ws in sockets]
    for c in range(args.conversations):
        await sockets[c % INGEST_SOCKETS].send(json.dumps({
            "type": "conversation.started", "conversation": {
                "id": f"load-{c}", "queue": f"q{c % 4}", "agent_id": f"agent-{c % 50}"}}))
    await asyncio.sleep(2)
    cpu, frames, messages = cpu_seconds(server_pid), counts["frames"], counts["messages"]
    started, sent = time.perf_counter(), 0
    while (now := time.perf_counter()) - started < args.seconds:
        for _ in range(max(0, int((now - started) * args.rate) - sent)):
            c = sent % args.conversations
            await sockets[c % INGEST_SOCKETS].send(json.dumps({
                "type": "segment", "conversation_id": f"load-{c}", "segment_id": f"s{sent}",
                "role": "customer", "text": texts[sent % len(texts)]}))
            sent += 1
        await asyncio.sleep(0.01)
    await asyncio.sleep(1)  # the last pushes arrive
    report = {"pushes": args.pushes, "boards": args.boards, "segments": sent,
              "achieved_per_s": round(sent / args.seconds),
              "server_cpu_us_per_segment": round(
                  (cpu_seconds(server_pid) - cpu) / max(1, sent) * 1e6),
              "frames_per_board": (counts["frames"] - frames) // args.boards,
              "messages_per_board": (counts["messages"] - messages) // args.boards}
    for task in [*readers, *boards]:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return report


async def _drain(ws: Any) -> None:
    async for _ in ws:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", choices=["single", "batched"], default="batched")
    parser.add_argument("--boards", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000, help="segments per second")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with embedded_service() as (server, base, _, connector, admin):
        report = asyncio.run(measure(base, connector, admin, args, server.pid))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
