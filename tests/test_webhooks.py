"""Webhooks end to end, on every deployment (docs/alerts.md#webhooks): endpoints over the
API, alert events delivered to a real HTTP receiver that verifies their signatures with
the `standardwebhooks` package, filters, retries, the delivery log, a manual
redelivery, disabling an endpoint that keeps failing, SSRF refusals, and a delivery cut
short by kill -9 delivered after the restart with the same webhook-id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from contact_center.settings import Settings
from contact_center.webhook_delivery import TICK_SECONDS
from tests.conftest import Connector, Users, auth, make_app, wait_for_partitions
from tests.test_alert_workflow import INSULT, RULES, use_rules
from tests.test_server import Server

LOOPBACK = ["127.0.0.0/8"]


class Receiver:
    """A webhook receiver on loopback: records each request; answers ``status`` once
    ``release`` is set."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        self.release = threading.Event()
        self.release.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                outer.release.wait(60)
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, seconds: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + seconds
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} arrived"
            time.sleep(0.02)
        return self.requests

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def verified(secret: str, request: tuple[dict[str, str], bytes]) -> Any:
    """The payload, once its signature checks out (as a receiver would check it)."""
    headers, body = request
    return Webhook(secret).verify(body, headers)


def _client(settings: Settings, backend: str, tmp_path: Path, **update: Any) -> TestClient:
    return TestClient(make_app(settings.model_copy(update=update), backend, tmp_path))


def _alert_on(client: TestClient, connector: dict[str, str], cid: str, **info: Any) -> None:
    """A conversation whose turns raise an alert (medium) and escalate it (high)."""
    with client.websocket_connect("/v1/ingest", headers=connector) as ws:
        c = Connector(ws)
        assert c.start(cid, **info)["status"] == "accepted"
        assert c.say(cid, "s1", "you idiots, where is it")["status"] == "accepted"
        assert c.say(cid, "s2", INSULT)["status"] == "accepted"


@pytest.mark.app
def test_endpoints_refuse_private_targets_and_other_mistakes(
        backend: str, settings: Settings, tmp_path: Path, users: Users) -> None:
    admin, manager = auth(users.token("Admin")), auth(users.token("CallCenterManager"))
    with _client(settings, backend, tmp_path) as client:
        for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/x",
                    "http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data",
                    "ftp://example.com/x", "not a url", "http://name.invalid/x"):
            answer = client.post("/v1/webhooks", headers=admin, json={"url": url})
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["code"] in ("invalid_webhook", "validation_error"), url
        wrong = client.post("/v1/webhooks", headers=admin,
                            json={"url": "http://127.0.0.1/", "events": ["alert.exploded"]})
        assert wrong.status_code == 422 and wrong.json()["code"] == "validation_error"
        assert client.post("/v1/webhooks", headers=manager,
                           json={"url": "http://127.0.0.1/"}).status_code == 403
        assert client.get("/v1/webhooks", headers=admin).json() == {"webhooks": []}


@pytest.mark.app
def test_alert_events_reach_a_receiver_signed_filtered_and_logged(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        receiver: Receiver) -> None:
    admin, connector = auth(users.token("Admin", username="root")), auth(users.token("Connector"))
    with _client(settings, backend, tmp_path, webhook_allowed_networks=LOOPBACK) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        use_rules(client, users, RULES)
        made = client.post("/v1/webhooks", headers=admin, json={"url": receiver.url})
        assert made.status_code == 201, made.text
        hook = made.json()
        assert hook["secret"].startswith("whsec_") and hook["created_by"] == "root"
        assert hook["events"] == ["alert.raised", "alert.escalated", "alert.renotified"]
        picky = client.post("/v1/webhooks", headers=admin, json={
            "url": receiver.url, "min_severity": "high", "queues": ["vip"],
            "events": ["alert.raised"]}).json()
        listed = client.get("/v1/webhooks", headers=admin).json()["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"], picky["id"]]
        assert all("secret" not in h for h in listed)  # shown once

        _alert_on(client, connector, "w1")
        # (Tried side by side, they may arrive in either order: event_id orders them.)
        raised, escalated = sorted((verified(hook["secret"], r) for r in receiver.wait_for(2)),
                                   key=lambda e: e["data"]["event_id"])
        assert [raised["type"], escalated["type"]] == ["alert.raised", "alert.escalated"]
        assert raised["data"]["alert"]["conversation_id"] == "w1"
        assert escalated["data"]["alert"]["severity"] == "high"
        ids = {headers["webhook-id"] for headers, _ in receiver.requests}
        assert ids == {f"msg_{e['data']['event_id']}_{hook['id']}" for e in (raised, escalated)}
        with pytest.raises(Exception, match="signature"):  # another secret: refused
            Webhook(picky["secret"]).verify(receiver.requests[0][1], receiver.requests[0][0])

        deliveries = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()
        assert [(d["type"], d["status"], d["attempts"], d["last_status"])
                for d in deliveries["deliveries"]] == [
            ("alert.escalated", "delivered", 1, 200), ("alert.raised", "delivered", 1, 200)]
        # The picky one: a high alert, but of another queue, then of its queue.
        _alert_on(client, connector, "w2", queue="vip")
        receiver.wait_for(4)
        time.sleep(0.5)
        picked = client.get(f"/v1/webhooks/{picky['id']}/deliveries", headers=admin).json()
        assert len(receiver.requests) == 4  # w2's raised and escalated to the first
        assert picked["deliveries"] == []  # raised at medium: below its min_severity
        changed = client.patch(f"/v1/webhooks/{picky['id']}", headers=admin,
                               json={"min_severity": "medium", "queues": None})
        assert changed.status_code == 200 and changed.json()["queues"] is None
        _alert_on(client, connector, "w3")
        receiver.wait_for(7)
        time.sleep(0.3)
        to_picky = [json.loads(body) for headers, body in receiver.requests
                    if headers["webhook-id"].endswith(picky["id"])]
        assert [(e["type"], e["data"]["alert"]["conversation_id"]) for e in to_picky] == [
            ("alert.raised", "w3")]
        assert client.delete(f"/v1/webhooks/{picky['id']}", headers=admin).status_code == 204
        assert client.get(f"/v1/webhooks/{picky['id']}", headers=admin).status_code == 404


class ReadsCounted:
    """The service's store, counting what the webhook delivery reads: the endpoints
    (looks) and pages of alert events."""

    def __init__(self, store: Any) -> None:
        self.store, self.looks, self.pages = store, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def list_webhooks(self) -> Any:
        self.looks += 1
        return await self.store.list_webhooks()

    async def alert_events_after(self, after: int, limit: int) -> Any:
        self.pages += 1
        return await self.store.alert_events_after(after, limit)


@pytest.mark.app
def test_with_no_endpoint_enabled_no_event_is_read_and_one_enabled_gets_only_later_events(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        receiver: Receiver) -> None:
    admin, connector = auth(users.token("Admin")), auth(users.token("Connector"))
    with _client(settings, backend, tmp_path, webhook_allowed_networks=LOOPBACK) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        use_rules(client, users, RULES)
        hook = client.post("/v1/webhooks", headers=admin,
                           json={"url": receiver.url, "events": ["alert.raised"]}).json()
        assert client.patch(f"/v1/webhooks/{hook['id']}", headers=admin,
                            json={"enabled": False}).json()["enabled"] is False
        delivery = client.app.state.runtime.webhooks  # type: ignore[attr-defined]
        counted = delivery.store = ReadsCounted(delivery.store)
        began = time.monotonic()
        for n in range(1, 6):  # each alert event wakes the delivery: it has nothing to do
            _alert_on(client, connector, f"n{n}")
        time.sleep(1.5)  # (and past its tick)
        assert counted.pages == 0
        # Not a look a wake: one a tick at most (and one for the change just made).
        assert counted.looks <= 2 + (time.monotonic() - began) / TICK_SECONDS
        assert client.patch(f"/v1/webhooks/{hook['id']}", headers=admin,
                            json={"enabled": True}).json()["enabled"] is True
        _alert_on(client, connector, "n6")
        receiver.wait_for(1)
        time.sleep(1.5)  # (n1's to n5's, if they were sent, would be by now)
        assert [json.loads(body)["data"]["alert"]["conversation_id"]
                for _, body in receiver.requests] == ["n6"]
        assert counted.pages >= 1  # (enabled: it reads again)


@pytest.mark.app
def test_a_failing_receiver_is_retried_redelivered_and_disabled(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        receiver: Receiver) -> None:
    admin, connector = auth(users.token("Admin")), auth(users.token("Connector"))
    receiver.status = 500
    with _client(settings, backend, tmp_path, webhook_allowed_networks=LOOPBACK,
                 webhook_disable_after_seconds=1.0) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        use_rules(client, users, RULES)
        hook = client.post("/v1/webhooks", headers=admin,
                           json={"url": receiver.url, "events": ["alert.raised"]}).json()
        _alert_on(client, connector, "f1")
        (first,) = receiver.wait_for(1)
        time.sleep(0.3)
        (delivery,) = client.get(f"/v1/webhooks/{hook['id']}/deliveries",
                                 headers=admin).json()["deliveries"]
        assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == (
            "pending", 1, 500)
        assert delivery["next_attempt_at"] >= time.time() + 1.0  # backs off (5 s, jittered)
        time.sleep(1.0)  # failing for over a second now: the next failure disables it
        again = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver",
                            headers=admin)
        assert again.status_code == 202
        second = receiver.wait_for(2)[1]
        assert second[0]["webhook-id"] == first[0]["webhook-id"]  # the same message
        verified(hook["secret"], second)
        deadline = time.monotonic() + 5
        while client.get(f"/v1/webhooks/{hook['id']}", headers=admin).json()["enabled"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        disabled = client.get(f"/v1/webhooks/{hook['id']}", headers=admin).json()
        assert "failing since" in disabled["disabled_reason"]
        _alert_on(client, connector, "f2")  # a disabled endpoint gets nothing
        time.sleep(0.5)
        assert len(receiver.requests) == 2
        receiver.status = 200
        enabled = client.patch(f"/v1/webhooks/{hook['id']}", headers=admin,
                               json={"enabled": True}).json()
        assert enabled["enabled"] and enabled["disabled_reason"] is None
        assert client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver",
                           headers=admin).status_code == 202
        receiver.wait_for(3)
        deadline = time.monotonic() + 5
        while client.get(f"/v1/webhooks/{hook['id']}/deliveries?status=delivered",
                         headers=admin).json()["deliveries"] == []:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get(f"/v1/webhooks/{hook['id']}", headers=admin).json()[
            "failing_since"] is None


def test_a_delivery_cut_short_by_kill_9_is_delivered_after_the_restart(
        tmp_path: Path, receiver: Receiver) -> None:
    env = {"CC_WEBHOOK_ALLOWED_NETWORKS": json.dumps(LOOPBACK)}
    server = Server(tmp_path, **env)
    try:
        admin = {"Authorization": f"Bearer {server.token('root', 'Admin')}"}
        connector = {"Authorization": f"Bearer {server.token('feed', 'Connector')}"}
        hook = httpx.post(f"{server.url}/v1/webhooks", headers=admin,
                          json={"url": receiver.url}).json()
        receiver.release.clear()  # the receiver takes its time: the try is in flight
        assert httpx.post(f"{server.url}/v1/conversations", headers=connector,
                          json={"id": "k1", "agent_id": "a1"}).status_code == 201
        said = httpx.post(f"{server.url}/v1/conversations/k1/segments", headers=connector,
                          json={"segments": [{"segment_id": "s1", "role": "customer",
                                              "text": INSULT}]})
        assert said.status_code == 200, said.text
        (cut,) = receiver.wait_for(1)
        server.proc.kill()  # kill -9 mid-delivery: its outcome is never recorded
        server.proc.wait(10)
    finally:
        if server.proc.poll() is None:
            server.stop()
    receiver.release.set()
    restarted = Server(tmp_path, db=str(server.db), **env)
    try:
        again = receiver.wait_for(2, seconds=15)[1]
        assert again[0]["webhook-id"] == cut[0]["webhook-id"]  # the receiver deduplicates
        assert verified(hook["secret"], again) == verified(hook["secret"], cut) | {
            "timestamp": verified(hook["secret"], again)["timestamp"]}
    finally:
        restarted.stop()


@pytest.mark.app
def test_a_stuck_receiver_delays_neither_ingest_nor_another_receiver(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        receiver: Receiver) -> None:
    admin, connector = auth(users.token("Admin")), auth(users.token("Connector"))
    stuck = Receiver()
    stuck.release.clear()  # takes every request and never answers (until the end)
    try:
        with _client(settings, backend, tmp_path, webhook_allowed_networks=LOOPBACK) as client:
            if backend == "scaleout":
                wait_for_partitions(client)
            use_rules(client, users, RULES)
            hooks = [client.post("/v1/webhooks", headers=admin, json={
                "url": url, "events": ["alert.raised"]}).json() for url in (stuck.url,
                                                                            receiver.url)]
            with client.websocket_connect("/v1/ingest", headers=connector) as ws:
                c = Connector(ws)
                for i in range(12):  # more alerts than the stuck one is tried at once
                    started = time.monotonic()
                    assert c.start(f"s{i}")["status"] == "accepted"
                    assert c.say(f"s{i}", "t1", INSULT)["status"] == "accepted"
                    assert time.monotonic() - started < 2.0  # ingest is not held up
            arrived = receiver.wait_for(12)
            assert len({headers["webhook-id"] for headers, _ in arrived}) == 12
            assert 0 < len(stuck.requests) <= 8  # at most 8 tries at a time
            in_flight = stuck.requests[0][0]["webhook-id"]
            (held,) = [d for d in client.get(f"/v1/webhooks/{hooks[0]['id']}/deliveries",
                                             headers=admin).json()["deliveries"]
                       if d["message_id"] == in_flight]
            twice = client.post(f"/v1/webhooks/{hooks[0]['id']}/deliveries/{held['id']}"
                                "/redeliver", headers=admin)  # not while it is tried
            assert twice.status_code == 409 and twice.json()["code"] == "delivery_in_flight"
            assert client.post(f"/v1/webhooks/{hooks[0]['id']}/deliveries/999999/redeliver",
                               headers=admin).status_code == 404
    finally:
        stuck.close()


@pytest.mark.app
def test_a_webhook_body_carries_no_pii_the_customer_typed(
        backend: str, settings: Settings, tmp_path: Path, users: Users,
        receiver: Receiver) -> None:
    """The evidence of an alert is the redacted turn (docs/security.md#pii)."""
    admin, connector = auth(users.token("Admin")), auth(users.token("Connector"))
    pii = {"card": "4111 1111 1111 1111", "email": "pat.lee@gmail.com",
           "phone": "(415) 555-2671", "ssn": "536-90-4399"}
    with _client(settings, backend, tmp_path, webhook_allowed_networks=LOOPBACK) as client:
        if backend == "scaleout":
            wait_for_partitions(client)
        use_rules(client, users, RULES)
        assert client.post("/v1/webhooks", headers=admin,
                           json={"url": receiver.url}).status_code == 201
        with client.websocket_connect("/v1/ingest", headers=connector) as ws:
            c = Connector(ws)
            c.start("w-pii")
            said = f"you idiots, my card {pii['card']}, mail {pii['email']}, " \
                   f"phone {pii['phone']}, ssn {pii['ssn']}"
            assert c.say("w-pii", "s1", said)["status"] == "accepted"
        [(_, body)] = receiver.wait_for(1)
    assert b"[CARD]" in body and b"[EMAIL]" in body and b"[PHONE]" in body
    for value in pii.values():
        for form in (value, value.replace(" ", ""), value.split("@")[0]):
            assert form.encode() not in body, form
