"""The supervisor console end to end, in headless Chromium and Firefox: signing in, the
live wall, alerts, monitoring, whisper, permissions and scope, accessibility,
reconnection."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.console_browser import PASSWORD, Console, Service


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
         "--token", console_service.connector, "--limit", "4", "--concurrency", "4",
         "--rate", "6"],
        env=console_service.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # (slowly: each of the four stays live a while)
        page.locator("#wall-rows [role=row]").nth(1).wait_for(timeout=15000)
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)
    console.screenshot("wall", tmp_path)
    assert console.accessibility_violations() == []


ANGRY = "This is terrible, I am so angry and upset, I will cancel my account right now!"


def test_an_angry_turn_alerts_within_a_second_and_is_acknowledged_from_the_page(
        console: Console, console_service: Service, tmp_path: Path) -> None:
    page = console.sign_in("sam", then="/console/alerts")
    console_service.start_conversation("angry-1")
    page.locator("#alert-count").wait_for()
    page.wait_for_timeout(300)  # (the stream is subscribed)
    said = time.monotonic()
    console_service.say("angry-1", "a1", ANGRY)
    card = page.locator("li.alert[data-status=open]", has_text="angry-1")
    card.wait_for(timeout=5000)
    appeared = time.monotonic() - said
    assert appeared < 1.0, f"the alert took {appeared:.2f} s to appear"
    assert card.locator("mark").count() >= 1  # the words that matched, marked
    console.screenshot("alerts", tmp_path)
    assert console.accessibility_violations() == []
    card.get_by_role("button", name="Acknowledge").click()
    page.locator("li.alert[data-status=acknowledged]", has_text="angry-1").wait_for()
    [alert] = console_service.call("GET", "/v1/alerts?conversation_id=angry-1",
                                   token=console_service.cli("tokens", "create", "ada")
                                   .strip().split()[-1])["alerts"]
    assert (alert["status"], alert["acknowledged_by"]) == ("acknowledged", "sam")


def test_the_monitor_shows_turns_live_and_a_whisper_reaches_the_connector(
        console: Console, console_service: Service, tmp_path: Path) -> None:
    from websockets.sync.client import connect

    with connect(f"{console_service.ws}/v1/ingest?outbound=true",
                 subprotocols=["bearer", console_service.connector]) as connector:  # type: ignore[list-item]
        assert json.loads(connector.recv())["type"] == "hello"

        def send(event: dict[str, Any]) -> None:
            connector.send(json.dumps(event))

        send({"type": "conversation.started", "conversation": {
            "id": "mon-1", "queue": "billing", "agent_id": "agent-7",
            "customer": {"id": "c-9", "name": "Pat"}}})
        send({"type": "segment", "conversation_id": "mon-1", "segment_id": "m1",
              "role": "customer", "text": "Hello, my parcel never arrived."})
        page = console.sign_in("sam", then="/console/monitor/mon-1")
        page.locator("li.turn", has_text="parcel never arrived").wait_for()
        send({"type": "segment", "conversation_id": "mon-1", "segment_id": "m2",
              "role": "agent", "text": "I am sorry, let me check that for you."})
        page.locator("li.turn.agent", has_text="let me check").wait_for(timeout=3000)
        send({"type": "segment", "conversation_id": "mon-1", "segment_id": "m3",
              "role": "customer", "text": ANGRY})
        page.locator("li.turn.tone-angry", has_text="cancel my account").wait_for()
        page.locator("#alert .badge").wait_for()
        assert page.locator("li.turn.evidence").count() >= 1  # the alert's evidence
        assert page.locator("#chart circle").count() == 2  # the customer's turns
        page.fill("#whisper-text", "Offer the refund now.")
        page.get_by_role("button", name="Send whisper").click()
        pushed = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = json.loads(connector.recv(timeout=5))
            pushed.append(message)
            if message.get("type") == "whisper":
                break
        assert pushed[-1]["type"] == "whisper"
        assert pushed[-1]["text"] == "Offer the refund now." and pushed[-1]["by"] == "sam"
        page.locator("li", has_text="sam whispered to the agent: Offer the refund now.").wait_for()
        console.screenshot("monitor", tmp_path)
        assert console.accessibility_violations() == []
        send({"type": "conversation.ended", "conversation_id": "mon-1"})
        page.locator("li", has_text="The conversation ended.").wait_for()


def test_without_the_permission_no_monitor_link_and_its_url_is_refused(
        console: Console, console_service: Service) -> None:
    console_service.start_conversation("perm-1")
    page = console.sign_in("wes", then="/console/wall")
    row = page.locator("#wall-rows [role=row]", has_text="perm-1")
    row.wait_for()
    assert row.get_by_role("link").count() == 0  # no monitor link for wes
    assert page.get_by_role("link", name="Alerts").count() == 0  # nor pages wes cannot open
    answer = page.goto(f"{console_service.url}/console/monitor/perm-1")
    assert answer is not None and answer.status == 403
    page.locator(".refused", has_text="does not allow monitoring").wait_for()
    answer = page.goto(f"{console_service.url}/console/search")
    assert answer is not None and answer.status == 403
    # (The browser logs each page refused as a resource that failed to load.)
    console.errors[:] = [e for e in console.errors if "(Forbidden)" not in e]


def test_an_out_of_scope_conversation_never_appears(
        console: Console, console_service: Service) -> None:
    page = console.sign_in("bea", then="/console/wall")  # billing only
    page.locator("#count").wait_for()
    console_service.start_conversation("scope-other", queue="claims")
    console_service.start_conversation("scope-mine", queue="billing")
    console_service.say("scope-other", "o1", "I am furious, this is a disgrace!")
    page.locator("#wall-rows [role=row]", has_text="scope-mine").wait_for()
    page.wait_for_timeout(500)
    assert page.locator("#wall-rows [role=row]", has_text="scope-other").count() == 0
    answer = page.goto(f"{console_service.url}/console/monitor/scope-other")
    assert answer is not None and answer.status == 404
    console.errors[:] = [e for e in console.errors if "(Not Found)" not in e]
    page.goto(f"{console_service.url}/console/alerts")
    page.locator("#alert-count").wait_for()
    page.wait_for_timeout(300)
    assert page.locator("li.alert", has_text="scope-other").count() == 0


def test_a_dropped_socket_reconnects_and_says_so_meanwhile(
        console: Console, console_service: Service, tmp_path: Path) -> None:
    page = console.sign_in("sam", then="/console/agents")
    console_service.start_conversation("drop-1", agent_id="agent-9")
    page.locator("#agents tbody tr", has_text="agent-9").wait_for()
    console.screenshot("agents", tmp_path)
    assert console.accessibility_violations() == []
    page.goto(f"{console_service.url}/console/wall")
    page.locator("#wall-rows [role=row]", has_text="drop-1").wait_for()
    console_service.stop()
    page.locator("#status", has_text="reconnecting").wait_for()
    console_service.start()
    page.locator("#status").wait_for(state="hidden", timeout=20000)
    console_service.start_conversation("drop-2")
    page.locator("#wall-rows [role=row]", has_text="drop-2").wait_for()  # live again
    # The alerts page resumes from the last event it handled: what happens after the
    # restart shows, once.
    page.goto(f"{console_service.url}/console/alerts")
    page.locator("#alert-count").wait_for()
    console_service.say("drop-1", "d1", ANGRY)
    page.locator("li.alert", has_text="drop-1").wait_for()
    console_service.stop()
    page.locator("#status", has_text="reconnecting").wait_for()
    console_service.start()
    page.locator("#status").wait_for(state="hidden", timeout=20000)
    console_service.say("drop-2", "d1", ANGRY)
    page.locator("li.alert", has_text="drop-2").wait_for()
    assert page.locator("li.alert", has_text="drop-1").count() == 1
    # (The browser logged the refused connections while the service was down.)
    console.errors[:] = [e for e in console.errors if "WebSocket" not in e
                         and "Failed to load resource" not in e]


def test_the_wall_at_tablet_width(console: Console, tmp_path: Path) -> None:
    console.page.set_viewport_size({"width": 820, "height": 1180})
    page = console.sign_in("sam", then="/console/wall")
    page.locator("#count").wait_for()
    console.screenshot("wall-tablet", tmp_path)
    assert console.accessibility_violations() == []


def _tab_to(page: Any, found: str, presses: int = 40) -> None:
    """Press Tab until the focused element matches ``found`` (a JS expression on ``e``)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const e = document.activeElement; return {found}; }}"):
            return
    raise AssertionError(f"the keyboard never reached {found}")


def test_the_keyboard_alone_signs_in_and_acknowledges_an_alert(
        console: Console, console_service: Service) -> None:
    page = console.open("/console/sign-in?next=/console/alerts")
    _tab_to(page, "e.id === 'username'")
    page.keyboard.type("sam")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/alerts")
    page.locator("#alert-count").wait_for()
    console_service.start_conversation("keys-1")
    console_service.say("keys-1", "k1", ANGRY)
    card = page.locator("li.alert[data-status=open]", has_text="keys-1")
    card.wait_for()
    _tab_to(page, "e.textContent === 'Acknowledge' && "
                  "e.closest('li').textContent.includes('keys-1')")
    page.keyboard.press("Enter")
    page.locator("li.alert[data-status=acknowledged]", has_text="keys-1").wait_for()
