"""The supervisor console end to end, in headless Chromium: signing in, the live wall,
alerts, monitoring, whisper, permissions and scope, accessibility, reconnection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.console_browser import Console, Service


def test_signing_in_and_the_simulators_conversations_on_the_wall(
        console: Console, console_service: Service, tmp_path: Path) -> None:
    page = console.open("/console/wall")
    assert "/console/sign-in" in page.url  # (not signed in)
    page.fill("#username", "sam")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('Wrong username or password')")
    console.errors.clear()  # (the browser logs the 401 itself)
    console.sign_in("sam", then="/console/wall")
    assert page.url.endswith("/console/wall")
    simulator = subprocess.Popen(
        [sys.executable, "-m", "contact_center", "simulate", "--url", console_service.url,
         "--token", console_service.connector, "--limit", "6", "--rate", "40"],
        env=console_service.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page.locator("#wall tbody tr").nth(2).wait_for(timeout=15000)
    finally:
        simulator.wait(timeout=120)
    console.screenshot("wall", tmp_path)
    assert console.accessibility_violations() == []
