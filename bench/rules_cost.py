"""What reading a turn costs the rules, next to scoring it: per customer turn, on one
core, over every real text under ../shared/data, the fast VADER scorer (cache off), the
signals (`signals.detect`), the phrase automaton of the default rules, and the whole
default rule set (`rules.evaluate`, signals included); then the same texts as an agent's
turns, which the default rules read for profanity alone. Each figure is the best of
--repeat rounds, taken in turns within a round; ratios are to VADER in the same run.
Writes bench/results/rules_cost.json.

    python bench/rules_cost.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics import signals  # noqa: E402
from analytics.default_rules import DEFAULT_RULES  # noqa: E402
from analytics.fast_vader import FastAnalyzer  # noqa: E402
from analytics.replay import fresh  # noqa: E402
from analytics.rolling import RollingConfig  # noqa: E402
from analytics.rules import Turn, evaluate  # noqa: E402
from analytics.scoring import Scorer  # noqa: E402
from bench.scorer import pin_to_one_core  # noqa: E402
from tests.test_fast_vader import SHARED_DATA, corpus_texts  # noqa: E402


def per_turn(work: Callable[[str], object], texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        work(text)
    return (time.perf_counter() - start) / len(texts)


def engines(texts: list[str]) -> dict[str, Callable[[str], object]]:
    scores = dict(zip(texts, Scorer().score_many(texts), strict=True))
    conv = fresh("bench", "q", "chat", "agent", RollingConfig())
    states: dict = {}

    def rule_set(text: str, role: str = "customer") -> object:
        states.clear()  # (each turn judged afresh: no cooldown hides the work)
        turn = Turn("s", role, "c", text, scores[text], 0.0)
        if role == "customer":
            conv.rolling.add(scores[text].compound)
        return evaluate(DEFAULT_RULES, states, turn, conv)

    agent_signals = DEFAULT_RULES.signals_for("agent")
    return {
        "vader": FastAnalyzer(cache_size=0).polarity_scores,
        "signals": signals.detect,
        "phrases": DEFAULT_RULES.phrase_index.find,
        "rule_set": rule_set,
        # The same texts as an agent's: the default rules read them for profanity alone.
        "signals_agent": lambda text: signals.detect(text, True, agent_signals),
        "rule_set_agent": lambda text: rule_set(text, "agent"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pinned = pin_to_one_core()
    texts = [t for texts in corpus_texts(SHARED_DATA).values() for t in texts]
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, work in engines(texts).items():
            best[name] = min(best.get(name, float("inf")), per_turn(work, texts))
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
        "python": platform.python_version(), "cpu": pinned, "texts": len(texts),
        "microseconds_per_turn": {k: round(v * 1e6, 1) for k, v in best.items()},
        "ratio_to_vader": {k: round(v / best["vader"], 2) for k, v in best.items()},
    }
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "rules_cost.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
