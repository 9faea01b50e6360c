"""The console's pages as the server answers them, in every deployment: the session
cookie decides (no session: to sign in; without the page's permission: 403), a strict
Content-Security-Policy on each, and assets served from the package."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from contact_center.api.console import CONSOLE, PAGES
from tests.conftest import Connector, Users, auth
from tests.test_session import admin, cheap_hashing, signed_in  # noqa: F401

PROFILE_PAGES = {  # built-in profile -> the menu pages it opens
    "Admin": {"wall", "alerts", "agents", "search", "rules"},
    "CallCenterManager": {"wall", "alerts", "agents", "search"},
    "Analyst": {"search"},
    "Agent": {"alerts"},
    "Connector": set(),
}


def test_without_a_session_every_page_sends_to_sign_in(client: TestClient,
                                                        users: Users) -> None:
    token = auth(users.token("Admin"))  # (an API token opens no page)
    for path in ("/console", "/console/wall", "/console/monitor/c-1", "/console/nope"):
        for headers in ({}, token):
            answer = client.get(path, headers=headers, follow_redirects=False)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/console/sign-in?next=/console")
    assert client.get("/console/sign-in").status_code == 200


@pytest.mark.parametrize("profile", sorted(PROFILE_PAGES))
def test_a_user_opens_exactly_the_pages_of_their_profile(
        client: TestClient, admin: dict[str, str], users: Users, profile: str) -> None:  # noqa: F811
    signed_in(client, admin, users, "pat", profile)
    for name, page in PAGES.items():
        if not page.in_menu:
            continue
        answer = client.get(f"/console/{name}")
        assert answer.status_code == (200 if name in PROFILE_PAGES[profile] else 403), name
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        menu = re.findall(r'<a href="/console/(\w+)"', answer.text)
        assert set(menu) == PROFILE_PAGES[profile]  # the menu shows what they may open
    home = client.get("/console", follow_redirects=False)
    if PROFILE_PAGES[profile]:
        assert home.status_code == 303 and home.headers["location"].startswith("/console/")
    else:
        assert home.status_code == 403


def test_the_monitor_page_needs_the_permission_and_a_live_conversation_in_scope(
        client: TestClient, admin: dict[str, str], users: Users,  # noqa: F811
        ingest: Connector) -> None:
    ingest.start("pg-1")
    signed_in(client, admin, users, "wes", "Analyst")
    assert client.get("/console/monitor/pg-1").status_code == 403
    client.cookies.clear()
    signed_in(client, admin, users, "sam", "CallCenterManager")
    page = client.get("/console/monitor/pg-1")
    assert page.status_code == 200 and 'data-conversation="pg-1"' in page.text
    assert client.get("/console/monitor/nobody").status_code == 404
    ingest.end("pg-1")
    assert client.get("/console/monitor/pg-1").status_code == 410
    # Outside the user's scope, a live conversation is as unknown (never 403).
    ingest.start("pg-2", queue="claims")
    client.cookies.clear()
    signed_in(client, admin, users, "bea", "CallCenterManager")
    assert client.patch("/v1/users/bea", headers=admin, json={
        "scope": {"teams": [], "queues": ["billing"]}}).status_code == 200
    ingest.start("pg-3", queue="billing")
    assert client.get("/console/monitor/pg-3").status_code == 200
    outside = client.get("/console/monitor/pg-2")
    assert outside.status_code == 404 and "data-conversation" not in outside.text


def test_assets_are_served_with_their_type_and_cached_by_etag(client: TestClient) -> None:
    script = client.get("/console/assets/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript")
    again = client.get("/console/assets/app.js",
                       headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/console/assets/console.css").headers["content-type"].startswith(
        "text/css")
    assert client.get("/console/assets/..%2Fpage.html").status_code == 404
    assert client.get("/console/assets/nothing.js").status_code == 404


def test_no_page_holds_inline_script_or_style() -> None:
    """The policy forbids both; a page that relied on them would break in the browser."""
    for path in [CONSOLE / "page.html", *(CONSOLE / "pages").glob("*.html")]:
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\sstyle=|\son\w+=|<style", text), path
    for path in (CONSOLE / "static").glob("*.js"):
        text = path.read_text()
        assert ".innerHTML" not in text and "eval(" not in text, path
