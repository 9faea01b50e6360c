"""The garbage collector's policy for a process holding much live state.

CPython's full collections walk every tracked object. With 100,000 live conversations
that is millions of objects and a pause of about a second (measured in
bench/README.md#suite-issue-16), during which no event is answered. Almost all of that
state lives long and is freed by reference counting, never by the collector. So every
few seconds the young generations are collected (cheap: that is where cyclic garbage
is found) and what survived is frozen out of every later collection (``gc.freeze``:
a constant-time list splice). Full collections then walk only what is new since.

The cost: a reference cycle that became garbage only after it was frozen is not
reclaimed. Our live state holds no cycles (conversations are freed by reference
counting when they end), and cycles made while serving die young.
"""

from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger(__name__)

FREEZE_SECONDS = 5.0


def freeze_survivors() -> None:
    gc.collect(1)
    gc.freeze()


async def keep_long_lived_state_frozen(period: float = FREEZE_SECONDS) -> None:
    """Forever: every ``period`` seconds, `freeze_survivors`."""
    while True:
        await asyncio.sleep(period)
        freeze_survivors()
