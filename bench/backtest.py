"""Backtest speed: rules run over 10,000 recorded conversations.

Builds a throwaway SQLite database of recorded conversations made from the twitter-care
corpus (../shared/data): each of --turns consecutive turns of the corpus (contact-center
chats run longer than tweets), one in ten recorded under policy "none" so word rules have
something they cannot judge. Then it times, for
several rules: loading the history, the backtest as the API runs it, and, in the same
run, the ceiling it is compared with: replaying every conversation event by event
without the numpy narrowing. Reports what it measured; asserts nothing.

    python bench/backtest.py --conversations 10000 --turns 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.backtest import backtest, run  # noqa: E402
from analytics.quality import load_corpus  # noqa: E402
from analytics.rolling import RollingConfig  # noqa: E402
from analytics.rules import (  # noqa: E402
    AnyRule,
    KeywordRule,
    ResponseTimeRule,
    SentimentDropRule,
    SentimentRule,
    SignalRule,
)
from analytics.scoring import Scorer  # noqa: E402
from contact_center.stores import HistoryQuery, SegmentRow, WriteBatch  # noqa: E402
from contact_center.stores.sqlite import SQLiteStore  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "twitter-care" / "conversations.jsonl"

RULES: list[tuple[AnyRule, AnyRule | None]] = [
    (SentimentRule(id="negative-sentiment", below=-0.5, consecutive=2),
     SentimentRule(id="negative-sentiment", below=-0.4, consecutive=2)),
    (SentimentRule(id="very-negative-turn", metric="turn", below=-0.75, consecutive=1), None),
    (SentimentDropRule(id="sentiment-drop", metric="turn", drop=1.0), None),
    (ResponseTimeRule(id="slow-response", seconds=120), None),
    (KeywordRule(id="escalation-phrases", phrases=["supervisor", "manager", "complaint"]),
     None),
    (SignalRule(id="churn", any_of=["churn", "threat"]),
     SignalRule(id="churn", any_of=["churn"])),
]


async def build(path: Path, conversations: int, turns: int) -> int:
    corpus = load_corpus(CORPUS)
    scorer = Scorer()
    scores = {t["text"]: scorer.score(t["text"]).as_dict()
              for c in corpus for t in c["turns"]}
    stream = [(c["queue"], t) for c in corpus for t in c["turns"]]
    store = SQLiteStore(path, synchronous="OFF")
    await store.open()
    segments = 0
    batch = WriteBatch()
    clock = 1_700_000_000.0
    for n in range(conversations):
        first = n * turns % len(stream)
        queue = stream[first][0]
        cid = f"bench-{n}"
        recording = "none" if n % 10 == 9 else "all"
        started = clock
        for seq in range(1, turns + 1):
            turn = stream[(first + seq - 1) % len(stream)][1]
            role = "customer" if turn["speaker"] == "customer" else "agent"
            clock += 45.0 if role == "customer" else 150.0
            batch.segments.append(SegmentRow(
                conversation_id=cid, segment_id=str(seq), seq=seq, role=role,
                participant_id=role, text=turn["text"] if recording == "all" else None,
                scores=scores[turn["text"]], started_at=None, ended_at=None,
                received_at=clock))
            segments += 1
        clock += 60.0
        batch.conversations[cid] = (
            {"id": cid, "channel": "chat", "queue": queue, "agent_id": "agent-1",
             "customer": {}, "recording": recording, "attributes": {}, "status": "ended",
             "started_at": started, "ended_at": clock, "updated_at": clock}, {})
        if len(batch.conversations) >= 1000:
            await store.write(batch)
            batch = WriteBatch()
    await store.write(batch)
    await store.close()
    return segments


async def measure(path: Path, repeat: int) -> list[dict[str, Any]]:
    store = SQLiteStore(path)
    await store.open()
    rolling = RollingConfig()
    rows = []
    try:
        for rule, current in RULES:
            best: dict[str, float] = {}
            for _ in range(repeat):
                t0 = time.perf_counter()
                # As the API loads it with its default 5 samples: with the recorded words.
                history = await store.load_history(HistoryQuery(with_text=True, limit=10**6))
                t1 = time.perf_counter()
                result = backtest(rule, history, rolling, current)
                t2 = time.perf_counter()
                full = run(rule, history, rolling, narrow=False)
                t3 = time.perf_counter()
                for key, value in (("load", t1 - t0), ("backtest", t2 - t1),
                                   ("replay_all", t3 - t2)):
                    best[key] = min(best.get(key, value), value)
            rows.append({
                "rule": rule.id, "kind": rule.kind, "compared": current is not None,
                "conversations": result["conversations"],
                "judged": result["conversations_judged"],
                "not_judged": result["conversations_not_judged"],
                "replayed": result["conversations_replayed"], "alerts": result["alerts"],
                "same_as_full_replay": full.alerts == run(rule, history, rolling).alerts,
                "load_s": round(best["load"], 3), "backtest_s": round(best["backtest"], 3),
                "total_s": round(best["load"] + best["backtest"], 3),
                "replay_all_s": round(best["replay_all"], 3),
                "narrowing_speedup": round(best["replay_all"]
                                           / max(run_time(best, current), 1e-9), 2),
            })
    finally:
        await store.close()
    return rows


def run_time(best: dict[str, float], current: AnyRule | None) -> float:
    """The backtest's own replay time for one rule (a comparison runs two)."""
    return best["backtest"] / (2 if current is not None else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=20, help="turns per conversation")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backtest.db"
        t0 = time.perf_counter()
        segments = asyncio.run(build(path, args.conversations, args.turns))
        print(f"built {args.conversations} conversations, {segments} segments "
              f"in {time.perf_counter() - t0:.1f}s")
        rows = asyncio.run(measure(path, args.repeat))
    header = ("rule", "kind", "judged", "not_judged", "replayed", "alerts", "load_s",
              "backtest_s", "total_s", "replay_all_s", "narrowing_speedup",
              "same_as_full_replay")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {platform.python_implementation()} "
                         f"{platform.python_version()}",
              "command": " ".join(sys.argv), "conversations": args.conversations,
              "segments": segments, "rows": rows}
    out = ROOT / "bench" / "results" / f"backtest-{report['date'][:10]}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
