"""The real thing: `contact-center serve` under uvicorn, driven over real sockets, plus
the CLI and the simulator against it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from analytics.default_rules import DEFAULT_RULES
from analytics.quality import load_corpus, replay_corpus
from contact_center.simulate import default_source

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "contact_center" / "samples" / "conversations.jsonl"


def command() -> list[str]:
    """The installed console script when there is one (CI installs the package)."""
    script = shutil.which("contact-center", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "contact_center"]


def cli(*args: str) -> str:
    done = subprocess.run([*command(), *args], capture_output=True,
                          text=True, timeout=120, cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Server:
    def __init__(self, tmp_path: Path, db: str | None = None, **env: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.db = db or tmp_path / "server.db"
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [*command(), "serve", "--port", str(self.port), "--db", str(self.db)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT,
            env=os.environ | env)
        threading.Thread(target=self._collect, daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> float:
        """SIGTERM; returns how long the server took to exit (inf if it had to be killed)."""
        started = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return float("inf")
        return time.monotonic() - started

    def token(self, username: str, *profiles: str) -> str:
        if profiles:
            cli("users", "create", username, *[f"--profile={p}" for p in profiles],
                "--db", str(self.db))
        return cli("tokens", "create", username, "--db", str(self.db)).strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server"))
    yield s
    took = s.stop()
    assert took < 15, "the server did not shut down promptly on SIGTERM"


def test_serve_explains_docs_and_admin_token(server: Server) -> None:
    text = "".join(server.output)
    assert f"{server.url}/docs" in text
    assert "created user 'admin'" in text
    assert f"contact-center tokens create admin --db {server.db}" in text
    admin = server.token("admin")
    me = httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {admin}"})
    assert me.json()["profiles"] == ["Admin"]
    assert httpx.get(f"{server.url}/v1/live/agents").status_code == 401
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "contact-center"


def test_an_unauthorised_body_is_refused_before_it_is_sent(server: Server) -> None:
    """A client that announces 16 MB and sends 10 bytes gets its 401 at once: the server
    waits for no body it would have to parse."""
    agent = server.token("body-sender", "Agent")
    for headers in ("", f"Authorization: Bearer {agent}\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(f"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n{headers}"
                        "Content-Type: application/json\r\n"
                        "Content-Length: 16000000\r\n\r\n{\"id\": \"x\"".encode())
            answer = raw.recv(4096).decode()
        status = "401" if not headers else "403"
        assert answer.startswith(f"HTTP/1.1 {status}"), answer[:200]


def test_oversized_frame_closes_only_that_socket(server: Server) -> None:
    token = server.token("big-connector", "Connector")
    headers = {"Authorization": f"Bearer {token}"}

    async def scenario() -> None:
        async with connect(f"{server.ws}/v1/ingest", additional_headers=headers) as calm, \
                connect(f"{server.ws}/v1/ingest", additional_headers=headers,
                        max_size=None) as rude:
            await calm.recv()
            await rude.recv()
            with pytest.raises(ConnectionClosed) as closed:
                # The server may close while the frame is still going out.
                await rude.send("x" * (2 * 1024 * 1024))
                await rude.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await calm.send(json.dumps({"type": "conversation.started",
                                        "conversation": {"id": "after-big"}}))
            assert json.loads(await calm.recv())["status"] == "accepted"

    asyncio.run(scenario())
    assert server.proc.poll() is None


def test_a_client_vanishing_with_replies_owed_leaves_no_stuck_handler(server: Server) -> None:
    """Blast events without reading a reply, then drop the connection: the server
    finishes the accepted work, frees the socket, and serves others (and the fixture
    then checks it still shuts down promptly)."""
    token = server.token("vanishing", "Connector")
    headers = {"Authorization": f"Bearer {token}"}
    burst = [json.dumps({"type": "conversation.started", "conversation": {"id": "burst"}})]
    burst += [json.dumps({"type": "segment", "conversation_id": "burst", "segment_id": str(i),
                          "role": "customer", "text": f"message number {i}"})
              for i in range(3000)]

    async def scenario() -> None:
        ws = await connect(f"{server.ws}/v1/ingest", additional_headers=headers)
        await ws.recv()
        for frame in burst:
            await ws.send(frame)
        ws.transport.abort()  # no close frame, replies unread
        await asyncio.sleep(1.0)
        async with connect(f"{server.ws}/v1/ingest", additional_headers=headers) as fresh:
            await fresh.recv()
            await fresh.send(json.dumps({"type": "conversation.started",
                                         "conversation": {"id": "after-burst"}}))
            assert json.loads(await fresh.recv())["status"] == "accepted"

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/healthz").json()["queue_depth"] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/healthz").json()["queue_depth"] == 0


def test_simulate_replays_real_conversations_and_alerts_fire(server: Server) -> None:
    out = cli("simulate", "--url", server.url, "--db", str(server.db), "--file", str(SAMPLE),
              "--rate", "0", "--concurrency", "4")
    alerts = [line for line in out.splitlines() if line.startswith("ALERT")]
    assert alerts, out
    suffix = "-" + alerts[0].split()[4].rsplit("-", 1)[1]  # this replay's conversations
    # Live traffic hits exactly what replaying the sample through the engine raises.
    expected = sorted(f"{t.rule.id} {c['conversation_id']}" for c, t in
                      replay_corpus(DEFAULT_RULES, load_corpus(SAMPLE)))
    assert len(expected) >= 10
    admin = {"Authorization": f"Bearer {server.token('simulate-check', 'Admin')}"}
    live = [a for a in httpx.get(f"{server.url}/v1/alerts", headers=admin,
                                 params={"limit": 1000}).json()["alerts"]
            if a["conversation_id"].endswith(suffix)]
    assert all(a["hit_count"] == len(a["hits"]) for a in live)  # (every hit kept)
    assert sorted(f"{h['rule_id']} {a['conversation_id'].removesuffix(suffix)}"
                  for a in live for h in a["hits"]) == expected, out
    # It prints what notifies a supervisor: each alert's first hit, and each hit that
    # raised its alert's severity (docs/alerts.md), with the rule that did it.
    rank = {"low": 1, "medium": 2, "high": 3}
    notified = []
    for alert in live:
        highest = 0
        for hit in alert["hits"]:
            if rank[hit["severity"]] > highest:
                highest = rank[hit["severity"]]
                notified.append(f"{hit['rule_id']} {alert['conversation_id']}")
    assert len(notified) >= 10
    assert sorted(f"{a.split()[2]} {a.split()[4]}" for a in alerts) == sorted(notified), out
    summary = out.strip().splitlines()[-1]
    assert "30 conversations" in summary and "errors: none" in summary, out
    assert f"alerts seen {len(notified)}" in summary


def test_refused_sockets_are_answered_and_not_logged_as_errors(server: Server) -> None:
    async def refused_status(headers: dict[str, str]) -> tuple[int, str | None]:
        try:
            async with connect(f"{server.ws}/v1/ingest", additional_headers=headers):
                return 101, None
        except InvalidStatus as exc:
            return exc.response.status_code, exc.response.headers.get("WWW-Authenticate")

    agent = server.token("refused-agent", "Agent")
    assert asyncio.run(refused_status({})) == (401, "Bearer")
    assert asyncio.run(refused_status({"Authorization": f"Bearer {agent}"})) == (403, None)
    time.sleep(0.2)
    assert not [line for line in server.output if line.startswith("ERROR")]


def test_cli_refuses_a_missing_database_and_lists_tokens(server: Server,
                                                         tmp_path: Path) -> None:
    missing = subprocess.run(
        [*command(), "tokens", "create", "admin", "--db", str(tmp_path / "nope.db")],
        capture_output=True, text=True, cwd=PROJECT)
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    server.token("lister", "Analyst")
    cli("tokens", "create", "lister", "--label", "second", "--db", str(server.db))
    listed = cli("tokens", "list", "lister", "--db", str(server.db)).splitlines()
    assert [line.split("\t")[1] for line in listed] == ["-", "second"]
    token_id = listed[0].split("\t")[0]
    assert cli("tokens", "revoke", token_id, "--db", str(server.db)).strip() == "revoked"
    assert cli("tokens", "list", "lister", "--db", str(server.db)).splitlines()[0] \
        .endswith("revoked")
    assert "lister\tAnalyst" in cli("users", "list", "--db", str(server.db))


def test_secrets_never_reach_the_logs(server: Server) -> None:
    token = server.token("log-check", "Connector")
    httpx.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    httpx.get(f"{server.url}/v1/me", headers={"Authorization": "Bearer cc_wrong"})
    time.sleep(0.2)
    text = "".join(server.output)
    assert "GET /v1/me" in text  # the access log is there, and it holds no token
    assert token not in text and "cc_wrong" not in text


def test_debug_logs_hold_no_token_or_transcript_text(tmp_path: Path) -> None:
    """At DEBUG, JSON lines, over a real socket: the WebSocket library's frame-by-frame
    lines (handshake headers, frames) stay off; the socket's answer has a request id."""
    server = Server(tmp_path, CC_LOG_LEVEL="DEBUG", CC_LOG_FORMAT="json")
    try:
        token = server.token("debug-connector", "Connector")

        async def talk() -> str:
            async with connect(f"{server.ws}/v1/ingest",
                               additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "conversation.started",
                                          "conversation": {"id": "dbg"}}))
                await ws.send(json.dumps({"type": "segment", "conversation_id": "dbg",
                                          "segment_id": "1", "role": "customer",
                                          "text": "my card is 4111 1111 1111 1111"}))
                await ws.recv(), await ws.recv()
                assert ws.response is not None
                return str(ws.response.headers["x-request-id"])

        request_id = asyncio.run(talk())
        time.sleep(0.3)
        lines = [json.loads(line) for line in server.output if line.startswith("{")]
        assert any(line["request_id"] == request_id and "WS /v1/ingest 101" in line["message"]
                   for line in lines)
        text = "".join(server.output)
        assert token not in text and "4111 1111" not in text  # (hex ids may hold "4111")
    finally:
        server.stop()


def test_simulate_source_is_the_shared_corpus_else_the_packaged_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = tmp_path / "alone" / "checkout"
    alone.mkdir(parents=True)
    monkeypatch.chdir(alone)
    sample = default_source()
    assert sample.name == "conversations.jsonl" and "samples" in sample.parts
    assert len(load_corpus(sample)) == 30

    beside = tmp_path / "beside"
    corpus = beside / "shared" / "data" / "twitter-care" / "conversations.jsonl"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(sample.read_text().splitlines()[0] + "\n")
    (beside / "checkout").mkdir()
    monkeypatch.chdir(beside / "checkout")
    assert default_source().resolve() == corpus.resolve()
    assert len(load_corpus(default_source())) == 1


def test_rules_round_trip_through_a_file_under_version_control(server: Server,
                                                               tmp_path: Path) -> None:
    admin = server.token("rules-admin", "Admin")
    exported = tmp_path / "rules.json"
    cli("rules", "export", "--url", server.url, "--token", admin, "-o", str(exported))
    original = exported.read_text()
    assert "valid" in cli("rules", "check", str(exported))
    document = json.loads(original)
    turn_rule = next(r for r in document["rules"] if r["id"] == "very-negative-turn")
    turn_rule["below"] = -0.6
    document["rules"] = [r for r in document["rules"] if r["id"] != "profanity"]
    exported.write_text(json.dumps(document))
    out = cli("rules", "import", str(exported), "--url", server.url, "--token", admin)
    assert "changed   very-negative-turn (version 1 -> 2)" in out
    assert "removed   profanity" in out and "unchanged insult (version 1)" in out
    live = httpx.get(f"{server.url}/v1/rules/very-negative-turn",
                     headers={"Authorization": f"Bearer {admin}"}).json()
    assert live["below"] == -0.6 and live["version"] == 2
    # A broken file is refused before anything is sent, naming what is wrong.
    turn_rule["clear_above"] = -0.9
    exported.write_text(json.dumps(document))
    for args in (("check", str(exported)),
                 ("import", str(exported), "--url", server.url, "--token", admin)):
        done = subprocess.run([*command(), "rules", *args], capture_output=True, text=True,
                              cwd=PROJECT, timeout=60)
        assert done.returncode == 1 and "clear_above must be >= below" in done.stderr
    # Put the defaults back for the other tests on this server.
    exported.write_text(original)
    out = cli("rules", "import", str(exported), "--url", server.url, "--token", admin)
    assert "changed   very-negative-turn (version 2 -> 3)" in out
    assert "added     profanity (version 1)" in out
    denied = subprocess.run([*command(), "rules", "export", "--url", server.url, "--token",
                             server.token("rules-watcher", "CallCenterManager")],
                            capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert denied.returncode == 1 and "HTTP 403" in denied.stderr


def test_the_cli_runs_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    """--db takes a postgresql:// URL everywhere; migrate is repeatable; serve stores
    in PostgreSQL."""
    assert "is up to date" in cli("migrate", "--db", postgres_database)
    assert "is up to date" in cli("migrate", "--db", postgres_database)
    cli("users", "create", "pat", "--profile=Admin", "--db", postgres_database)
    token = cli("tokens", "create", "pat", "--db", postgres_database).strip()
    assert token.startswith("cc_")
    assert "pat\tAdmin" in cli("users", "list", "--db", postgres_database)
    wrong = postgres_database.rsplit("/", 1)[0].replace("postgres@", "postgres:S3cret@") + \
        "/no_such_database?password=Other"
    for db in (wrong, "mysql://db.example/cc"):
        done = subprocess.run([*command(), "migrate", "--db", db], capture_output=True,
                              text=True, cwd=PROJECT, timeout=60)
        assert done.returncode == 1 and "cannot open the database" in done.stderr, done.stderr
        assert "S3cret" not in done.stderr and "Other" not in done.stderr
    assert "unsupported database URL scheme" in done.stderr
    assert not (PROJECT / "mysql:").exists()
    served = Server(tmp_path, postgres_database)
    try:
        h = {"Authorization": f"Bearer {token}"}
        cli("users", "create", "feed", "--profile=Connector", "--db", postgres_database)
        feed = {"Authorization": "Bearer " + cli("tokens", "create", "feed", "--db",
                                                 postgres_database).strip()}
        created = httpx.post(f"{served.url}/v1/conversations", headers=feed, json={"id": "pg-1"})
        assert created.status_code == 201, created.text
        said = httpx.post(f"{served.url}/v1/conversations/pg-1/segments", headers=feed, json={
            "segments": [{"segment_id": "1", "role": "customer",
                          "text": "I will cancel my account"}]})
        assert said.status_code == 200, said.text
        transcript = httpx.get(f"{served.url}/v1/transcripts/pg-1", headers=h).json()
        assert [t["text"] for t in transcript["turns"]] == ["I will cancel my account"]
        assert [h["rule_id"] for a in transcript["alerts"] for h in a["hits"]] == [
            "churn-or-legal-threat"]
    finally:
        assert served.stop() < 15


def test_serve_on_a_place_it_cannot_write_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = subprocess.run([*command(), "serve", "--db", str(blocker / "cc.db")],
                          capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "cannot open the database" in done.stderr and "directory" in done.stderr


def test_slow_or_silent_connections_are_closed_and_capped(tmp_path: Path) -> None:
    """Slowloris and half-open handshakes: connections whose headers do not arrive in
    time are closed, and past the connection cap a new one gets 503 at once; a
    well-behaved client is served throughout."""
    server = Server(tmp_path, CC_HEADER_TIMEOUT_SECONDS="1", CC_MAX_CONNECTIONS="60")
    held: list[socket.socket] = []
    try:
        for i in range(50):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if i % 2:  # half the headers of a socket handshake, then nothing more
                raw.sendall(b"GET /v1/ingest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            held.append(raw)
        time.sleep(0.2)
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        crowd = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
                 for _ in range(20)]  # past the cap of 60
        crowd[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert crowd[-1].recv(64).startswith(b"HTTP/1.1 503")
        started = time.monotonic()
        for raw in [*held, *crowd[:-1]]:
            assert raw.recv(64) == b"", "a connection that sent no full request stayed open"
        assert time.monotonic() - started < 5  # about the 1 s header timeout
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    finally:
        for raw in held:
            raw.close()
        server.stop()


def _p50_ms(url: str, token: str, requests: int = 40) -> tuple[float, float]:
    """A well-behaved client's GET /v1/me latency: p50 and max, in milliseconds."""
    took = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for _ in range(requests):
            started = time.perf_counter()
            assert client.get(f"{url}/v1/me").status_code == 200
            took.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    took.sort()
    return took[len(took) // 2], took[-1]


def test_a_well_behaved_client_is_served_during_floods_and_slowloris(tmp_path: Path) -> None:
    """Issue 15's attacks at once, bounded, on loopback: four clients sending 16 MB
    bodies without a token, 200 slowloris connections, and a bad-token flood. A
    well-behaved client's latency is measured before and during (printed; bounded here
    only far above what the fixes give, far below what their absence gave: 3.9 s)."""
    server = Server(tmp_path, CC_HEADER_TIMEOUT_SECONDS="2")
    token = server.token("admin")
    stop = threading.Event()
    body = b'{"id": "' + b"x" * (16 * 1024 * 1024) + b'"}'

    def big_bodies() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
                    raw.sendall(b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    raw.recv(1024)
            except OSError:  # refused before the body: the server closed on us
                pass

    def slowloris() -> None:
        held = []
        try:
            while not stop.is_set():
                while len(held) < 200:
                    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    raw.sendall(b"GET /v1/me HTTP/1.1\r\n")
                    held.append(raw)
                for raw in list(held):
                    try:
                        raw.sendall(b"X-a: b\r\n")
                    except OSError:  # closed by the header timeout: open another
                        held.remove(raw)
                        raw.close()
                stop.wait(0.5)
        finally:
            for raw in held:
                raw.close()

    def bad_tokens() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                client.get(f"{server.url}/v1/me", headers={"Authorization": "Bearer cc_no"})

    try:
        before = _p50_ms(server.url, token)
        attackers = [threading.Thread(target=t, daemon=True)
                     for t in (big_bodies, big_bodies, big_bodies, big_bodies, slowloris,
                               bad_tokens)]
        for attacker in attackers:
            attacker.start()
        time.sleep(1.0)
        during = _p50_ms(server.url, token)
        stop.set()
        for attacker in attackers:
            attacker.join(30)
        print(f"\nwell-behaved GET /v1/me p50/max: before {before[0]:.1f}/{before[1]:.1f} ms,"
              f" during the attacks {during[0]:.1f}/{during[1]:.1f} ms")
        assert during[0] < 500
    finally:
        stop.set()
        server.stop()


def test_backup_copies_the_live_database(server: Server, tmp_path: Path) -> None:
    """An online backup while the service runs and ingests: the copy opens, checks out,
    is private, and holds what was acknowledged before it."""
    connector = server.token("backup-connector", "Connector")
    posted = httpx.post(f"{server.url}/v1/conversations", json={"id": "backup-1"},
                        headers={"Authorization": f"Bearer {connector}"})
    assert posted.status_code == 201
    target = tmp_path / "copy.db"
    assert "backed up" in cli("backup", "--db", str(server.db), "--to", str(target))
    assert target.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("SELECT id FROM conversations WHERE id = 'backup-1'").fetchone()
    again = subprocess.run([*command(), "backup", "--db", str(server.db), "--to",
                            str(target)], capture_output=True, text=True, cwd=PROJECT)
    assert again.returncode == 1 and "exists" in again.stderr
