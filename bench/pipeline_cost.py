"""What the embedded pipeline costs an event, in-process, by batch size and by how many
conversations the events fall on (issue 28).

Runs the embedded runtime (`contact_center.runtime.Embedded`, default settings: the
default rules, redaction, recording all, the 5 ms commit window) on a throwaway SQLite
database, with no sockets and no load generator on the same cores, and submits real
turns (`bench/load.py`'s text pool) as one source would: K events at once, the next K
once they are all answered, so every batch holds exactly K events. The events fall on
N live conversations at random (a contact center's shape: each turn of a batch on a
conversation of its own once N is much larger than K) or, with N small, on a few.

Reports the CPU each thread spends an event (from /proc: the event loop's thread and the
SQLite writer's), so per-batch costs (K) and per-conversation costs (N) can be told
apart where the suite's timings move 30% from run to run. Stops if any event is
not accepted; asserts nothing about the figures.

    python bench/pipeline_cost.py [--events 20000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import text_pool  # noqa: E402
from contact_center import protocol as p  # noqa: E402
from contact_center.buses import Source  # noqa: E402
from contact_center.cli import run_on_event_loop  # noqa: E402
from contact_center.runtime import Embedded  # noqa: E402
from contact_center.settings import Settings  # noqa: E402
from contact_center.stores.sqlite import SQLiteStore  # noqa: E402
from monitoring.hub import Hub  # noqa: E402

SHAPES = ((16, 13), (256, 13), (16, 1000), (64, 1000), (256, 1000))  # (K, N)
WARMUP = 2_000  # events submitted before the timed part


def thread_cpu_s(native_id: int) -> float:
    """User and system CPU seconds of one thread of this process (Linux)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events(texts: list[str], conversations: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seqs = [0] * conversations
    made = []
    for n in range(count):
        c = rng.randrange(conversations)
        seqs[c] += 1
        made.append(json.dumps({
            "type": "segment", "conversation_id": f"c{c}", "segment_id": f"s{seqs[c]}",
            "role": "customer" if n % 2 else "agent", "participant_id": f"p{n % 2}",
            "text": texts[(n * 7919) % len(texts)]}))
    return made


async def measure(size: int, conversations: int, count: int, texts: list[str],
                  seed: int) -> tuple[float, float]:
    """(loop thread, writer thread) CPU µs an event, batches of ``size``."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "cc.db")
        await store.open()
        runtime = await Embedded.start(Settings(database=str(Path(tmp) / "cc.db")),
                                       store, Hub(queue_size=100_000))
        try:
            source = Source()

            async def submit(raws: list[str]) -> None:
                """Each batch, answered; stop at a reply other than an accepted ack (a
                refused batch would cost less and be measured as if it were done)."""
                for start in range(0, len(raws), size):
                    pending = [await runtime.bus.submit(p.parse_event(raw), source, None)
                               for raw in raws[start:start + size]]
                    for reply in await asyncio.gather(*pending):
                        if not (isinstance(reply, p.Ack) and reply.status == "accepted"):
                            raise SystemExit(f"not accepted: {reply!r}")

            await submit([json.dumps({"type": "conversation.started", "conversation": {
                "id": f"c{c}", "channel": "chat", "queue": "billing", "agent_id": "a1"}})
                for c in range(conversations)])
            work = events(texts, conversations, WARMUP + count, seed)
            await submit(work[:WARMUP])
            writer = next(t.native_id for t in threading.enumerate()
                          if t.name.startswith("sqlite-writer"))
            assert writer is not None
            loop = threading.get_native_id()
            loop_cpu, writer_cpu = thread_cpu_s(loop), thread_cpu_s(writer)
            await submit(work[WARMUP:])
            return ((thread_cpu_s(loop) - loop_cpu) / count * 1e6,
                    (thread_cpu_s(writer) - writer_cpu) / count * 1e6)
        finally:
            await runtime.stop()
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="timed events a shape")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    texts = text_pool()
    print(f"{args.events:,} events a shape after {WARMUP:,}; {len(texts):,} texts; "
          f"CPU µs an event (median of {args.repeat})")
    print("| events a batch (K) | conversations (N) | event loop thread | SQLite writer | both |")
    print("|---|---|---|---|---|")
    for size, conversations in SHAPES:
        runs = [run_on_event_loop(measure(size, conversations, args.events, texts, seed))
                for seed in range(args.repeat)]
        loop_us = statistics.median(r[0] for r in runs)
        writer_us = statistics.median(r[1] for r in runs)
        print(f"| {size} | {conversations:,} | {loop_us:.0f} | {writer_us:.0f} | "
              f"{loop_us + writer_us:.0f} |", flush=True)


if __name__ == "__main__":
    main()
