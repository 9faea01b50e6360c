"""Stop steps end within their deadline, whatever the work they stop does (the whole
node's stop: tests/test_scale_out.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time

import pytest

from contact_center import stopping


async def _loses_its_first_cancellation() -> None:
    """A loop whose first cancellation is swallowed, as a library's timeout racing it can."""
    lost = False
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True


async def _ignores_cancellation(release: asyncio.Event) -> None:
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)


def test_a_lost_cancellation_is_made_again() -> None:
    async def scenario() -> tuple[bool, float]:
        task = asyncio.create_task(_loses_its_first_cancellation())
        await asyncio.sleep(0.01)
        started = time.monotonic()
        ended = await stopping.cancel([task], "the loop", seconds=2.0)
        return ended and task.cancelled(), time.monotonic() - started

    ended, elapsed = asyncio.run(scenario())
    assert ended and elapsed < 1.5  # (re-cancelled 0.5 s after the lost one; deadline 2 s)


def test_a_task_that_never_ends_is_left_behind_at_the_deadline(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, float]:
        release = asyncio.Event()
        task = asyncio.create_task(_ignores_cancellation(release))
        await asyncio.sleep(0.01)  # (started: a task cancelled before its first step never runs)
        started = time.monotonic()
        ended = await stopping.cancel([task], "the stubborn loop", seconds=0.5)
        elapsed = time.monotonic() - started
        release.set()
        with contextlib.suppress(asyncio.CancelledError):  # (one cancel was still on its way)
            await task
        return ended, elapsed

    with caplog.at_level(logging.WARNING, logger="contact_center.stopping"):
        ended, elapsed = asyncio.run(scenario())
    assert not ended and 0.5 <= elapsed < 1.5
    assert "gave up on the stubborn loop after 0.5 s" in caplog.text


def test_a_step_that_hangs_is_given_up_on_and_said(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, float]:
        started = time.monotonic()
        finished = await stopping.step("waiting for nothing", asyncio.Event().wait(), 0.3)
        return finished, time.monotonic() - started

    with caplog.at_level(logging.WARNING, logger="contact_center.stopping"):
        finished, elapsed = asyncio.run(scenario())
    assert not finished and elapsed < 1.5
    assert "waiting for nothing did not finish within 0.3 s" in caplog.text


def test_a_step_that_fails_is_said_and_the_stop_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ConnectionError("Redis is down")

    with caplog.at_level(logging.WARNING, logger="contact_center.stopping"):
        assert asyncio.run(stopping.step("closing Redis", fails())) is False
    assert "closing Redis failed: ConnectionError('Redis is down')" in caplog.text


def test_the_last_resort_ends_a_process_that_hangs() -> None:
    hangs = ("import time\nfrom contact_center import stopping\n"
             "stopping.exit_if_still_running(0.5)\ntime.sleep(60)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", hangs], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert "stopping took longer than 0.5 s; exiting now" in done.stderr
