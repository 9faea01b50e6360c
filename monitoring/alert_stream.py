"""The alert streams' order, on every API node: alert events in ``event_id`` order, each
once, whatever order they were published in; and what a client that resumes missed.

The store numbers alert events in commit order (docs/alerts.md#resume). Outlets publish
them on ALERT_EVENTS_TOPIC as their batches commit: in order within one pipeline, but
scale-out workers publish side by side, and a publish can be lost (a worker that dies
between commit and publish). The `AlertSequencer` passes on each event whose id follows
the last it passed; for any other it first reads what it lacks from the store (the
truth), and it asks the store every few seconds anyway. Subscribers of ALERTS_TOPIC so
get every event once, in order; the message number is its event_id. The next event in
order, arriving while the sequencer is idle, is passed on in the publisher's own call:
no task in between, so an alert reaches its streams as soon as its batch's acks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from monitoring import codec
from monitoring.hub import Hub, Message, Subscription
from monitoring.messages import ALERT_EVENTS_TOPIC, ALERTS_TOPIC, resync

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # the store is asked for events nobody published this often
PRUNE_SECONDS = 3600.0  # old events are pruned this often
FILL_LIMIT = 1000  # events read from the store at a time
RESUME_LIMIT = 1000  # events a resuming client is sent from the store; beyond: resync
SEQUENCER_QUEUE = 100_000  # events waiting to be put in order (then: a store read)
GAP_RESYNC = resync("alert events could not be read in order; reconnect with your cursor")


@dataclass(slots=True)
class AlertEvents:
    """Alert events after a cursor, oldest first (the messages as pushed)."""

    events: list[dict[str, Any]]
    # Events up to this id are no longer kept whole: a cursor below it cannot resume.
    kept_after: int


class AlertLog(Protocol):
    """Where alert events are kept (the store)."""

    async def alert_events_after(self, after: int, limit: int) -> AlertEvents: ...
    async def newest_alert_event(self) -> int: ...
    async def prune_alert_events(self, before: float) -> int: ...


def _meta(event: dict[str, Any]) -> dict[str, Any]:
    """What subscribers filter alert events on."""
    alert = event["alert"]
    return {"agent_id": alert["agent_id"], "queue": alert["queue"]}


class _Inbox(Subscription):
    """The sequencer's subscription: what ``at_once`` takes is not queued."""

    def __init__(self, at_once: Callable[[Message], bool]) -> None:
        super().__init__({ALERT_EVENTS_TOPIC}, SEQUENCER_QUEUE, None)
        self._at_once = at_once

    def offer(self, message: Message) -> None:
        if not (self.queue.empty() and self._at_once(message)):
            super().offer(message)


class AlertSequencer:
    def __init__(self, hub: Hub, log_: AlertLog, keep_seconds: float) -> None:
        self.hub, self.log, self.keep_seconds = hub, log_, keep_seconds
        self.delivered = 0  # the id of the last event passed on
        # Told of each event passed on, perhaps within a publisher's call: quick, and
        # publishing nothing themselves.
        self.listeners: list[Callable[[], None]] = []
        self._gap = False  # an event arrived ahead of one not passed on yet
        # The timer of the task's wait for the next event; None: not waiting (a store
        # read under way, or nothing started yet).
        self._waiting: asyncio.Timeout | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.delivered = await self.log.newest_alert_event()
        self._sub = self.hub.attach(_Inbox(self._next_in_order))
        self._task = asyncio.create_task(self._run(), name="alert-sequencer")

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [] if self._task is None else [self._task]

    async def _run(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                await self._step()
                if time.monotonic() - pruned_at > PRUNE_SECONDS:
                    pruned_at = time.monotonic()
                    await self.log.prune_alert_events(time.time() - self.keep_seconds)
            except Exception:
                # An event out of order stays unsent (never passed on ahead of one
                # missing): subscribers resume from the store with their cursor, and the
                # next look at the store passes it on here.
                log.warning("reading alert events from the store failed", exc_info=True)
                if self._gap:
                    self.hub.tell(ALERTS_TOPIC, GAP_RESYNC)
                await asyncio.sleep(POLL_SECONDS)

    async def _step(self) -> None:
        """Pass on the next event published, or what the store holds if there is a gap
        or nothing came for POLL_SECONDS."""
        assert self._sub is not None
        try:
            async with asyncio.timeout(POLL_SECONDS) as self._waiting:
                message = await self._sub.next()
        except TimeoutError:
            message = None
        finally:
            self._waiting = None
        if message is None:
            if self._sub.overflowed:  # fell behind: the store has them all
                self.hub.unsubscribe(self._sub)
                self._sub = self.hub.attach(_Inbox(self._next_in_order))
            await self._fill()
        elif message.number == self.delivered + 1:
            self._pass_on(codec.loads(message.text), message)
        elif message.number > self.delivered:
            self._gap = True  # (until the store fills it)
            await self._fill()

    async def _fill(self) -> None:
        """Pass on what the store holds after the last event passed on."""
        while True:
            page = await self.log.alert_events_after(self.delivered, FILL_LIMIT)
            for event in page.events:
                self._pass_on(event)
            if len(page.events) < FILL_LIMIT:
                self._gap = False
                return

    def _next_in_order(self, message: Message) -> bool:
        """Pass ``message`` on now if it is the next event and nothing is under way
        (else the task sees to it, in order); whether it was."""
        waiting = self._waiting
        if waiting is None or message.number != self.delivered + 1:
            return False
        before = self.delivered
        try:
            self._pass_on(codec.loads(message.text), message)
        except Exception:
            if self.delivered == before:
                return False  # not passed on: the task sees to it (and to what failed)
            log.exception("passing alert event %d on failed", message.number)
            self.hub.tell(ALERTS_TOPIC, GAP_RESYNC)
        if not waiting.expired():  # (expired: the task is about to ask the store)
            # Events still come: the store is asked only after POLL_SECONDS without one.
            waiting.reschedule(asyncio.get_running_loop().time() + POLL_SECONDS)
        return True

    def _pass_on(self, event: dict[str, Any], message: Message | None = None) -> None:
        event_id = int(event["event_id"])
        self.delivered = max(self.delivered, event_id)
        text = message.text if message is not None else codec.dumps(event)
        self.hub.offer(ALERTS_TOPIC, Message(event["type"], text, event_id), _meta(event))
        for listener in self.listeners:
            listener()

    async def since(self, after: int) -> list[dict[str, Any]] | None:
        """The events after ``after`` (a client's cursor), oldest first; None when they
        are no longer all kept, too many, or ``after`` is not a cursor of this
        deployment."""
        page = await self.log.alert_events_after(after, RESUME_LIMIT + 1)
        if after < page.kept_after or len(page.events) > RESUME_LIMIT:
            return None
        if not page.events and after > max(self.delivered,
                                           await self.log.newest_alert_event()):
            return None
        return page.events
