"""The retention job (docs/security.md#retention-and-erasure): remove the words of the
ended conversations past their queue's retention (`monitoring.retention` decides which),
a bounded transaction at a time so the writer is never held long, and record each run
that removed something in the audit log (``retention.run``).

Every API node runs it (`contact_center.runtime`), every ``retention_interval_seconds``
from its start; ``contact-center retention run`` runs it once. Running it on several
nodes at once is safe: a conversation's words are removed once (the mark makes the next
run skip it; PostgreSQL hands nodes different conversations), and a run that finds
nothing due records nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from contact_center.stores import Removed, Store
from monitoring.audit import OK, make_entry
from monitoring.retention import RetentionPolicy, due

log = logging.getLogger(__name__)

BATCH = 500  # conversations per transaction
SYSTEM_ACTOR = "system"  # who the audit log says ran the periodic job

Clock = Callable[[], float]


async def run_once(store: Store, policy: RetentionPolicy, clock: Clock = time.time,
                   actor: str = SYSTEM_ACTOR, source: str | None = None,
                   batch: int = BATCH) -> Removed:
    """Remove the words of every conversation due at ``clock()`` now, ``batch`` at a
    time; what was removed (recorded in the audit log when anything was)."""
    selections = due(policy, clock())
    removed = Removed()
    while selections:
        step = await store.remove_words(selections, clock(), batch)
        removed.add(step)
        if len(step.conversations) < batch:
            break
    if removed.conversations:
        log.info("retention removed the words of %d conversations",
                 len(removed.conversations))
        await store.append_audit([make_entry(
            clock(), actor, "retention.run", None, None, OK, source, None,
            removed.counts() | {"retention_days": policy.default_days,
                                "retention_by_queue": dict(policy.by_queue)})])
    return removed


async def keep_running(store: Store, policy: RetentionPolicy, interval: float,
                       clock: Clock = time.time) -> None:
    """Run it now, then every ``interval`` seconds, until cancelled; a failed run (the
    database down) is logged and tried again at the next."""
    while True:
        try:
            await run_once(store, policy, clock)
        except Exception:
            log.exception("the retention run failed; the next one, in %g s, goes on "
                          "where it stopped", interval)
        await asyncio.sleep(interval)
