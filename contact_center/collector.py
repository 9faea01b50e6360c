"""The garbage collector's policy for a process holding much live state.

CPython's full collections walk every tracked object. With 100,000 live conversations
that is millions of objects and a pause of about a second (measured in
bench/README.md#suite-issue-16), during which no event is answered. Almost all of that
state lives long and is freed by reference counting, never by the collector. So what
survives a young collection (generation 0 or 1: that is where cyclic garbage is found)
is frozen out of every later collection at once (``gc.freeze``: a constant-time list
splice), and every second the young generations are collected and frozen anyway. No
collection then walks an object twice: generation 1 collections, which walked the last
second's survivors again (4 ms each, up to 11, two or three a second at 2,000
segments/s), have nothing left to walk.

The cost: a reference cycle that becomes garbage after it was frozen (a closed socket's
handler, say; at load, anything that lived through a young collection, tens of
milliseconds) is not reclaimed by the young collections. (Applying segments makes none:
at 2,000 segments/s no collection found any. Opening sockets does: 10,000 of them left
about 22 MB more until the full collection.) So every FULL_SECONDS
everything is unfrozen and collected once, fully: one pause of the old kind every few
minutes instead of many, and nothing kept for longer than that."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

FREEZE_SECONDS = 1.0  # (5 s let 10,000 sockets pile up enough for 0.3 s full collections)
FULL_SECONDS = 300.0


def freeze_survivors() -> None:
    gc.collect(1)
    gc.freeze()


def collect_everything() -> None:
    """Unfreeze, collect fully (what was frozen and has since become garbage), refreeze."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _freeze_young_survivors(phase: str, info: dict[str, Any]) -> None:
    """A collector callback: freeze what survived a young collection."""
    if phase == "stop" and info["generation"] < 2:
        gc.freeze()


async def keep_long_lived_state_frozen(period: float = FREEZE_SECONDS,
                                       full_every: float = FULL_SECONDS) -> None:
    """Forever: freeze what survives each young collection, every ``period`` seconds
    `freeze_survivors`, and every ``full_every`` seconds `collect_everything` instead."""
    loop = asyncio.get_running_loop()
    full_at = loop.time() + full_every
    gc.callbacks.append(_freeze_young_survivors)
    try:
        while True:
            await asyncio.sleep(period)
            if loop.time() >= full_at:
                full_at = loop.time() + full_every
                collect_everything()
            else:
                freeze_survivors()
    finally:
        gc.callbacks.remove(_freeze_young_survivors)
