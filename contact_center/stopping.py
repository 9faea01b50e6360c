"""Stopping that always ends (docs/operations.md#stopping).

Every step of a stop gets a deadline, and what it gave up on is said in the log: a
dependency that is down, or a task whose cancellation a library lost in a race, must
not keep a process alive that was told to stop. Past them all, a watchdog ends the
process (`exit_if_still_running`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger(__name__)

STEP_SECONDS = 3.0  # one step of a stop, at most (docs/operations.md#stopping)
CANCEL_GRACE_SECONDS = 0.5  # ... and to cancel a step that overran
WORST_CASE_SECONDS = 30.0  # from SIGTERM to exit, whatever happens (documented)
WATCHDOG_SECONDS = WORST_CASE_SECONDS - 0.5
CLOSE_DATABASE_SECONDS = 2.5
_RECANCEL_SECONDS = 0.5  # long enough for a task's own clean-up (a release, a close)


async def cancel(tasks: Iterable[asyncio.Future[Any]], what: str,
                 seconds: float = STEP_SECONDS) -> bool:
    """Cancel ``tasks`` and wait at most ``seconds`` for them to end; whether they did.

    They are cancelled again every 0.5 s meanwhile: a cancellation can be lost inside a
    library (a timeout that fires as it arrives swallows it), and a loop that lost it
    runs on. Those still running at the deadline are left behind, and logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    running = {task for task in tasks if not task.done()}  # (the others: told already)
    pending = set(running)
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(
            pending, timeout=min(_RECANCEL_SECONDS, max(0.0, deadline - loop.time())))
    for task in running - pending:
        if not task.cancelled() and task.exception() is not None:
            log.warning("stopping: %s failed: %r", what, task.exception())
    if pending:
        log.warning("stopping: gave up on %s after %g s (%d task(s) left running)", what,
                    seconds, len(pending))
    return not pending


async def step(what: str, work: Awaitable[Any], seconds: float = STEP_SECONDS) -> bool:
    """Run one step of a stop for at most ``seconds``; whether it finished. One that does
    not is cancelled (see `cancel`) and logged; so is one that fails."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        log.warning("stopping: %s did not finish within %g s; cancelling it", what, seconds)
        await cancel([task], what, CANCEL_GRACE_SECONDS)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("stopping: %s failed: %r", what, task.exception())
        return False
    return True


def exit_if_still_running(seconds: float = WATCHDOG_SECONDS) -> None:
    """Arm the last resort of a stop: end the process if it still runs ``seconds`` from
    now (a daemon thread: it never delays an exit)."""

    def expire() -> None:
        log.critical("stopping took longer than %g s; exiting now", seconds)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
