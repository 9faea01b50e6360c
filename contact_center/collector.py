"""The garbage collector's policy for a process holding much live state.

CPython's full collections walk every tracked object. With 100,000 live conversations
that is millions of objects and a pause of about a second (measured in
bench/README.md#suite-issue-16), during which no event is answered. Almost all of that
state lives long and is freed by reference counting, never by the collector. So every
second the young generations are collected (cheap: that is where cyclic garbage
is found) and what survived is frozen out of every later collection (``gc.freeze``:
a constant-time list splice). Full collections then walk only what is new since.

The cost: a reference cycle that becomes garbage after it was frozen (a closed socket's
handler, say) is not reclaimed by the young collections. So every FULL_SECONDS
everything is unfrozen and collected once, fully: one pause of the old kind every few
minutes instead of many, and nothing kept for longer than that.
"""

from __future__ import annotations

import asyncio
import gc
import logging

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


async def keep_long_lived_state_frozen(period: float = FREEZE_SECONDS,
                                       full_every: float = FULL_SECONDS) -> None:
    """Forever: every ``period`` seconds `freeze_survivors`, and every ``full_every``
    seconds `collect_everything` instead."""
    loop = asyncio.get_running_loop()
    full_at = loop.time() + full_every
    while True:
        await asyncio.sleep(period)
        if loop.time() >= full_at:
            full_at = loop.time() + full_every
            collect_everything()
        else:
            freeze_survivors()
