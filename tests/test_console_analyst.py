"""The console's search and rules pages end to end, in headless Chromium and Firefox: an
analyst finds recorded words and opens the conversation; an admin disables, edits and
backtests rules (docs/console.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.console_browser import PASSWORD, Console, Service

WORD = "zebracorn"  # a word no other turn holds, so every hit is ours


def _admin_token(service: Service) -> str:
    return service.cli("tokens", "create", "ada").strip().split()[-1]


def _record(service: Service, cid: str, turns: list[tuple[str, str]]) -> None:
    """A conversation through REST ingest (docs/protocol.md), ended as a connector ends one.
    (Not Service.start_conversation and .say: their bodies are not the routes' shapes.)"""
    service.call("POST", "/v1/conversations", {
        "id": cid, "queue": "billing", "agent_id": "agent-7", "channel": "chat",
        "customer": {"id": f"cust-{cid}", "name": "Pat Doe"}})
    segments = [{"segment_id": f"s{n}", "role": role, "text": text}
                for n, (role, text) in enumerate(turns, 1)]
    answer = service.call("POST", f"/v1/conversations/{cid}/segments", {"segments": segments})
    assert all(r["status"] == "accepted" for r in answer["results"]), answer
    service.call("POST", "/v1/events", {"events": [
        {"type": "conversation.ended", "conversation_id": cid, "reason": "customer left"}]})


@pytest.fixture(scope="module")
def recorded(console_service: Service) -> str:
    """Two ended conversations holding WORD, one of them angry enough to raise alerts;
    answers an admin token, once the search finds both."""
    _record(console_service, "c-angry", [
        ("customer", f"Hello, my {WORD} parcel never arrived"),
        ("agent", "Sorry to hear that, let me check the order"),
        ("customer", "This is terrible, useless and awful. I hate this horrible service!"),
        ("customer", f"Worst company ever, the {WORD} is lost and nobody cares. Disgusting."),
    ])
    _record(console_service, "c-calm", [
        ("customer", f"Thanks, the {WORD} came today, great service"),
        ("agent", "Glad to hear it!"),
    ])
    token = _admin_token(console_service)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = console_service.call("GET", f"/v1/search/conversations?q={WORD}", token=token)
        if len(found["conversations"]) == 2:
            return token
        time.sleep(0.2)
    raise AssertionError("the recorded conversations were not found by the search")


def _forget_refusals(console: Console, status: int) -> None:
    """The browser logs a refused call itself; a test that expects one drops the line."""
    console.errors[:] = [e for e in console.errors if f"status of {status}" not in e]


def test_an_analyst_finds_a_phrase_and_opens_the_conversation(
        console: Console, recorded: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = console.sign_in("ann", then="/console/search")
    assert page.url.endswith("/console/search")
    page.fill("#q", f'"{WORD} parcel" OR "the {WORD}"')
    page.click("#search button[type=submit]")
    results = page.locator("#results > li")
    expect(results).to_have_count(3)
    expect(page.locator("#results mark").first).to_contain_text(WORD)
    expect(page.locator("#count")).to_contain_text("3 turns shown")

    page.get_by_role("button", name="Open conversation c-angry").first.click()
    panel = page.locator("#conversation")
    expect(panel.locator("#conversation-title")).to_have_text("Conversation c-angry")
    expect(panel.locator("#conversation-title")).to_be_focused()
    expect(panel.locator("svg.timeline circle")).to_have_count(3)  # one per customer turn
    expect(panel.locator("#conversation-turns > li")).to_have_count(4)
    expect(panel.locator(".turn.tone-angry").first).to_be_visible()
    expect(panel.locator(".turn.found")).to_have_count(1)
    expect(panel.locator("#conversation-alerts .alert").first).to_be_visible()
    expect(panel.locator("#conversation-alerts .history li").first).to_contain_text("raised")
    expect(panel.locator("#conversation-monitors")).to_contain_text("Nobody monitored it")
    console.screenshot("search", tmp_path)
    assert console.accessibility_violations() == []

    page.click("#close-conversation")
    expect(panel).to_be_hidden()


def test_conversations_mode_and_the_escalated_filter(console: Console, recorded: str) -> None:
    from playwright.sync_api import expect

    page = console.sign_in("ann", then="/console/search")
    page.check("input[name=mode][value=conversations]")
    page.fill("#q", WORD)
    page.click("#search button[type=submit]")
    expect(page.locator("#results > li")).to_have_count(2)
    expect(page.locator("#results > li").first).to_contain_text("1 turn")
    page.select_option("#escalated", "true")
    page.click("#search button[type=submit]")
    expect(page.locator("#results > li")).to_have_count(1)
    expect(page.locator("#results > li")).to_contain_text("c-angry")
    expect(page.locator("#more")).to_be_hidden()
    assert console.accessibility_violations() == []


def test_more_results_follow_the_cursor(console: Console, console_service: Service,
                                        recorded: str) -> None:
    from playwright.sync_api import expect

    # A page holds 20 results: 23 turns make a second page of 3.
    _record(console_service, "c-long", [("customer", f"quokka number {n}") for n in range(23)])
    page = console.sign_in("ann", then="/console/search")
    page.fill("#q", "quokka")
    page.select_option("#sort", "newest")
    page.click("#search button[type=submit]")
    expect(page.locator("#results > li")).to_have_count(20, timeout=15000)
    expect(page.locator("#count")).to_contain_text("more available")
    page.click("#more")
    expect(page.locator("#results > li")).to_have_count(23)
    expect(page.locator("#more")).to_be_hidden()
    expect(page.locator("#count")).to_have_text("23 turns shown.")


def test_a_bad_query_says_what_is_wrong(console: Console, recorded: str) -> None:
    from playwright.sync_api import expect

    page = console.sign_in("ann", then="/console/search")
    page.fill("#q", f'"{WORD} parcel')  # the quote never closes
    page.click("#search button[type=submit]")
    expect(page.locator("#search-error")).to_contain_text(
        "The search could not be run: q: a quote is not closed")
    expect(page.locator("#results > li")).to_have_count(0)
    _forget_refusals(console, 422)
    assert console.accessibility_violations() == []


def test_without_transcripts_read_results_have_no_open_button(
        console: Console, console_service: Service, recorded: str) -> None:
    from playwright.sync_api import expect

    console_service.cli("profiles", "create", "SearchOnly", "--permission", "contact-search")
    console_service.cli("users", "create", "sid", "--profile", "SearchOnly")
    console_service.cli("users", "password", "sid", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    page = console.sign_in("sid", then="/console/search")
    page.fill("#q", WORD)
    page.click("#search button[type=submit]")
    expect(page.locator("#results > li")).to_have_count(3)
    expect(page.locator("#results button")).to_have_count(0)


def _rule(service: Service, token: str, rule_id: str) -> dict[str, Any]:
    rule: dict[str, Any] = service.call("GET", f"/v1/rules/{rule_id}", token=token)
    return rule


def test_an_admin_disables_a_rule_and_a_conflict_is_explained(
        console: Console, console_service: Service, recorded: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = console.sign_in("ada", then="/console/rules")
    row = page.locator("#rules tr[data-id=contempt]")
    expect(row.locator("td.enabled")).to_have_text("yes")
    before = _rule(console_service, recorded, "contempt")["version"]
    page.get_by_role("button", name="Disable contempt", exact=True).click()
    expect(row.locator("td.enabled")).to_have_text("no")
    now = _rule(console_service, recorded, "contempt")
    assert now["enabled"] is False and now["version"] == before + 1
    console.screenshot("rules", tmp_path)
    assert console.accessibility_violations() == []

    # Another admin renames `profanity` after this page read it: disabling it from the
    # stale row is refused (409) and said, and the row shows the rule as it now is.
    stale = _rule(console_service, recorded, "profanity")["version"]
    console_service.call("PATCH", "/v1/rules/profanity", {"name": "Swearing"}, token=recorded)
    page.get_by_role("button", name="Disable profanity", exact=True).click()
    expect(page.locator("#rules-error")).to_contain_text("changed the rule meanwhile")
    profanity = page.locator("#rules tr[data-id=profanity]")
    expect(profanity.locator("td.num")).to_have_text(str(stale + 1))
    assert _rule(console_service, recorded, "profanity")["enabled"] is True
    _forget_refusals(console, 409)


def test_an_admin_backtests_an_edited_rule_and_sees_validation_errors(
        console: Console, console_service: Service, recorded: str) -> None:
    from playwright.sync_api import expect

    page = console.sign_in("ada", then="/console/rules")
    page.get_by_role("button", name="Edit very-negative-turn", exact=True).click()
    expect(page.locator("#editor-title")).to_be_focused()
    text = page.locator("#rule-json")
    original = _rule(console_service, recorded, "very-negative-turn")
    draft = {**original, "below": -0.3}
    text.fill(json.dumps(draft, indent=2))
    page.click("#backtest")
    result = page.locator("#backtest-result")
    expect(result).to_contain_text("Backtest result", timeout=15000)
    expect(result.locator("table.backtest tbody tr")).to_have_count(2)  # draft, in force
    expect(result).to_contain_text("c-angry")  # the draft fires on the angry conversation
    assert console.accessibility_violations() == []

    text.fill(json.dumps({**original, "below": 5}))  # out of range: 422 with the field
    page.click("#save")
    expect(page.locator("#editor-error")).to_contain_text("sentiment.below: Input should be")
    assert _rule(console_service, recorded, "very-negative-turn") == original
    _forget_refusals(console, 422)

    text.fill("{ not json")
    page.click("#save")
    expect(page.locator("#editor-error")).to_contain_text("not valid JSON")


def test_the_pages_are_refused_without_their_permission(console: Console,
                                                        recorded: str) -> None:
    page = console.sign_in("kim", then="/console/search")
    assert page.locator(".refused").count() == 1
    page = console.open("/console/rules")
    assert page.locator(".refused").count() == 1
    console.errors[:] = [e for e in console.errors if "status of 403" not in e]

