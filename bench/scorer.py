"""Scorer speed and sameness: analytics.fast_vader against vaderSentiment 3.3.2.

First checks that the fast scorer gives exactly the reference's four numbers on EVERY
text of every corpus under ../shared/data (exit status 1, and the texts, on any
difference). Then times, on the same texts and one core, texts per second of:
the reference (``SentimentIntensityAnalyzer.polarity_scores``), the fast scorer with
its cache off, with its cache on (cold: a fresh cache, one pass; warm: a second pass),
and the two ``Scorer`` engines as the pipeline calls them. Each figure is the best of
--repeat rounds; the engines take turns within a round, so machine load hits all alike.
Writes bench/results/scorer.json.

    python bench/scorer.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: E402

from analytics.fast_vader import FastAnalyzer  # noqa: E402
from analytics.scoring import Scorer  # noqa: E402
from tests.test_fast_vader import SHARED_DATA, corpus_texts, mismatches  # noqa: E402

TARGET = 3.0  # fast, cache off, against the reference (issue 16)


def check_sameness(corpora: dict[str, list[str]]) -> int:
    """Every text of every corpus, fast against reference; returns the mismatch count."""
    reference = SentimentIntensityAnalyzer()
    fast = FastAnalyzer(cache_size=0)
    total = 0
    for name, texts in corpora.items():
        found = mismatches(texts, fast, reference)
        total += len(found)
        print(f"sameness {name}: {len(texts)} texts, {len(found)} mismatches")
        for text, expected, got in found[:20]:
            print(f"  MISMATCH {text!r}\n    reference {expected}\n    fast      {got}")
    return total


def timed(score: Callable[[str], object], texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        score(text)
    return time.perf_counter() - start


def engines() -> dict[str, Callable[[], Callable[[str], object]]]:
    """Name -> a factory of a fresh scoring function (fresh, so caches start cold)."""
    return {
        "reference": lambda: SentimentIntensityAnalyzer().polarity_scores,
        "fast": lambda: FastAnalyzer(cache_size=0).polarity_scores,
        "fast_cache_cold": lambda: FastAnalyzer().polarity_scores,
        "scorer_reference": lambda: Scorer(engine="reference").score,
        "scorer_fast": lambda: Scorer(engine="fast").score,
    }


def measure(texts: list[str], repeat: int) -> dict[str, float]:
    """Best seconds per engine over ``repeat`` rounds; the warm cache is timed as a second
    pass of the cold one."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, factory in engines().items():
            score = factory()
            seconds = timed(score, texts)
            best[name] = min(best.get(name, seconds), seconds)
            if name == "fast_cache_cold":
                warm = timed(score, texts)
                best["fast_cache_warm"] = min(best.get("fast_cache_warm", warm), warm)
    return best


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    return "not pinned (no sched_setaffinity)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--skip-timing", action="store_true", help="sameness check only")
    args = parser.parse_args()

    if not args.data.is_dir():
        sys.exit(f"no corpora at {args.data}")
    corpora = corpus_texts(args.data)
    texts = [t for ts in corpora.values() for t in ts]
    mismatched = check_sameness(corpora)
    print(f"sameness: {len(texts)} texts from {len(corpora)} corpus files, "
          f"{mismatched} mismatches")
    if mismatched:
        sys.exit(1)
    if args.skip_timing:
        return

    pinning = pin_to_one_core()
    per_corpus: dict[str, dict[str, Any]] = {}
    for name, corpus in corpora.items():
        seconds = measure(corpus, args.repeat)
        per_corpus[name] = {
            "texts": len(corpus),
            "texts_per_s": {k: round(len(corpus) / s) for k, s in seconds.items()},
            "seconds": seconds,
        }
    overall = {k: sum(c["seconds"][k] for c in per_corpus.values())
               for k in next(iter(per_corpus.values()))["seconds"]}
    rates = {k: len(texts) / s for k, s in overall.items()}
    ratios = {k: round(rates[k] / rates["reference"], 2) for k in rates if k != "reference"}
    ratios["scorer_fast_vs_scorer_reference"] = round(
        rates["scorer_fast"] / rates["scorer_reference"], 2)

    print(f"\ntiming ({pinning}, best of {args.repeat}):")
    print(f"{'corpus':<52} {'texts':>6} " + " ".join(f"{k:>16}" for k in rates))
    for name, c in per_corpus.items():
        print(f"{name:<52} {c['texts']:>6} "
              + " ".join(f"{c['texts_per_s'][k]:>14}/s" for k in rates))
    print(f"{'all':<52} {len(texts):>6} " + " ".join(f"{round(r):>14}/s" for r in rates.values()))
    print("\nspeed-up over the reference: "
          + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    met = ratios["fast"] >= TARGET
    print(f"target: fast (cache off) >= {TARGET}x the reference: {'met' if met else 'NOT met'}")

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "python": f"{platform.python_implementation()} "
                              f"{platform.python_version()}",
                    "pinning": pinning},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "sameness": {"texts": len(texts), "corpus_files": len(corpora), "mismatches": 0},
        "repeat": args.repeat,
        "texts_per_s": {k: round(r) for k, r in rates.items()},
        "speedup_over_reference": ratios,
        "target": {"fast_over_reference": TARGET, "met": met},
        "per_corpus": {k: {"texts": c["texts"], "texts_per_s": c["texts_per_s"]}
                       for k, c in per_corpus.items()},
    }
    out = ROOT / "bench" / "results" / "scorer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
