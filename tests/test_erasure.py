"""Erasure (`POST /v1/erasures`): a customer's conversations leave the database whole,
on every deployment; others' stay; live ones refuse it; it is audited without the
identifier."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import Connector, Stored, Users, auth
from tests.test_retention import converse, deliveries

ANN = "xylophonically"  # a word only Ann's conversations hold
BOB = "bumblebeeish"  # ... only Bob's
ANN_EMAIL = "Ann.Lee@Example.com"


def _everything(stored: Stored, tmp_path: Path) -> bytes:
    """Every stored byte, the SQLite write-ahead log checkpointed first (its frames of
    old pages go with it)."""
    if stored.backend == "sqlite":
        with sqlite3.connect(tmp_path / "cc.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return stored.everything()


def test_erasure_leaves_nothing_of_the_customer_anywhere_and_others_untouched(
        ingest: Connector, client: TestClient, users: Users, stored: Stored, backend: str,
        tmp_path: Path) -> None:
    # Two conversations of Ann's (her e-mail in two spellings, two customer ids), one of
    # Bob's; webhook deliveries of their alerts.
    converse(ingest, "a1", "billing", ANN, customer={
        "id": "cust-ann", "name": "Ann Lee", "email": ANN_EMAIL})
    converse(ingest, "a2", "sales", ANN, customer={
        "id": "cust-ann-2", "name": "Ann Lee", "email": "ann.lee@example.COM"})
    converse(ingest, "b1", "billing", BOB, customer={
        "id": "cust-bob", "name": "Bob Roe", "email": "bob@example.com"})
    assert deliveries(backend, tmp_path) >= 3
    assert ANN.encode() in _everything(stored, tmp_path)
    admin = auth(users.token("Admin"))

    answer = client.post("/v1/erasures", headers=admin,
                         json={"customer_email": "ANN.LEE@example.com"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["conversations"] == ["a1", "a2"]
    assert report["turns"] == 4 and report["alerts"] == 2
    assert report["events"] >= 6 and report["alert_events"] >= 2
    assert report["webhook_deliveries"] >= 2

    everything = _everything(stored, tmp_path)
    assert ANN.encode() not in everything
    assert b"ann.lee" not in everything.lower() and b"cust-ann" not in everything
    assert BOB.encode() in everything and b"bob@example.com" in everything
    analyst = auth(users.token("Analyst"))
    assert client.get("/v1/transcripts/a1", headers=analyst).status_code == 404
    bob = client.get("/v1/transcripts/b1", headers=analyst).json()
    assert bob["customer"]["email"] == "bob@example.com" and bob["alerts"]
    # (Searched for a word all said: the audit log keeps what analysts search for.)
    found = client.get("/v1/search/turns", headers=analyst, params={"q": "furious"}).json()
    assert {h["conversation_id"] for h in found["hits"]} == {"b1"}

    # The audit log says what was erased and with which identifier's hash, never the
    # identifier.
    [entry] = client.get("/v1/audit", headers=admin,
                         params={"action": "erasure"}).json()["entries"]
    assert entry["result"] == "ok" and entry["target_type"] == "customer"
    assert entry["details"]["identifier_sha256"] == hashlib.sha256(
        b"ann.lee@example.com").hexdigest()
    assert entry["details"]["conversation_ids"] == ["a1", "a2"]
    assert entry["details"]["turns"] == 4 and entry["details"]["by"] == "customer_email"
    assert "ann.lee" not in str(entry).lower()

    # By id: Bob's one conversation. Then nobody's: 200, nothing.
    by_id = client.post("/v1/erasures", headers=admin, json={"customer_id": "cust-bob"})
    assert by_id.json()["conversations"] == ["b1"]
    assert BOB.encode() not in _everything(stored, tmp_path)
    nobody = client.post("/v1/erasures", headers=admin, json={"customer_id": "nobody"})
    assert nobody.status_code == 200 and nobody.json() == {
        "conversations": [], "turns": 0, "alerts": 0, "alert_events": 0, "events": 0,
        "webhook_deliveries": 0}


def test_a_live_conversation_refuses_it_and_nothing_is_erased(
        ingest: Connector, client: TestClient, users: Users) -> None:
    customer = {"id": "cust-c", "name": "Cy", "email": "cy@example.com"}
    converse(ingest, "c1", "billing", ANN, customer=customer)
    converse(ingest, "c2", "billing", ANN, customer=customer, end=False)
    admin = auth(users.token("Admin"))
    refused = client.post("/v1/erasures", headers=admin, json={"customer_id": "cust-c"})
    assert refused.status_code == 409
    assert refused.json()["code"] == "conversation_live"
    assert refused.json()["conversations"] == ["c2"]
    analyst = auth(users.token("Analyst"))
    assert client.get("/v1/transcripts/c1", headers=analyst).status_code == 200
    [entry] = client.get("/v1/audit", headers=admin,
                         params={"action": "erasure"}).json()["entries"]
    assert entry["result"] == "conversation_live" and entry["details"]["live"] == ["c2"]
    # Once it ends, the erasure goes through.
    ingest.end("c2")
    done = client.post("/v1/erasures", headers=admin, json={"customer_id": "cust-c"})
    assert done.status_code == 200 and done.json()["conversations"] == ["c1", "c2"]


def test_an_erased_conversation_id_starts_afresh(
        ingest: Connector, client: TestClient, users: Users) -> None:
    converse(ingest, "r1", "billing", ANN, customer={"id": "cust-r", "email": None})
    admin = auth(users.token("Admin"))
    assert client.post("/v1/erasures", headers=admin,
                       json={"customer_id": "cust-r"}).json()["conversations"] == ["r1"]
    # Memory of the ended conversation (its id, segment ids) does not make the new one a
    # duplicate.
    assert ingest.start("r1", customer={"id": "cust-s"})["status"] == "accepted"
    assert ingest.say("r1", "1", "Hello again")["status"] == "accepted"
    ingest.end("r1")
    transcript = client.get("/v1/transcripts/r1", headers=auth(users.token("Analyst"))).json()
    assert [t["text"] for t in transcript["turns"]] == ["Hello again"]
    assert transcript["customer"]["id"] == "cust-s"


def test_it_takes_exactly_one_identifier_and_the_data_erase_permission(
        client: TestClient, users: Users) -> None:
    admin = auth(users.token("Admin"))
    for body in ({}, {"customer_id": "x", "customer_email": "x@example.com"},
                 {"customer_id": None}, {"customer_phone": "1"}):
        answer = client.post("/v1/erasures", headers=admin, json=body)
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", body
    manager = auth(users.token("CallCenterManager"))
    assert client.post("/v1/erasures", headers=manager,
                       json={"customer_id": "x"}).status_code == 403
