"""The alert sequencer's order when events arrive out of order or the store fails, and the
pure webhook rules (which addresses may be called, retry delays)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from monitoring import alert_stream, codec
from monitoring.alert_stream import AlertEvents, AlertSequencer
from monitoring.hub import Hub
from monitoring.messages import ALERT_EVENTS_TOPIC, ALERTS_TOPIC
from monitoring.webhooks import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    allowed_networks,
    refused_address,
    retry_delay,
)


def event(event_id: int) -> dict[str, Any]:
    return {"type": "alert.updated", "event_id": event_id,
            "alert": {"agent_id": "a1", "queue": "q", "id": "x"}}


class Log:
    """The store's alert events, as committed (a list), able to fail."""

    def __init__(self, ids: list[int]) -> None:
        self.events = [event(i) for i in ids]
        self.failing = False

    async def alert_events_after(self, after: int, limit: int) -> AlertEvents:
        if self.failing:
            raise OSError("the database is down")
        return AlertEvents([e for e in self.events if e["event_id"] > after][:limit], 0)

    async def newest_alert_event(self) -> int:
        return max((e["event_id"] for e in self.events), default=0)

    async def prune_alert_events(self, before: float) -> int:
        return 0


async def waiting(sequencer: AlertSequencer) -> None:
    """Until the sequencer's task waits for the next event."""
    for _ in range(100):
        if sequencer._waiting is not None:
            return
        await asyncio.sleep(0)
    raise AssertionError("the sequencer never waited for an event")


def test_events_out_of_order_wait_for_the_store_and_a_failing_store_asks_for_resync() -> None:
    async def scenario() -> list[Any]:
        hub, log = Hub(), Log([1, 2, 3, 4, 5])
        sequencer = AlertSequencer(hub, log, keep_seconds=3600)
        await sequencer.start()
        sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: True)
        log.events += [event(6), event(7), event(8)]  # committed; 8 published first
        log.failing = True
        hub.publish(ALERT_EVENTS_TOPIC, event(8), number=8)
        received = [await asyncio.wait_for(sub.next(), 5)]  # a resync, not event 8
        assert sequencer.delivered == 5 and not sequencer.tasks[0].done()
        log.failing = False  # the next look at the store passes 6, 7, 8 on, in order
        received += [await asyncio.wait_for(sub.next(), 5) for _ in range(3)]
        hub.publish(ALERT_EVENTS_TOPIC, event(8), number=8)  # late: already passed on
        hub.publish(ALERT_EVENTS_TOPIC, event(9), number=9)
        log.events.append(event(9))
        received.append(await asyncio.wait_for(sub.next(), 5))
        for task in sequencer.tasks:
            task.cancel()
        return received

    received = asyncio.run(scenario())
    assert json.loads(received[0].text)["type"] == "resync"
    assert [m.number for m in received[1:]] == [6, 7, 8, 9]
    assert [codec.loads(m.text)["event_id"] for m in received[1:]] == [6, 7, 8, 9]


def test_the_next_event_in_order_is_passed_on_in_the_publishers_call() -> None:
    async def scenario() -> None:
        hub, log = Hub(), Log([1, 2])
        sequencer = AlertSequencer(hub, log, keep_seconds=3600)
        await sequencer.start()
        sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: True)
        told: list[int] = []
        sequencer.listeners.append(lambda: told.append(sequencer.delivered))
        await waiting(sequencer)
        for i in (3, 4):
            log.events.append(event(i))
            hub.publish(ALERT_EVENTS_TOPIC, event(i), number=i)
            # No task ran in between: the stream's subscribers have it already.
            assert sequencer.delivered == i and sub.queue.qsize() == i - 2
        assert told == [3, 4]
        assert [m.number for m in (sub.queue.get_nowait(), sub.queue.get_nowait())] == [3, 4]
        for task in sequencer.tasks:
            task.cancel()

    asyncio.run(scenario())


def test_events_passed_on_at_once_spare_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is asked for what nobody published after POLL_SECONDS without an event,
    not every POLL_SECONDS while events come."""
    monkeypatch.setattr(alert_stream, "POLL_SECONDS", 0.2)

    class CountingLog(Log):
        reads = 0

        async def alert_events_after(self, after: int, limit: int) -> AlertEvents:
            self.reads += 1
            return await super().alert_events_after(after, limit)

    async def scenario() -> tuple[int, int]:
        hub, log = Hub(), CountingLog([1])
        sequencer = AlertSequencer(hub, log, keep_seconds=3600)
        await sequencer.start()
        await waiting(sequencer)
        for i in range(2, 22):  # an event every 50 ms for a second: 5 polls' worth
            log.events.append(event(i))
            hub.publish(ALERT_EVENTS_TOPIC, event(i), number=i)
            await asyncio.sleep(0.05)
        reads_meanwhile = log.reads
        await asyncio.sleep(0.5)  # then none: the store is asked again
        for task in sequencer.tasks:
            task.cancel()
        assert sequencer.delivered == 21
        return reads_meanwhile, log.reads

    meanwhile, after = asyncio.run(scenario())
    assert meanwhile == 0 and after >= 1


def test_an_event_in_order_waits_while_the_store_is_read() -> None:
    """No event twice: one that comes in order while the sequencer reads the store (for
    one that came ahead of it) waits for that read, which passes it on."""
    class SlowLog(Log):
        def __init__(self, ids: list[int]) -> None:
            super().__init__(ids)
            self.reading, self.go_on = asyncio.Event(), asyncio.Event()

        async def alert_events_after(self, after: int, limit: int) -> AlertEvents:
            self.reading.set()
            await self.go_on.wait()
            return await super().alert_events_after(after, limit)

    async def scenario() -> list[int]:
        hub, log = Hub(), SlowLog([1, 2])
        sequencer = AlertSequencer(hub, log, keep_seconds=3600)
        await sequencer.start()
        sub = hub.subscribe(ALERTS_TOPIC, accept=lambda meta: True)
        await asyncio.sleep(0)
        log.events += [event(3), event(4)]
        hub.publish(ALERT_EVENTS_TOPIC, event(4), number=4)  # ahead of 3: to the store
        await asyncio.wait_for(log.reading.wait(), 5)
        hub.publish(ALERT_EVENTS_TOPIC, event(3), number=3)  # in order, but a read is on
        assert sequencer.delivered == 2 and sub.queue.empty()
        log.go_on.set()
        received = [(await asyncio.wait_for(sub.next(), 5)) for _ in range(2)]
        log.events.append(event(5))
        hub.publish(ALERT_EVENTS_TOPIC, event(5), number=5)
        received.append(await asyncio.wait_for(sub.next(), 5))
        for task in sequencer.tasks:
            task.cancel()
        return [m.number for m in received if m is not None]

    assert asyncio.run(scenario()) == [3, 4, 5]


@pytest.mark.parametrize(("address", "refused"), [
    ("93.184.216.34", False), ("2606:2800:220:1::1", False),
    ("127.0.0.1", True), ("10.0.0.7", True), ("192.168.1.1", True), ("172.16.0.1", True),
    ("169.254.169.254", True), ("::1", True), ("fe80::1", True), ("fc00::1", True),
    ("0.0.0.0", True), ("224.0.0.1", True), ("::ffff:127.0.0.1", True),
    ("100.64.0.1", True), ("64:ff9b::a9fe:a9fe", True), ("64:ff9b::a00:5", True),
    ("64:ff9b::5db8:d822", False), ("2002:a00:1::1", True), ("fec0::1", True)])
def test_only_public_addresses_unless_allowed(address: str, refused: bool) -> None:
    assert (refused_address(address, []) is not None) == refused
    allowed = allowed_networks(["127.0.0.0/8", "10.0.0.0/8", "::1/128"])
    if address in ("127.0.0.1", "10.0.0.7", "::1", "::ffff:127.0.0.1"):
        assert refused_address(address, allowed) is None


def test_retries_back_off_with_jitter_then_give_up() -> None:
    rng = random.Random(7)
    for attempts, base in enumerate(RETRY_DELAYS, 1):
        delay = retry_delay(attempts, rng)
        assert delay is not None and base / 2 <= delay <= base
    assert retry_delay(MAX_ATTEMPTS, rng) is None
    assert sum(RETRY_DELAYS) > 12 * 3600  # "for hours"
