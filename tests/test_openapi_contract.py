"""The OpenAPI document is the contract: schemathesis drives every HTTP operation with
valid and invalid requests (seeded, bounded) against the embedded service, and each answer
must be no 5xx, with a status, content type and body the document declares for it."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contact_center.app import create_app
from contact_center.settings import Settings
from tests.conftest import ANGRY, Users, make_app, make_store

# Every answer as documented. Which requests are refused is not checked against the
# document, either way. Not `positive_data_acceptance`: the document cannot state every
# rule a request must keep (no NUL characters, timestamps in 1970-9998, no two rules with
# one id, the body's id that of the path), so some requests it allows get the 422 it
# declares. Not `negative_data_rejection`: pydantic's lax mode takes some values the
# document rules out (`false` or "2" for a number), which requests refusing them would
# need strict models for. The checks that need declared security schemes or several calls
# (ignored_auth, use_after_free, ...) do not apply: tests/test_security.py covers who may
# call what.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES = 30  # per operation and kind of request: about 1,600 requests in all
AGENT = "agent-1"


PROBES = {"/healthz", "/readyz", "/livez", "/metrics"}


def _documented() -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The OpenAPI document and its operations, less the health and metrics probes (open
    by design and, metrics, not JSON: they have their own tests). The app is only built,
    never started, so its database is never opened."""
    app = create_app(Settings(database=str(Path(tempfile.gettempdir()) / "never-opened.db")))
    document = app.openapi()
    operations = [(method.upper(), path) for path, item in document["paths"].items()
                  if path not in PROBES for method in item]
    return document, operations


DOCUMENT, OPERATIONS = _documented()


@dataclass
class Api:
    schema: Any  # schemathesis' loaded OpenAPI schema of the running app
    headers: dict[str, str]  # an Admin token's: every permission
    known: dict[str, str]  # path parameter -> an existing id (a 2xx rather than a 404)


def _seed(post: Callable[[str, Any], Any]) -> None:
    """Live and ended conversations with turns of every role, a partial, events and
    alerts (the angry turns raise them), so that the answers have content to check."""
    assert post("/v1/conversations", {
        "id": "c-live", "channel": "voice", "queue": "billing", "agent_id": AGENT,
        "customer": {"id": "cust-1", "name": "Pat", "email": "pat@example.com"},
        "attributes": {"tier": "gold"}}).status_code == 201
    segments: list[dict[str, Any]] = [
        {"segment_id": f"u{i}", "role": "customer", "text": text,
         "started_at": f"2026-01-01T10:00:0{i}Z"} for i, text in enumerate(ANGRY)]
    segments += [{"segment_id": "a1", "role": "agent", "text": "Sorry, I check the invoice"},
                 {"segment_id": "p1", "role": "customer", "text": "I w", "final": False}]
    assert post("/v1/conversations/c-live/segments", {"segments": segments}).status_code == 200
    assert post("/v1/events", {"events": [
        {"type": "participant.joined", "conversation_id": "c-live", "event_id": "j1",
         "participant": {"id": "sup-1", "role": "agent", "name": "Sam"}},
        {"type": "conversation.transferred", "conversation_id": "c-live",
         "to_queue": "retention", "reason": "angry"},
        {"type": "conversation.started", "conversation": {"id": "c-ended",
                                                          "recording": "agent"}},
        {"type": "segment", "conversation_id": "c-ended", "segment_id": "1",
         "role": "customer", "text": "The invoice is terrible"},
        {"type": "conversation.ended", "conversation_id": "c-ended"}]}).status_code == 200


@pytest.fixture
def api(settings: Settings, tmp_path: Path, backend: str) -> Iterator[Api]:
    """The app on each deployment (embedded on SQLite or PostgreSQL, scale-out)."""
    app: Any = make_app(settings, backend, tmp_path)
    users = Users(lambda: make_store(backend, tmp_path))
    headers = {"Authorization": f"Bearer {users.token('Admin', username='admin')}"}
    users.token("Agent", agent_id=AGENT, username="agent")  # listed by the live agents view
    try:
        # Loading the document starts the app (its lifespan), in schemathesis' own event
        # loop, where every call below reaches it; it runs until shut down at the end.
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:
            if backend == "scaleout":  # until its worker holds every partition
                deadline = time.monotonic() + 10
                while client.get("/healthz").json().get("partitions_unowned") != 0:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            _seed(lambda path, body: client.post(path, json=body, headers=headers))
            rule = client.get("/v1/alerts", headers=headers).json()["alerts"][0]["rule_id"]
            token = client.post("/v1/users/agent/tokens", json={"label": "spare"},
                                headers=headers).json()["id"]
            assert client.post("/v1/security-profiles", headers=headers, json={
                "name": "Leads", "permissions": ["alerts-all"]}).status_code == 201
        yield Api(schema, headers, {"conversation_id": "c-live", "rule_id": rule,
                                    "username": "agent", "token_id": token, "name": "Leads"})
    finally:
        asgi.shutdown_lifespans()


# Where a generated request would rarely find anything: a query that does.
KNOWN_QUERY = {"/v1/transcripts": {"q": "terrible"}}


@pytest.mark.app
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_answer_is_as_documented(api: Api, method: str, path: str) -> None:
    operation = api.schema[path][method]
    strategies = [operation.as_strategy(mode, headers=api.headers) for mode in GenerationMode]
    known = {name: value for name, value in api.known.items() if f"{{{name}}}" in path}
    if known or path in KNOWN_QUERY:  # valid requests on what exists: 2xx answers
        strategies.append(operation.as_strategy(headers=api.headers, path_parameters=known,
                                                query=KNOWN_QUERY.get(path)))

    # Seeded, so CI sees the same requests each run; no deadline: a shared runner's pauses
    # are not the service's.
    @given(case=st.one_of(strategies))
    @settings(max_examples=EXAMPLES * len(strategies), deadline=None, derandomize=True,
              database=None, suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large,
                                                    HealthCheck.filter_too_much])
    def answers_as_documented(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    answers_as_documented()


# Valid requests on the seeded data, each answered 2xx; then the field that must not be
# empty (there is content to check).
SEEDED: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("GET", "/v1/live/conversations", {}, "conversations"),
    ("GET", "/v1/live/conversations/{conversation_id}", {}, "participants"),
    ("GET", "/v1/live/agents", {}, "agents"),
    ("GET", "/v1/alerts", {"query": {"conversation_id": "c-live"}}, "alerts"),
    ("GET", "/v1/transcripts/{conversation_id}", {}, "alerts"),
    ("GET", "/v1/transcripts/{conversation_id}",
     {"path_parameters": {"conversation_id": "c-ended"}}, "turns"),
    ("GET", "/v1/transcripts", {"query": {"q": "invoice", "since": "2020-01-01T00:00:00"}},
     "hits"),
    ("GET", "/v1/me", {}, "permissions"),
    ("GET", "/v1/users", {}, "users"),
    ("GET", "/v1/rules/{rule_id}", {}, "id"),
    ("POST", "/v1/rules/backtest", {"body": {"samples": 2}}, "samples"),
    ("POST", "/v1/conversations/{conversation_id}/segments", {"body": {"segments": [
        {"segment_id": "b1", "role": "bot", "text": "Anything else?"}]}}, "results"),
    ("PATCH", "/v1/users/{username}", {"body": {"disabled": False}}, "permissions"),
    ("PATCH", "/v1/users/{username}", {"body": {"profiles": ["Agent", "Leads"]}},
     "permissions"),
    ("GET", "/v1/permissions", {}, "permissions"),
    ("GET", "/v1/security-profiles", {}, "profiles"),
    ("GET", "/v1/security-profiles/{name}", {}, "permissions"),
    ("PATCH", "/v1/security-profiles/{name}", {"body": {"description": "leads"}}, "name"),
    ("DELETE", "/v1/security-profiles/{name}", {}, None),
    ("DELETE", "/v1/tokens/{token_id}", {}, None),
]


@pytest.mark.app
@pytest.mark.parametrize(("method", "path", "parts", "filled"), SEEDED,
                         ids=[f"{m} {p}" for m, p, _, _ in SEEDED])
def test_answers_with_content_are_as_documented(api: Api, method: str, path: str,
                                                parts: dict[str, Any],
                                                filled: str | None) -> None:
    known = {name: value for name, value in api.known.items() if f"{{{name}}}" in path}
    body = parts.get("body")
    if path == "/v1/rules/backtest":  # a rule that fired, over the seeded conversations
        body = (body or {}) | {"rule_id": api.known["rule_id"]}
    case = api.schema[path][method].Case(
        path_parameters=parts.get("path_parameters", known), query=parts.get("query"),
        headers=api.headers, **({"body": body} if body is not None else {}))
    response = case.call_and_validate(checks=CHECKS)
    assert 200 <= response.status_code < 300, response.text
    if filled is not None:
        assert response.json()[filled], response.text


STREAMED = {"application/jsonl", "text/csv; charset=utf-8"}


def test_every_operation_declares_its_body_and_the_common_errors() -> None:
    """A guard for routes to come: a success with a JSON schema that says something (no
    bare object), and 401 (the token check) and 422 (validation) declared."""
    for method, path in OPERATIONS:
        responses = DOCUMENT["paths"][path][method.lower()]["responses"]
        assert {"401", "422"} <= set(responses), (method, path)
        success = [status for status in responses if status.startswith("2")]
        assert success, (method, path)
        for status in success:
            if status == "204":  # no content, by definition
                assert "content" not in responses[status], (method, path)
                continue
            content = responses[status]["content"]
            if "application/json" not in content:  # a streamed export: its formats, as text
                assert set(content) == STREAMED and all(
                    c["schema"] == {"type": "string"} for c in content.values()), (method, path)
                assert "X-Total-Count" in responses[status]["headers"], (method, path)
                continue
            schema = content["application/json"]["schema"]
            assert set(schema) & {"$ref", "properties", "items", "anyOf", "oneOf"}, (
                method, path, status, schema)
