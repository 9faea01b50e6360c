"""Run a Python module as ``python -m`` would, logging the garbage collector's pauses:
``python bench/gc_probe.py OUT.json -m contact_center serve ...``.

OUT.json holds every pause of a full (generation 2) collection and every pause of 1 ms or
more, as ``[generation, start, seconds, collected]`` rows, and every quarter second a
running total per generation, ``[time, [count0, count1, count2], [seconds0, ...],
[collected0, ...]]`` (collected: the unreachable objects it freed); times
are ``time.perf_counter()``'s (CLOCK_MONOTONIC, shared by the processes of a machine), so
that bench/suite.py can take what fell inside its timed window. It is rewritten every
quarter second from a thread, because uvicorn ends on SIGTERM by raising the signal again
after its graceful shutdown, so exit handlers do not run. A diagnostic: the callbacks
cost about a microsecond per collection.
"""

from __future__ import annotations

import gc
import json
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

LONG = 0.001  # seconds: pauses this long are logged one by one

pauses: list[tuple[int, float, float, int]] = []
totals: list[tuple[float, list[int], list[float], list[int]]] = []
counts, seconds, collected = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0]
_began = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _began[0] = time.perf_counter()
        return
    took = time.perf_counter() - _began[0]
    generation = info["generation"]
    counts[generation] += 1
    seconds[generation] += took
    collected[generation] += info.get("collected", 0)
    if generation == 2 or took >= LONG:
        pauses.append((generation, _began[0], took, info.get("collected", 0)))


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit(__doc__)
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    # As `python -m` would: the working directory first, not this script's own (bench/
    # holds an analytics.py that would stand in for the analytics package).
    sys.path[0] = str(Path.cwd())

    def every_quarter_second() -> None:
        partial = out.with_suffix(".partial")
        while True:
            time.sleep(0.25)
            totals.append((time.perf_counter(), counts[:], seconds[:], collected[:]))
            partial.write_text(json.dumps({"thresholds": gc.get_threshold(),
                                           "pauses": pauses[:], "totals": totals[:]}))
            partial.replace(out)

    threading.Thread(target=every_quarter_second, daemon=True, name="gc-probe").start()
    gc.callbacks.append(_callback)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
