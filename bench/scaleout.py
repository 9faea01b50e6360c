"""The scale-out deployment beside the embedded one, in the same run: one API node with
1 and then 2 pipeline workers (Redis Streams, PostgreSQL), and the embedded server on
SQLite and on PostgreSQL, under the same load (`load.py`). Each run gets a fresh
database (and Redis); every figure is measured here, on this machine, back to back.

    python bench/scaleout.py --conversations 1000 --turns 20 --connections 8 --window 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from load import ROOT, measure, start_redis, throwaway_database  # type: ignore[import-not-found]

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--postgres", default=POSTGRES, metavar="URL")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        reports.append(measure(args, str(Path(tmp) / "bench.db")))
    with throwaway_database(args.postgres) as db:
        assert db is not None
        reports.append(measure(args, db))
    for workers in (1, 2):
        with throwaway_database(args.postgres) as db, tempfile.TemporaryDirectory() as tmp:
            assert db is not None
            redis, url = start_redis(tmp)
            try:
                reports.append(measure(args, db, url, workers))
            finally:
                redis.terminate()
                redis.wait(10)
    print("| deployment | store | segments/s | ack p50 / p99 ms | alerts (stored) "
          "| ingest→alert p50 / p99 ms | errors | CPU s by process |")
    print("|---|---|---|---|---|---|---|---|")
    embedded = reports[0]["segments_per_s"]
    for r in reports:
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items())
        print(f"| {r['deployment']} | {r['store']} | {r['segments_per_s']:,.0f} "
              f"({r['segments_per_s'] / embedded:.2f}x) | {r['ack_latency_ms']['p50']} / "
              f"{r['ack_latency_ms']['p99']} | {r['alerts']} ({r['stored_alerts']}) | "
              f"{r['ingest_to_alert_ms']['p50']} / {r['ingest_to_alert_ms']['p99']} | "
              f"{r['errors']} | {cpu} |")
    out = args.out or ROOT / "bench" / "results" / (
        f"scaleout-{datetime.now(UTC):%Y-%m-%d}-{args.window}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
