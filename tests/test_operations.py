"""Operations: Prometheus metrics, request ids and logs, configuration, and the abuse
limits (messages per socket, sockets per token, failed authentications per address)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect

from contact_center import logs, service_metrics
from contact_center.cli import main, run_on_event_loop
from contact_center.limits import FailedAuthentications, SocketCounts, TokenBucket
from contact_center.logs import JsonLines, WithRequestId, masked_query
from contact_center.settings import ConfigError, Settings, load_settings
from tests.conftest import (
    ANGRY,
    Connector,
    Users,
    auth,
    free_port,
    make_app,
    pipeline_of,
    read_replies,
    refused,
    wait_for_partitions,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, token: str) -> Samples:
    response = client.get("/metrics", headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- metrics ------------------------------------------------------------------------------


def test_metrics_count_events_replies_scores_alerts_and_sockets(
        client: TestClient, users: Users, ingest: Connector) -> None:
    operator = users.token("Admin")
    before = scrape(client, operator)
    assert ingest.start("m-1")["status"] == "accepted"
    for i, text in enumerate(ANGRY):
        assert ingest.say("m-1", f"s{i}", text)["status"] == "accepted"
    assert ingest.send({"type": "segment"})["code"] == "validation_error"
    during = scrape(client, operator)
    after = scrape(client, operator)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("cc_events_received_total", type="segment") == 3
    assert grew("cc_events_received_total", type="conversation.started") == 1
    assert grew("cc_replies_total", status="ack", code="") == 4
    assert grew("cc_replies_total", status="error", code="validation_error") == 1
    assert grew("cc_ingest_reply_seconds_count") == 5
    assert grew("cc_segments_scored_total") == 3
    assert grew("cc_batch_events_sum") == 4
    assert grew("cc_commit_seconds_count") >= 1
    alerts = sum(v - value(before, name, **dict(labels)) for (name, labels), v in after.items()
                 if name == "cc_alerts_raised_total")
    assert alerts >= 1  # three very negative turns in a row raise the sentiment rules
    assert value(during, "cc_websockets_open", kind="ingest") >= 1
    assert grew("cc_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert value(after, "process_open_fds") > 0  # the process collector comes along


def test_metrics_need_the_operate_permission(client: TestClient, users: Users) -> None:
    assert client.get("/metrics").status_code == 401
    supervisor = users.token("CallCenterManager")
    assert client.get("/metrics", headers=auth(supervisor)).status_code == 403


def test_a_workers_metrics_are_served_on_their_own_port() -> None:
    port = free_port()
    service_metrics.serve("127.0.0.1", port)
    service_metrics.SEGMENTS_SCORED.inc(0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "cc_segments_scored_total" in text and "cc_partitions_held" in text


def test_the_worker_and_store_commands_run_on_the_loop_serve_runs_on() -> None:
    """uvloop where it is installed (uvicorn[standard] installs it here), as `serve`."""
    uvloop = pytest.importorskip("uvloop")

    async def which() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert run_on_event_loop(which()) is uvloop.Loop


# -- request ids and logs -------------------------------------------------------------------


def test_every_answer_has_a_request_id_and_one_access_line_without_secrets(
        client: TestClient, users: Users, caplog: pytest.LogCaptureFixture) -> None:
    token = users.token("Admin")
    with caplog.at_level(logging.INFO, logger="contact_center.access"):
        kept = client.get("/v1/me?access_token=hunter2&limit=1",
                          headers=auth(token) | {"X-Request-ID": "lb-42.a"})
        forged = client.get("/v1/me", headers=auth(token) | {"X-Request-ID": "a b\nFAKE"})
        fresh = client.get("/livez")
        client.get("/v1/transcripts?q=pat%40example.com&limit=5", headers=auth(token))
        client.get("/v1/x%0a2026-01-01 INFO contact_center.access GET /v1/admin 200")
    assert kept.headers["x-request-id"] == "lb-42.a"
    assert forged.headers["x-request-id"] != "a b\nFAKE"
    assert len(fresh.headers["x-request-id"]) == 16
    lines = [r.getMessage() for r in caplog.records if r.name == "contact_center.access"]
    assert any(line.startswith("GET /v1/me?access_token=***&limit=1 200 ") for line in lines)
    # A search's terms are a customer's words: masked like a token.
    assert any(line.startswith("GET /v1/transcripts?q=***&limit=5 200 ") for line in lines)
    assert all("\n" not in line for line in lines)  # no forged second line
    assert all("hunter2" not in line and token not in line and "example.com" not in line
               for line in lines)


def test_log_lines_carry_the_request_id_and_json_is_one_object_per_line() -> None:
    record = logging.LogRecord("contact_center.access", logging.INFO, __file__, 1,
                               "GET %s %s", ("/v1/me", 200), None)
    record.status, record.route = 200, "/v1/me"
    WithRequestId().filter(record)
    line = json.loads(JsonLines().format(record))
    assert line["message"] == "GET /v1/me 200" and line["level"] == "INFO"
    assert line["request_id"] == "-" and line["status"] == 200 and line["route"] == "/v1/me"
    assert line["time"].endswith("Z")
    assert masked_query("api_key=1&q=refund&limit=2") == "api_key=***&q=***&limit=2"


def test_debug_logging_never_reaches_the_websocket_librarys_frame_lines() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {
        name: logging.getLogger(name).level for name in ("uvicorn.error", "websockets")}
    try:
        logs.configure("json", "DEBUG")
        assert root.isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("uvicorn.error").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("websockets.server").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def test_metric_labels_stay_bounded_whatever_a_client_sends(
        client: TestClient, users: Users) -> None:
    operator = users.token("Admin")
    for method in ("FOO0", "FOO1"):
        client.request(method, "/v1/me")
    samples = scrape(client, operator)
    methods = {dict(labels)["method"] for (name, labels) in samples
               if name == "cc_http_requests_total"}
    assert not {"FOO0", "FOO1"} & methods and "other" in methods


def test_no_token_or_transcript_text_is_logged(
        client: TestClient, users: Users, connector_token: str,
        caplog: pytest.LogCaptureFixture) -> None:
    secret_text = "my card number is 4111 1111 1111 1111 and I am furious"
    with caplog.at_level(logging.DEBUG):
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            connector = Connector(ws)
            connector.start("log-1")
            connector.say("log-1", "s1", secret_text)
            connector.send({"type": "segment", "conversation_id": "log-1", "text": secret_text})
        client.get("/v1/transcripts/log-1", headers=auth(users.token("Admin")))
        client.get("/v1/transcripts?q=4111", headers=auth(users.token("Admin")))
        client.get("/v1/me", headers=auth("cc_" + "x" * 43))
    # (The test's own HTTP client logs its requests: not the server's.)
    logged = "\n".join(r.getMessage() for r in caplog.records
                        if not r.name.startswith(("httpx", "httpcore")))
    # (Not "4111" alone: random hex request ids hold it by chance.)
    assert "4111 1111" not in logged and "q=4111" not in logged
    assert connector_token not in logged
    assert "x" * 43 not in logged
    assert "WS /v1/ingest 101" in logged  # the socket's own access line


# -- configuration --------------------------------------------------------------------------


def test_settings_come_from_options_then_environment_then_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cc.toml"
    config.write_text('port = 7000\nhost = "0.0.0.0"\nbatch_size = 50\n')
    monkeypatch.setenv("CC_PORT", "7001")
    settings = load_settings(config, batch_size=None, host="10.0.0.1")
    assert (settings.host, settings.port, settings.batch_size) == ("10.0.0.1", 7001, 50)
    monkeypatch.setenv("CC_CONFIG", str(config))
    assert load_settings().batch_size == 50


def test_bad_settings_say_which_and_where(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cc.toml"
    config.write_text("batch_size = 0\n")
    with pytest.raises(ConfigError, match=r"batch_size \(file .*cc.toml\): Input should be"):
        load_settings(config)
    config.write_text("batch_sise = 10\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*batch_sise"):
        load_settings(config)
    config.write_text("port = \n")
    with pytest.raises(ConfigError, match="is not TOML"):
        load_settings(config)
    monkeypatch.setenv("CC_PORT", "eighty")
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 1 and "port (environment CC_PORT)" in result.output
    assert "Traceback" not in result.output


def test_config_prints_the_effective_settings_with_secrets_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cc.toml"
    config.write_text('log_format = "json"\n')
    monkeypatch.setenv("CC_REDIS", "redis://:s3cret@cache:6379/0")
    result = CliRunner().invoke(main, ["config", "--config", str(config), "--db",
                                       "postgresql://cc:pa55@db/cc"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "pa55" not in result.output
    lines = {line.split("#")[0].strip(): line.split("#")[-1].strip()
             for line in result.output.splitlines() if not line.startswith("#")}
    assert lines['log_format = "json"'] == f"file {config}"
    assert lines['database = "postgresql://cc:***@db/cc"'] == "command line"
    assert lines['redis = "redis://:***@cache:6379/0"'] == "environment CC_REDIS"
    assert lines["port = 8000"] == "default"


# -- abuse limits ---------------------------------------------------------------------------


def test_limit_counting() -> None:
    bucket = TokenBucket(rate=10, burst=10, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(20)) == 10
    assert bucket.take(0.05) is False and bucket.take(0.1) is True
    counts = SocketCounts(2)
    assert counts.enter("t") and counts.enter("t") and not counts.enter("t")
    counts.leave("t")
    assert counts.enter("t") and counts.enter("u")
    failures = FailedAuthentications(per_minute=3, addresses=2)
    for _ in range(3):
        assert failures.slowed("a", 0.0) == 0
        failures.failed("a", 0.0)
    assert failures.slowed("a", 10.0) == 50.0
    assert failures.slowed("a", 60.0) == 0  # a new minute
    failures.failed("b", 1.0)
    failures.failed("c", 1.0)
    assert "a" not in failures._by_address  # the oldest forgotten past its bound


@pytest.fixture
def strict(tmp_path: Path, backend: str) -> Callable[..., AbstractContextManager[TestClient]]:
    """An app of this test's backend with the given limits."""

    @contextlib.contextmanager
    def limited(**limits: Any) -> Iterator[TestClient]:
        settings = Settings(database=tmp_path / "cc.db", **limits)
        with TestClient(make_app(settings, backend, tmp_path)) as client:
            if backend == "scaleout":
                wait_for_partitions(client)
            yield client

    return limited


@pytest.mark.app
@pytest.mark.parametrize("replies", ["single", "batched"])
def test_a_socket_sending_too_fast_is_refused_in_order_and_closed(
        strict: Any, connector_token: str, replies: str) -> None:
    # Two a second, in bursts of two: the third of three at once is one too many.
    with strict(ws_messages_per_second=2) as client:
        with client.websocket_connect(f"/v1/ingest?replies={replies}",
                                      headers=auth(connector_token)) as ws:
            Connector(ws)
            ws.send_json({"type": "conversation.started", "conversation": {"id": "r-1"}})
            for i in range(3):
                ws.send_json({"type": "segment", "conversation_id": "r-1",
                              "segment_id": f"s{i}", "role": "customer", "text": "hello"})
            answers = read_replies(ws, 3)
            assert len(answers) == 3  # (nothing after the refusal, in its frame either)
            assert [r["status"] for r in answers[:2]] == ["accepted"] * 2
            limited = answers[2]
            assert limited["code"] == "rate_limited" and "resend" in limited["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1013  # try again later; s2 was never read
        # Nothing was lost: after a pause the connector resends from the refused event.
        with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
            again = Connector(ws)
            assert again.say("r-1", "s1", "hello")["status"] == "accepted"
            time.sleep(0.6)
            assert again.say("r-1", "s2", "hello")["status"] == "accepted"
            time.sleep(0.6)
            assert again.say("r-1", "s0", "hello")["status"] == "duplicate"


@pytest.mark.app
def test_a_monitor_socket_that_floods_is_closed(strict: Any, users: Users) -> None:
    supervisor = users.token("CallCenterManager")
    with strict(ws_messages_per_second=3) as client, \
            client.websocket_connect("/v1/alerts/stream", headers=auth(supervisor)) as ws:
        assert ws.receive_json()["type"] == "subscribed"
        for _ in range(10):
            ws.send_text("x")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


@pytest.mark.app
def test_one_token_holds_a_bounded_number_of_sockets(strict: Any, users: Users) -> None:
    supervisor = users.token("CallCenterManager")
    other = users.token("CallCenterManager")
    with strict(max_sockets_per_token=2) as client:
        with client.websocket_connect("/v1/alerts/stream", headers=auth(supervisor)) as one, \
                client.websocket_connect("/v1/live", headers=auth(supervisor)) as two:
            one.receive_json(), two.receive_json()
            third = refused(client, "/v1/alerts/stream", auth(supervisor))
            assert third.status_code == 429
            assert third.json()["code"] == "too_many_connections"
            with client.websocket_connect("/v1/alerts/stream", headers=auth(other)) as ws:
                assert ws.receive_json()["type"] == "subscribed"  # another token is not
        # Closed sockets give their places back.
        with client.websocket_connect("/v1/alerts/stream", headers=auth(supervisor)) as ws:
            assert ws.receive_json()["type"] == "subscribed"


@pytest.mark.app
def test_repeated_bad_tokens_from_one_address_are_slowed_down(
        strict: Any, users: Users) -> None:
    good = users.token("Admin")
    with strict(auth_failures_per_minute=5) as client:
        statuses = [client.get("/v1/me", headers=auth(f"cc_guess{i}")).status_code
                    for i in range(5)]
        assert statuses == [401] * 5
        started = time.monotonic()
        slowed = client.get("/v1/me", headers=auth("cc_guess6"))
        assert time.monotonic() - started >= 1.0  # answered late
        assert slowed.status_code == 429 and slowed.json()["code"] == "too_many_failures"
        assert 0 < int(slowed.headers["retry-after"]) <= 60
        # A good token from the same address (a call centre behind one NAT) still works,
        # also while failures are waiting for their answers.
        assert client.get("/v1/me", headers=auth(good)).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            waiting = [pool.submit(client.get, "/v1/me", headers=auth(f"cc_more{i}"))
                       for i in range(10)]
            time.sleep(0.3)
            assert client.get("/v1/me", headers=auth(good)).status_code == 200
            assert {f.result().status_code for f in waiting} == {429}
        with client.websocket_connect("/v1/alerts/stream", headers=auth(good)) as ws:
            assert ws.receive_json()["type"] == "subscribed"


def test_a_slowed_down_address_gets_only_a_few_answers_at_once(strict: Any) -> None:
    with strict(auth_failures_per_minute=1) as client:
        assert client.get("/v1/me", headers=auth("cc_guess")).status_code == 401

        def guess(i: int) -> tuple[int, float]:
            started = time.monotonic()
            status = client.get("/v1/me", headers=auth(f"cc_guess{i}")).status_code
            return status, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(guess, range(20)))
    assert {status for status, _ in answers} == {429}
    late = [took for _, took in answers if took >= 1.0]
    assert 1 <= len(late) <= FailedAuthentications.PAUSED_AT_ONCE  # the rest at once


# -- the collector's policy -------------------------------------------------------------------


def test_long_lived_state_is_frozen_out_of_full_collections() -> None:
    from contact_center.collector import freeze_survivors

    survivors = [{"conversation": i, "turns": []} for i in range(1000)]  # (tracked)
    assert all(gc.is_tracked(s) for s in survivors)
    freeze_survivors()
    # Frozen: still tracked, in no generation a collection walks. (Not counted by
    # get_freeze_count deltas: another app's freezer in this process may freeze first.)
    walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    assert all(gc.is_tracked(s) for s in survivors)
    assert not any(id(s) in walked for s in survivors)
    assert gc.get_freeze_count() >= len(survivors)


def test_what_survives_a_young_collection_is_frozen_while_the_freezer_runs() -> None:
    """No collection walks a survivor twice (contact_center.collector); the callback goes
    with the freezer."""
    from contact_center.collector import keep_long_lived_state_frozen

    async def scenario() -> tuple[bool, bool]:
        freezer = asyncio.create_task(keep_long_lived_state_frozen(period=3600))
        await asyncio.sleep(0)  # (it has started)
        survivor = {"turns": []}
        gc.collect(0)
        frozen = not any(o is survivor for o in gc.get_objects(1) + gc.get_objects(2))
        freezer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await freezer
        after = {"turns": []}
        gc.collect(0)
        walked = any(o is after for o in gc.get_objects(1))
        return frozen, walked

    frozen, walked_after = asyncio.run(scenario())
    assert frozen and walked_after


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_frozen_garbage_is_reclaimed_by_the_periodic_full_collection() -> None:
    import weakref

    from contact_center.collector import collect_everything, freeze_survivors
    from contact_center.pipeline import bulk_load

    with bulk_load(freeze=True):
        made_while_loading = weakref.ref(_Cycle())  # garbage at once: never frozen
    assert made_while_loading() is None
    alive = _Cycle()
    freeze_survivors()
    later_garbage = weakref.ref(alive)
    del alive  # a cycle that became garbage after it was frozen...
    gc.collect()
    assert later_garbage() is not None  # ...is kept by the freeze,
    collect_everything()
    assert later_garbage() is None  # until the periodic full collection
    frozen = gc.get_freeze_count()
    with bulk_load(freeze=False):
        pass
    assert gc.get_freeze_count() <= frozen  # no freezing when it is turned off


@pytest.mark.app
def test_the_running_service_freezes_its_state_unless_told_not_to(
        strict: Any, backend: str) -> None:
    with strict(gc_freeze_seconds=0) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert getattr(runtime, "freezer", None) is None
        assert pipeline_of(client).freeze is False
        assert "gc-freezer" not in client.portal.call(_task_names)  # type: ignore[union-attr]
    with strict() as client:
        tasks = client.portal.call(_task_names)  # type: ignore[union-attr]
        assert "gc-freezer" in tasks


async def _task_names() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks()}
