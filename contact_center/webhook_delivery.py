"""Delivering webhooks (docs/alerts.md#webhooks): alert events become delivery rows (the
outbox), which are claimed with a lease, POSTed signed, and settled: delivered, retried
later with backoff, or given up; an endpoint failing for too long is disabled.

Every API node runs one; in the scale-out deployment they share the work through the
store (each delivery row is added once and claimed by one node at a time), so each event
reaches each endpoint once, and again with the same ``webhook-id`` only when a try's
outcome was lost (a node that died mid-try: its lease runs out). A slow or dead receiver
holds at most PER_ENDPOINT tries at once, never the pipeline or another endpoint's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import httpx2 as httpx

from contact_center import stopping
from contact_center.stores import DeliveryOutcome, Store
from monitoring import webhooks
from monitoring.webhooks import Networks

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # new alert events are looked for this often (and when woken)
FAN_OUT_BATCH = 500  # alert events turned into deliveries per transaction
PER_ENDPOINT = 8  # tries in flight per endpoint
TAKEN_PER_ENDPOINT = 32  # deliveries an endpoint may have leased here (tried 8 at a time)
MAX_ENDPOINTS = 100  # (as the routes allow)
RESOLVERS = 8  # threads resolving receivers' names (a dead name server holds only these)
CLOSE_SECONDS = 1.0


class WebhookDelivery:
    def __init__(self, store: Store, allowed: Networks, timeout: float,
                 disable_after: float) -> None:
        self.store, self.allowed = store, allowed
        self.timeout, self.disable_after = timeout, disable_after
        # A leased delivery is tried well within its lease, even the last of those taken.
        self.lease_seconds = timeout * (TAKEN_PER_ENDPOINT // PER_ENDPOINT) + 20.0
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {}
        self._outcomes: list[DeliveryOutcome] = []  # tries ended, not recorded yet
        # Until when a look found no endpoint enabled: alert events waking the loop
        # meanwhile cost no read (an endpoint added or enabled elsewhere is seen at the
        # next tick; nothing is missed, the fan-out starts from its cursor).
        self._none_enabled_until = 0.0
        self._runner: asyncio.Task[None] | None = None
        # Redirects are not followed (a redirect could lead anywhere: a failed try), nor
        # proxies from the environment (the checked address is the one called). No
        # connection is kept for another request: a connection is to an address, and
        # another endpoint's name (SNI) on that address must not ride on it; and no
        # endpoint's connections can crowd out another's.
        self._client = httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=timeout,
            limits=httpx.Limits(max_connections=PER_ENDPOINT * MAX_ENDPOINTS,
                                max_keepalive_connections=0))
        self._resolver = ThreadPoolExecutor(RESOLVERS, thread_name_prefix="webhook-dns")

    def wake(self) -> None:
        """An alert event was committed: look now, not at the next tick."""
        self._wake.set()

    def endpoints_changed(self) -> None:
        """An endpoint was added or changed on this node: look again now."""
        self._none_enabled_until = 0.0
        self._wake.set()

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="webhook-delivery")

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        tries = [t for ts in self._in_flight.values() for t in ts]
        return [*([self._runner] if self._runner else []), *tries]

    async def stop(self) -> None:
        """Stop trying (a try cut short is tried again: embedded at the next start,
        scale-out once its lease runs out), then close the HTTP client."""
        await stopping.cancel(self.tasks, "webhook deliveries")
        await stopping.step("recording webhook tries", self._settle(), CLOSE_SECONDS)
        await stopping.step("closing the webhook client", self._client.aclose(),
                            CLOSE_SECONDS)
        self._resolver.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            failed = False
            for step in (self._settle, self._deliver):  # (each on its own)
                try:
                    await step()
                except Exception:
                    log.warning("webhook delivery: %s failed; retrying", step.__name__,
                                exc_info=True)
                    failed = True
            if failed:
                await asyncio.sleep(TICK_SECONDS)

    async def _settle(self) -> None:
        """Record the tries that ended since the last time, in one transaction."""
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        try:
            disabled = await self.store.settle_deliveries(outcomes)
        except Exception:
            self._outcomes[:0] = outcomes  # (recorded at the next look)
            raise
        for webhook_id in disabled:
            log.warning("webhook %s disabled: it has been failing for over %.0f s",
                        webhook_id, self.disable_after)

    async def _deliver(self) -> None:
        """Fan new events out, then claim what is due, for the endpoints enabled now: with
        none, there is nothing to read (nor, until the next tick, to look for)."""
        if time.monotonic() < self._none_enabled_until:
            return
        enabled = [h for h in await self.store.list_webhooks() if h["enabled"]]
        if not enabled:
            self._none_enabled_until = time.monotonic() + TICK_SECONDS
            return
        self._none_enabled_until = 0.0
        try:
            await self.fan_out(enabled)
        finally:  # (a failed fan-out holds back no retry that is due)
            await self._claim(enabled)

    async def fan_out(self, enabled: list[dict[str, Any]]) -> None:
        """Add a delivery for each new alert event and each endpoint that wants it; the
        ones this node has room for come leased to it, and are tried at once.

        Events no endpoint of ``enabled`` wants (at or before every one's mark: it was
        added or enabled after them) are not read."""
        through = max(await self.store.webhooks_fanned_out(),
                      min(h["after_event_id"] for h in enabled))
        while True:
            page = await self.store.alert_events_after(through, FAN_OUT_BATCH)
            if not page.events:
                return
            # Read after the events: an endpoint added since wants only later ones.
            hooks = {h["id"]: h for h in await self.store.list_webhooks() if h["enabled"]}
            room = {i: TAKEN_PER_ENDPOINT - len(self._in_flight.get(i, ())) for i in hooks}
            now = time.time()
            rows = []
            for e in page.events:
                for h in hooks.values():
                    if webhooks.wants(h, e):
                        leased = room[h["id"]] > 0
                        room[h["id"]] -= leased
                        rows.append((h["id"], e["event_id"],
                                     webhooks.message_id(e["event_id"], h["id"]), e["type"],
                                     webhooks.payload(e, now), int(leased), now, now,
                                     now + self.lease_seconds if leased else None))
            through = page.events[-1]["event_id"]
            for delivery in await self.store.add_deliveries(rows, through):
                if delivery["attempts"]:  # leased to this node
                    self._start(hooks[delivery["webhook_id"]], delivery)
            if len(page.events) < FAN_OUT_BATCH:
                return

    async def _claim(self, enabled: list[dict[str, Any]]) -> None:
        now = time.time()
        for hook in enabled:
            room = TAKEN_PER_ENDPOINT - len(self._in_flight.get(hook["id"], ()))
            if room <= 0:
                continue
            for delivery in await self.store.claim_deliveries(
                    hook["id"], now, now + self.lease_seconds, room):
                self._start(hook, delivery)

    def _start(self, hook: dict[str, Any], delivery: dict[str, Any]) -> None:
        running = self._in_flight.setdefault(hook["id"], set())
        task = asyncio.create_task(self._try(hook, delivery))
        running.add(task)
        task.add_done_callback(running.discard)

    async def _try(self, hook: dict[str, Any], delivery: dict[str, Any]) -> None:
        async with self._slots.setdefault(hook["id"], asyncio.Semaphore(PER_ENDPOINT)):
            started = time.time()
            try:
                async with asyncio.timeout(self.timeout):  # the whole try, name included
                    status, error = await self._post(hook, delivery)
            except TimeoutError:
                status, error = None, f"no answer within {self.timeout:g} s"
            except Exception as exc:  # (whatever it was, the try is recorded)
                log.warning("webhook %s: delivery %s failed unexpectedly", hook["id"],
                            delivery["id"], exc_info=True)
                status, error = None, f"{type(exc).__name__}"
        retry = None
        if error is not None:
            delay = webhooks.retry_delay(delivery["attempts"])
            retry = None if delay is None else time.time() + delay
            log.info("webhook %s: delivery %s failed (%s)%s", hook["id"], delivery["id"],
                     error, "" if retry else "; given up")
        self._outcomes.append(DeliveryOutcome(delivery["id"], hook["id"], started, status,
                                              error, retry, self.disable_after))
        self.wake()  # (recorded, and its next due delivery may go, now)

    async def _post(self, hook: dict[str, Any],
                    delivery: dict[str, Any]) -> tuple[int | None, str | None]:
        """One try: (the HTTP status, the error; None when delivered)."""
        url = httpx.URL(hook["url"])
        try:
            address = await checked_address(url, self.allowed, self._resolver)
        except (OSError, ValueError) as exc:
            return None, f"refused: {exc}"
        headers = webhooks.signed_headers(hook["secret"], delivery["message_id"],
                                          delivery["payload"], time.time())
        headers["host"] = url.netloc.decode()
        ip = ipaddress.ip_address(address)
        pinned = url.copy_with(host=address if ip.version == 4 else f"[{address}]")
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        try:
            # The status is all that counts: the body is not read (however large).
            async with self._client.stream("POST", pinned, content=delivery["payload"],
                                           headers=headers, extensions=extensions) as answer:
                status = answer.status_code
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status}"


async def checked_address(url: Any, allowed: Networks, resolver: Executor | None = None) -> str:
    """The address to call for ``url``, resolved now; ValueError when the URL is not
    http(s) or any address it resolves to is refused (`webhooks.refused_address`):
    then a name that also resolves to a private address cannot be used to reach it."""
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("a webhook URL is http:// or https:// with a host")
    port = url.port or (443 if url.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().run_in_executor(
        resolver, lambda: socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM))
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = webhooks.refused_address(address, allowed)
        if reason is not None:
            raise ValueError(reason)
    return addresses[0]
