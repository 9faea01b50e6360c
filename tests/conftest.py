"""Shared fixtures: a real app on a throwaway store (a SQLite file, or a schema of a
throwaway PostgreSQL database), driven through its sockets and HTTP routes, and users of
every built-in profile with real API tokens."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from contact_center.app import create_app
from contact_center.settings import Settings
from contact_center.stores import Store
from contact_center.stores.postgres import PostgresStore
from contact_center.stores.sqlite import SQLiteStore
from monitoring.credentials import create_user, issue_token

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Every store implementation runs the same tests; every app test also runs on the
# scale-out deployment (an API node with its worker, on Redis and PostgreSQL).
STORE_BACKENDS = ["sqlite", "postgres"]
APP_BACKENDS = [*STORE_BACKENDS, "scaleout"]
# A PostgreSQL server the tests may create a throwaway database on (.ci/run starts one).
POSTGRES = os.environ.get("CC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
_run_database: dict[str, str] = {}
_run_redis: dict[str, str] = {}


def make_store(backend: str, tmp_path: Path) -> Store:
    """The store of one test: the same ``tmp_path`` gives the same data."""
    if backend == "sqlite":
        return SQLiteStore(tmp_path / "cc.db")
    if backend in ("postgres", "scaleout"):
        return PostgresStore(_run_database["url"], min_size=1, max_size=4,
                             schema=_schema(tmp_path))
    raise ValueError(backend)


async def on_server(sql: str) -> None:
    """Run ``sql`` on the test PostgreSQL server (e.g. CREATE DATABASE)."""
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database for this test run (each test gets its own schema in it),
    dropped at the end."""
    name = f"cc_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        run(on_server(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES} is needed for the postgres backend: {exc} "
                    "(.ci/run starts one; or set CC_TEST_POSTGRES)")
    _run_database["url"] = POSTGRES.rsplit("/", 1)[0] + "/" + name
    yield _run_database["url"]
    run(on_server(f'DROP DATABASE "{name}" WITH (FORCE)'))


def _schema(tmp_path: Path) -> str:
    return "t_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]


def namespace(tmp_path: Path) -> str:
    """The Redis namespace of one test's scale-out deployment."""
    return _schema(tmp_path)


class Stored:
    """What a test's store holds, read raw whatever the backend: plain SQL without
    parameters, and every stored byte (to prove what was never written)."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend, self.tmp_path = backend, tmp_path

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            with sqlite3.connect(self.tmp_path / "cc.db") as db:
                return db.execute(sql).fetchall()
        return [tuple(r) for r in run(self._postgres(lambda db: db.fetch(sql)))]

    def everything(self) -> bytes:
        if self.backend == "sqlite":
            return b"".join(p.read_bytes() for p in self.tmp_path.glob("cc.db*"))

        async def dump(db: asyncpg.Connection) -> bytes:
            tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1",
                                    _schema(self.tmp_path))
            text = [await db.fetchval(f'SELECT string_agg(t::text, \'\n\') FROM "{t[0]}" t')
                    for t in tables]
            return "\n".join(t for t in text if t).encode()

        return bytes(run(self._postgres(dump)))

    async def _postgres(self, work: Callable[[asyncpg.Connection], Any]) -> Any:
        db = await asyncpg.connect(_run_database["url"],
                                   server_settings={"search_path": _schema(self.tmp_path)})
        try:
            return await work(db)
        finally:
            await db.close()


@pytest.fixture
def stored(backend: str, tmp_path: Path) -> Stored:
    return Stored(backend, tmp_path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        app = "client" in metafunc.fixturenames or metafunc.definition.get_closest_marker(
            "app") is not None
        metafunc.parametrize("backend", APP_BACKENDS if app else STORE_BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    if request.param in ("postgres", "scaleout"):
        request.getfixturevalue("postgres_database")
    if request.param == "scaleout":
        request.getfixturevalue("redis_server")
    return str(request.param)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server: its own port and directory, AOF on (fsync always), no
    eviction: what docs/deployment.md asks of a production Redis."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cc-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is needed for the scale-out tests (.ci/run installs it)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the run; each test uses its own key namespace."""
    server = RedisServer()
    server.start()
    _run_redis["url"] = server.url
    yield server
    server.remove()


def scale_out(settings: Settings, tmp_path: Path, redis_url: str, **more: Any) -> Settings:
    """These settings as an API node (with its worker) in this test's own namespace."""
    return settings.model_copy(update={
        "redis": redis_url, "redis_namespace": namespace(tmp_path), "worker": True,
        "partitions": 4} | more)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database=tmp_path / "cc.db")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Users:
    """Creates users with profiles and hands out their tokens."""

    def __init__(self, store_factory: Callable[[], Store]) -> None:
        self._store_factory = store_factory
        self._ids = itertools.count(1)

    def token(self, *profiles: str, agent_id: str | None = None,
              username: str | None = None) -> str:
        async def work() -> str:
            store = self._store_factory()
            await store.open()
            try:
                name = username or f"user{next(self._ids)}"
                user = await create_user(store, name, list(profiles), agent_id)
                return (await issue_token(store, user, "test"))[1]
            finally:
                await store.close()

        return str(run(work()))


@pytest.fixture
def users(backend: str, tmp_path: Path) -> Users:
    return Users(lambda: make_store(backend, tmp_path))


def make_app(settings: Settings, backend: str, tmp_path: Path) -> FastAPI:
    """The app of one test on ``backend``: the same ``tmp_path`` gives the same data (and,
    scale-out, the same Redis namespace)."""
    if backend == "scaleout":
        settings = scale_out(settings, tmp_path, _run_redis["url"])
    return create_app(settings, make_store(backend, tmp_path))


@pytest.fixture
def client(backend: str, settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(settings, backend, tmp_path)) as c:
        if backend == "scaleout":
            wait_for_partitions(c)
        yield c


def wait_for_partitions(client: TestClient, timeout: float = 10.0) -> None:
    """Until the in-process worker holds every partition."""
    deadline = time.monotonic() + timeout
    while client.get("/healthz").json().get("partitions_unowned") != 0:
        assert time.monotonic() < deadline, client.get("/healthz").json()
        time.sleep(0.02)


def pipeline_of(client: TestClient) -> Any:
    """The pipeline applying this app's events (embedded, or its in-process worker)."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    worker = getattr(runtime, "worker", None)
    return worker[0].pipeline if worker else runtime.pipeline


def runner_of(client: TestClient) -> Any:
    """The task running that pipeline."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    worker = getattr(runtime, "worker", None)
    return worker[1] if worker else runtime.runner


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Connector:
    """An ingest socket: send events, read their replies."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.hello = ws.receive_json()

    def send(self, event: dict[str, Any]) -> dict[str, Any]:
        self.ws.send_json(event)
        return self.ws.receive_json()  # type: ignore[no-any-return]

    def start(self, cid: str, **conversation: Any) -> dict[str, Any]:
        info = {"id": cid, "channel": "chat", "queue": "billing", "agent_id": "agent-1",
                "customer": {"id": f"cust-{cid}", "name": "Pat", "email": "pat@example.com"},
                "recording": "all"} | conversation
        return self.send({"type": "conversation.started", "conversation": info})

    def say(self, cid: str, sid: str, text: str, role: str = "customer",
            **extra: Any) -> dict[str, Any]:
        return self.send({"type": "segment", "conversation_id": cid, "segment_id": sid,
                          "role": role, "text": text} | extra)

    def end(self, cid: str) -> dict[str, Any]:
        return self.send({"type": "conversation.ended", "conversation_id": cid})


def read_replies(ws: Any, count: int) -> list[dict[str, Any]]:
    """``count`` replies from an ingest socket, one a frame or several
    (``?replies=batched``)."""
    replies: list[dict[str, Any]] = []
    while len(replies) < count:
        frame = ws.receive_json()
        replies += frame["replies"] if frame["type"] == "replies" else [frame]
    return replies


@pytest.fixture
def connector_token(users: Users) -> str:
    return users.token("Connector", username="connector")


@pytest.fixture
def ingest(client: TestClient, connector_token: str) -> Iterator[Connector]:
    with client.websocket_connect("/v1/ingest", headers=auth(connector_token)) as ws:
        yield Connector(ws)


# Very negative to VADER, and free of the words the signal rules look for: these raise
# the sentiment rules alone.
ANGRY = [
    "This is terrible, I am so upset and sad, everything went badly wrong!",
    "I hate this, it is sad and painful and so wrong!",
    "I am so angry and hurt, this is a terrible, miserable mess!",
]
HAPPY = "Thank you so much, that is wonderful, great help, I really love it!"


def refused(client: TestClient, url: str, headers: dict[str, str]) -> WebSocketDenialResponse:
    """Open a socket that must be refused at the handshake; return the refusal."""
    with pytest.raises(WebSocketDenialResponse) as denied:  # noqa: SIM117
        with client.websocket_connect(url, headers=headers):
            pass
    return denied.value


# The console's browser fixtures (tests/console_browser.py).
from tests.console_browser import browser, console, console_service, console_setup  # noqa: E402, F401
