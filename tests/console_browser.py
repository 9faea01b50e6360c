"""The console's end-to-end harness: a real service (`contact-center serve`) in a process
of its own, in each deployment (embedded on SQLite; scale-out: an API node with its
worker on Redis and PostgreSQL), its users with passwords, and Debian's Chromium (both
deployments) and Firefox ESR (the embedded one: what differs between browsers is the
page, not the server) driven by Playwright. Shared by the console tests
(tests/test_console*.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, on_server, run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Debian's Firefox, driven over WebDriver BiDi (Playwright's "moz-firefox" channel): its
# own patched Firefox is a download this network refuses.
FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
BROWSERS = {"chromium": CHROMIUM, "firefox": FIREFOX}
AXE = Path(__file__).parent / "data" / "axe" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"
# (Chromium's background connections are refused by a closed network: left off.)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Who signs in: username -> (profiles, agent id, scope queues)
PEOPLE: dict[str, tuple[list[str], str | None, list[str]]] = {
    "sam": (["CallCenterManager"], None, []),
    "ann": (["Analyst"], None, []),
    "ada": (["Admin"], None, []),
    "kim": (["Agent"], "agent-7", []),
    "wes": (["WallOnly"], None, []),  # sees the wall, may not monitor
    "bea": (["CallCenterManager"], None, ["billing"]),  # billing only
}


def browser_available(browser: str) -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(BROWSERS[browser]).exists()


def need_browser(browser: str) -> None:
    """CI installs the browsers (.ci/run): there a missing one fails; elsewhere it skips."""
    if browser_available(browser):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{browser} and Playwright are needed for the console tests")
    pytest.skip(f"{browser} or Playwright is not installed (.ci/run installs them)")


@dataclass
class Service:
    """A running service: its URL, database, a connector token, and how to restart it."""

    root: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    connector: str = ""
    log: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "contact_center", *args],
                              input=stdin, capture_output=True, text=True, env=self.env,
                              cwd=self.root, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self) -> None:
        log = self.root / f"serve-{len(self.log)}.log"
        self.log.append(log)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "contact_center", "serve", "--port", str(self.port)],
            env=self.env, cwd=self.root, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the service did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def call(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> Any:
        """The API with a bearer token (the connector's unless told)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token or self.connector}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def say(self, cid: str, sid: str, text: str, role: str = "customer") -> Any:
        return self.call("POST", f"/v1/conversations/{cid}/segments",
                         {"segments": [{"segment_id": sid, "role": role, "text": text}]})

    def start_conversation(self, cid: str, queue: str = "billing",
                           agent_id: str = "agent-7") -> Any:
        return self.call("POST", "/v1/conversations", {
            "id": cid, "queue": queue, "agent_id": agent_id, "channel": "chat",
            "customer": {"id": f"cust-{cid}", "name": "Pat Doe"}})

    def end_conversation(self, cid: str) -> Any:
        return self.call("POST", "/v1/events", {"events": [
            {"type": "conversation.ended", "conversation_id": cid}]})


def start_service(root: Path, database: str | None = None,
                  redis: str | None = None) -> Iterator[Service]:
    """The service on SQLite in ``root``, or on ``database`` (PostgreSQL) and ``redis``."""
    env = {**os.environ, "CC_DATABASE": database or str(root / "cc.db"),
           "PYTHONUNBUFFERED": "1"}
    if redis:
        env |= {"CC_REDIS": redis, "CC_WORKER": "true", "CC_PARTITIONS": "4",
                "CC_REDIS_NAMESPACE": f"console-{root.name}"}
    env.pop("CC_CONFIG", None)
    service = Service(root, free_port(), env)
    service.cli("migrate")
    service.cli("profiles", "create", "WallOnly", "--permission", "realtime-metrics",
                "--description", "the live wall, nothing else")
    for name, (profiles, agent_id, queues) in PEOPLE.items():
        more = ["--agent-id", agent_id] if agent_id else []
        service.cli("users", "create", name, *[a for p in profiles for a in ("--profile", p)],
                    *more)
        service.cli("users", "password", name, stdin=f"{PASSWORD}\n{PASSWORD}\n")
        if queues:
            service.cli("users", "scope", name, *[a for q in queues for a in ("--queue", q)])
    service.cli("users", "create", "connector", "--profile", "Connector")
    service.connector = service.cli("tokens", "create", "connector").strip().split()[-1]
    service.start()
    try:
        yield service
    finally:
        service.stop()


# The CSP hash of the style Playwright's screenshots add to sync animations.
_SYNC_ANIMATIONS_STYLE = base64.b64encode(hashlib.sha256(b"body {}").digest()).decode()


class Console:
    """One browser page on the console, with what its JavaScript logged as errors."""

    def __init__(self, page: Any, service: Service, browser: str) -> None:
        self.page, self.service, self.browser = page, service, browser
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str) -> Any:
        self.page.goto(f"{self.service.url}{path}")
        return self.page

    def sign_in(self, username: str, then: str = "/console") -> Any:
        self.open(f"/console/sign-in?next={then}")
        self.page.fill("#username", username)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(lambda url: "/sign-in" not in url)
        return self.page

    def accessibility_violations(self) -> list[dict[str, Any]]:
        """axe-core's violations on the page as it is now (WCAG 2 A and AA rules)."""
        # (Evaluated, not added as a script tag: the page's policy refuses inline script.)
        self.page.evaluate(AXE.read_text())
        found: list[dict[str, Any]] = self.page.evaluate(
            "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']}))"
            ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
            " target: v.nodes[0].target}))")
        return found

    def screenshot(self, name: str, tmp: Path) -> Path:
        """A screenshot of the page: into docs/screenshots with CC_WRITE_SCREENSHOTS=1
        (Chromium's)."""
        to_docs = os.environ.get("CC_WRITE_SCREENSHOTS") and self.browser == "chromium"
        folder = SCREENSHOTS if to_docs else tmp
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        # Playwright's screenshots add inline <style>s to the page (to sync animations, to
        # hide the caret); the page's policy refuses them, and Firefox logs that as an
        # error, which is the tool's, not the page's. The caret is left as it is.
        caret = "initial" if self.browser == "firefox" else "hide"
        self.page.screenshot(path=str(path), full_page=False, caret=caret)
        self.errors[:] = [e for e in self.errors if _SYNC_ANIMATIONS_STYLE not in e]
        return path


# -- fixtures (registered in tests/conftest.py) ----------------------------------------


@pytest.fixture(scope="module", params=["embedded-chromium", "scaleout-chromium",
                                        "embedded-firefox"])
def console_setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Which deployment serves the console and which browser shows it."""
    deployment, browser = request.param.split("-")
    return deployment, browser


@pytest.fixture(scope="module")
def console_service(console_setup: tuple[str, str], request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    deployment, browser = console_setup
    need_browser(browser)
    root = tmp_path_factory.mktemp("console")
    if deployment == "embedded":
        yield from start_service(root)
        return
    redis = request.getfixturevalue("redis_server").url
    server = request.getfixturevalue("postgres_database")
    name = f"{server.rsplit('/', 1)[1]}_{root.name}".replace("-", "_")
    aside(f'CREATE DATABASE "{name}"')
    try:
        yield from start_service(root, server.rsplit("/", 1)[0] + "/" + name, redis)
    finally:
        aside(f'DROP DATABASE "{name}" WITH (FORCE)')


def aside(sql: str) -> None:
    """Run ``sql`` on the test PostgreSQL server from a thread of its own (Playwright's
    sync API may hold this thread's event loop)."""
    worker = threading.Thread(target=lambda: run(on_server(sql)))
    worker.start()
    worker.join()


@pytest.fixture(scope="module")
def browser(console_setup: tuple[str, str], console_service: Service) -> Iterator[Any]:
    """A browser per service: started after it (Playwright's sync API holds the thread's
    event loop while it runs, and the service's set-up needs one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        if console_setup[1] == "firefox":
            launched = playwright.firefox.launch(channel="moz-firefox",
                                                 executable_path=FIREFOX)
        else:
            launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                                  args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console(browser: Any, console_setup: tuple[str, str],
            console_service: Service) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = Console(context.new_page(), console_service, console_setup[1])
    yield opened
    context.close()
    assert opened.errors == [], opened.errors
