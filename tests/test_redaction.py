"""PII redaction (monitoring/redaction.py): each kind found only where it validates, typed
placeholders, overlaps, and no digit of a redacted number left behind."""

from __future__ import annotations

import json
import re
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from monitoring import redaction
from monitoring.redaction import Redacted, finds, redact
from tests.conftest import SHARED_DATA, Connector, Stored, Users, auth


@pytest.mark.parametrize(("text", "expected", "kinds"), [
    ("my card is 4111 1111 1111 1111, exp 12/29",
     "my card is [CARD], exp 12/29", ("card",)),
    ("card 4111-1111-1111-1111.", "card [CARD].", ("card",)),
    ("amex 378282246310005 please", "amex [CARD] please", ("card",)),
    ("wire it to GB82 WEST 1234 5698 7654 32 today", "wire it to [IBAN] today", ("iban",)),
    ("IBAN DE89370400440532013000", "IBAN [IBAN]", ("iban",)),
    ("ssn 536-90-4399 on file", "ssn [SSN] on file", ("ssn",)),
    ("write to jane.doe+billing@example.co.uk now", "write to [EMAIL] now", ("email",)),
    ("call (415) 555-2671 or +44 20 7946 0958", "call [PHONE] or [PHONE]",
     ("phone", "phone")),
    ("reach me on 650-253-0000 or pat@mail.com",
     "reach me on [PHONE] or [EMAIL]", ("phone", "email")),
])
def test_each_kind_is_replaced_by_its_placeholder(text: str, expected: str,
                                                  kinds: tuple[str, ...]) -> None:
    redacted = redact(text)
    assert (redacted.text, redacted.kinds) == (expected, kinds)


@pytest.mark.parametrize("text", [
    "order 4111111111111112 shipped",  # 16 digits failing the Luhn check
    "ref GB00 WEST 1234 5698 7654 32",  # IBAN-shaped, wrong check digits
    "case 000-12-3456 and 666-12-3456",  # numbers no SSN is ever given
    "flight 123 at gate 45, 3 bags, 2026-12-06",
    "I waited 45 minutes and paid $1,234.56",
    "my account number is 12345",
    "",
])
def test_what_does_not_validate_is_left_as_it_is(text: str) -> None:
    assert redact(text).text == text and redact(text).kinds == ()


NATIONAL_IDS = [  # (region, a valid number as people write it)
    ("NL", "1112.22.333"), ("NL", "111222333"), ("CA", "123-456-782"),
    ("IN", "2341 2341 2346"), ("BR", "390.533.447-05"), ("FR", "2 95 10 99 126 111 93"),
    ("DE", "36 574 261 809"), ("PL", "44051401359"), ("SE", "880320-0016"),
    ("GB", "943 476 5870"), ("AU", "123 456 782"), ("BE", "85.07.30-033.28"),
    # ids with letters are looked for in every region
    ("US", "54362315K"), ("US", "X2482300W"), ("US", "RCCMNL83S18D969H"),
    ("US", "BOXW310820HNERXN09"),
    # ... in lower case, or written with separators
    ("US", "54362315k"), ("US", "54.362.315-K"), ("US", "54362315 K"), ("US", "x-2482300-w"),
    ("US", "rccmnl83s18d969h"), ("US", "boxw310820hnerxn09"),
]


@pytest.mark.parametrize(("region", "number"), NATIONAL_IDS)
def test_national_ids_are_found_where_their_check_digit_holds(region: str,
                                                             number: str) -> None:
    assert redact(f"my id is {number}, thanks", region=region) == Redacted(
        "my id is [NATIONAL_ID], thanks", ("national_id",))
    wrong = number[:-1] + ("2" if number[-1] == "1" else "1")
    assert redact(f"my id is {wrong}", region=region).kinds == ()


def test_an_id_of_digits_alone_is_looked_for_in_its_region_only() -> None:
    assert redact("ref 111222333", region="NL").text == "ref [NATIONAL_ID]"
    assert redact("ref 111222333", region="US").text == "ref 111222333"  # an order number
    assert redact("ref 2341 2341 2346", region="GB").kinds == ()


def _texts_with_digits() -> list[str]:
    """Every turn of the twitter-care corpus holding a digit or an @, and numbers written
    at each kind's fewest digits (short international phone numbers, vanity numbers)."""
    corpus = SHARED_DATA / "twitter-care" / "conversations.jsonl"
    turns = [turn["text"] for line in corpus.read_text().splitlines()
             for turn in json.loads(line)["turns"]]
    return [t for t in turns if re.search(r"[0-9@]", t)] + [
        # the shortest numbers the matcher finds: 6 digits written internationally (IR),
        # 4 as a national number (NU)
        "+98 9601", "call +98 9601 now", "7012",
        "+683 4002", "ring +683 4002 now", "+49 30 1234", "4002", "030 1234",
        "1-800-FLOWERS", "+1 800 FLOWERS", "call 555-0100", "+800 1234 5678",
        "536-90-4399", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32",
        "54362315K", "X2482300W", "RCCMNL83S18D969H", "BOXW310820HNERXN09",
        *(number for _, number in NATIONAL_IDS), "a@b.co", "\u0663\u0664\u0665\u0666",
    ]


@pytest.mark.parametrize("region", ["US", "DE", "NU", "GB", "IN", "NL", "FR", "ZA"])
def test_the_digit_count_spares_only_searches_that_could_find_nothing(region: str) -> None:
    # `_all` skips a kind in a text with fewer digits than the kind needs: the same finds
    # as searching every text for every kind.
    texts = _texts_with_digits()
    assert len(texts) > 1000
    for text in texts:
        digits = len(re.findall(r"\d", text))
        assert list(redaction._all(text, region, digits)) == list(
            redaction._all(text, region, 10**9)), text


LINKS = ["https://t.co/1234567890", "www.example.com/2020/555-123-4567",
         "http://archive.org/web/20200401224734/", "WWW.X.COM/4111111111111111"]


@pytest.mark.parametrize("region", ["US", "GB", "DE", "IN"])
def test_digits_inside_links_spare_only_searches_that_could_find_nothing(
        region: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The digits a link holds wake no kind (twitter-care turns: a redaction 2.7 times
    # faster): the same finds as counting every digit, links beside or glued to PII.
    texts = [joined for i, text in enumerate(_texts_with_digits())
             for joined in (f"{LINKS[i % 4]} {text}", f"{text}{LINKS[i % 4]}",
                            f"{text} {LINKS[(i + 1) % 4]}, {text}", f"{LINKS[i % 4]}{text}")]
    assert len(texts) > 4000
    found = [finds(text, region) for text in texts]
    every_kind = redaction._all
    monkeypatch.setattr(redaction, "_all", lambda text, region, digits: every_kind(
        text, region, 10**9))
    assert found == [finds(text, region) for text in texts]


def test_overlapping_finds_keep_the_first_and_longest() -> None:
    # A card number that a phone matcher might also take in part.
    text = "4111 1111 1111 1111"
    assert [(f.kind, f.start, f.end) for f in finds(text)] == [("card", 0, len(text))]


def test_a_region_reads_national_phone_numbers() -> None:
    assert redact("ring 020 7946 0958", region="GB").text == "ring [PHONE]"
    assert redact("ring 020 7946 0958", region="US").text == "ring 020 7946 0958"


CARDS = ["4111111111111111", "5500005555555559", "340000000000009", "6011000990139424"]


@given(st.sampled_from(CARDS), st.text(alphabet="abc ,.!", max_size=40),
       st.text(alphabet="abc ,.!", max_size=40), st.sampled_from(["", " ", "-"]))
def test_no_digit_run_of_a_redacted_card_is_left(card: str, before: str, after: str,
                                                 separator: str) -> None:
    spaced = separator.join(card[i:i + 4] for i in range(0, len(card), 4))
    redacted = redact(f"{before} {spaced} {after}")
    assert "[CARD]" in redacted.text
    assert card[-4:] not in redacted.text.replace(" ", "").replace("-", "")


def test_digits_inside_a_link_are_the_links() -> None:
    # Found in the twitter-care corpus: an archive's timestamp passes the Luhn check,
    # an article number reads as a phone number.
    text = ("see https://web.archive.org/web/20200407045243/https://www.chase.com/x and "
            "www.rockstargames.com/articles/115007553888/y, or call 1-800-956-4442")
    assert redact(text).text == text.replace("1-800-956-4442", "[PHONE]")


def test_a_bare_number_that_is_a_valid_phone_number_is_redacted() -> None:
    """Better too much than too little: an order id that is a valid phone number of the
    region goes too (documented)."""
    assert redact("Order ID: 3348917502").text == "Order ID: [PHONE]"


# -- in the service: nothing of it stored, indexed, shown or alerted on ----------------------

PII = {"card": "4111 1111 1111 1111", "iban": "GB82 WEST 1234 5698 7654 32",
       "ssn": "536-90-4399", "email": "pat.lee@gmail.com", "phone": "(415) 555-2671"}


def test_pii_is_redacted_before_anything_is_kept_and_rules_read_it_as_said(
        client: TestClient, users: Users, stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    admin = auth(users.token("Admin"))
    rule = {"id": "mail", "kind": "keyword", "phrases": ["gmail"], "severity": "low",
            "cooldown_seconds": 0}
    assert client.put("/v1/rules", headers=admin, json={"rules": [rule]}).status_code == 200
    connector = auth(users.token("Connector"))
    with client.websocket_connect("/v1/ingest", headers=connector) as ws:
        ingest = Connector(ws)
        ingest.start("p1")
        with client.websocket_connect("/v1/conversations/p1/monitor", headers=admin) as mon:
            assert mon.receive_json()["type"] == "catch_up"
            assert mon.receive_json()["type"] == "live"
            ingest.say("p1", "s1", f"my card {PII['card']} and iban {PII['iban']}",
                       final=False)
            for i, (kind, value) in enumerate(PII.items()):
                assert ingest.say("p1", f"f{i}", f"the {kind} is {value}")["status"] == \
                    "accepted"
            shown = [mon.receive_json() for _ in range(1 + len(PII) + 1)]
        whisper = client.post("/v1/conversations/p1/whisper", headers=admin,
                              json={"text": f"ask for {PII['phone']}"})
        assert whisper.status_code == 200
        ingest.end("p1")
    texts = [m["text"] for m in shown if m["type"] == "segment"]
    assert texts[0] == "my card [CARD] and iban [IBAN]"
    assert texts[1:] == [f"the {kind} is [{kind.upper()}]" for kind in PII]
    # The keyword rule read the address as said; its evidence keeps it redacted.
    [alert] = client.get("/v1/alerts", headers=admin).json()["alerts"]
    assert alert["rule_id"] == "mail"
    assert alert["evidence"]["segments"][-1]["text"] == "the email is [EMAIL]"
    transcript = client.get("/v1/transcripts/p1", headers=admin).json()
    assert [t["text"] for t in transcript["turns"]] == texts[1:]
    found = client.get("/v1/transcripts", headers=admin, params={"q": "1111"}).json()
    assert found["hits"] == []
    # Nor in the full-text index, nor in an export.
    for q in ("1111", "gmail", "4399", "2671", "WEST", "card"):
        hits = client.get("/v1/search/turns", headers=admin, params={"q": q}).json()["hits"]
        assert [h["text"] for h in hits] == (["the card is [CARD]"] if q == "card" else [])
    exported = b"".join(client.get(f"/v1/search/{mode}/export", headers=admin, params={
        "q": "the OR my", "format": fmt}).content for mode in ("turns", "conversations")
        for fmt in ("csv", "jsonl"))
    assert b"[PHONE]" in exported
    everything = stored.everything() + exported
    for value in PII.values():
        for form in (value, value.replace(" ", ""), value.split("@")[0]):
            assert form.encode() not in everything, form
            assert form not in caplog.text


def _monitor_until_segments(ws: object, count: int) -> list[dict[str, object]]:
    """The next ``count`` segment messages on a monitor socket (other messages skipped)."""
    got: list[dict[str, object]] = []
    while len(got) < count:
        message = ws.receive_json()  # type: ignore[attr-defined]
        if message["type"] == "segment":
            got.append(message)
    return got


def test_a_monitor_sees_words_as_said_only_with_the_permission_and_only_live(
        client: TestClient, users: Users, stored: Stored) -> None:
    admin = auth(users.token("Admin"))  # (Admin alone holds monitor-unredacted)
    manager = auth(users.token("CallCenterManager"))
    said = f"my card is {PII['card']}"
    with client.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        ingest = Connector(ws)
        ingest.start("u1")
        with client.websocket_connect("/v1/conversations/u1/monitor", headers=admin) as a, \
                client.websocket_connect("/v1/conversations/u1/monitor",
                                         headers=manager) as m:
            for mon in (a, m):
                assert [mon.receive_json()["type"] for _ in range(2)] == ["catch_up", "live"]
            ingest.say("u1", "s1", said, final=False)
            assert ingest.say("u1", "s1", said)["status"] == "accepted"
            assert ingest.say("u1", "s2", "nothing to hide")["status"] == "accepted"
            privileged, plain = _monitor_until_segments(a, 3), _monitor_until_segments(m, 3)
        # A catch-up shows what is kept: redacted, whoever asks.
        with client.websocket_connect("/v1/conversations/u1/monitor", headers=admin) as late:
            catch_up = late.receive_json()
        ingest.end("u1")
    assert [s["text"] for s in privileged] == [s["text"] for s in plain] == [
        "my card is [CARD]", "my card is [CARD]", "nothing to hide"]
    assert [s.get("text_unredacted") for s in privileged] == [said, said, None]
    assert all("text_unredacted" not in s for s in plain)
    assert [e.get("text") for e in catch_up["transcript"]] == ["my card is [CARD]",
                                                               "nothing to hide"]
    assert "text_unredacted" not in str(catch_up)
    for form in (PII["card"], PII["card"].replace(" ", "")):
        assert form.encode() not in stored.everything()
    # The audit says which monitors saw words as said.
    starts = client.get("/v1/audit", headers=admin,
                        params={"action": "monitor.start", "target_id": "u1"}).json()
    assert sorted((e["actor"] == "user2", e["details"]) for e in starts["entries"]) == [
        (False, {"unredacted": True}), (False, {"unredacted": True}), (True, {})]


def test_monitor_unredacted_granted_while_a_monitor_is_open_applies_from_the_next_one(
        client: TestClient, users: Users) -> None:
    """What an open monitor shows matches its audit entry: a permission given meanwhile
    does not reveal words on a socket audited as redacted."""
    admin = auth(users.token("Admin"))
    for name, permissions in (("Watcher", ["manager-monitor"]),
                              ("Revealer", ["manager-monitor", "monitor-unredacted"])):
        assert client.post("/v1/security-profiles", headers=admin, json={
            "name": name, "permissions": permissions, "description": name}).status_code == 201
    lee = auth(users.token("Watcher", username="lee"))
    said = f"call me on {PII['phone']}"
    with client.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) as ws:
        ingest = Connector(ws)
        ingest.start("g1")
        with client.websocket_connect("/v1/conversations/g1/monitor", headers=lee) as mon:
            assert [mon.receive_json()["type"] for _ in range(2)] == ["catch_up", "live"]
            assert client.patch("/v1/users/lee", headers=admin,
                                json={"profiles": ["Revealer"]}).status_code == 200
            time.sleep(2.5)  # (open sockets learn of access changes within about 2 s)
            assert ingest.say("g1", "s1", said)["status"] == "accepted"
            [segment] = _monitor_until_segments(mon, 1)
        with client.websocket_connect("/v1/conversations/g1/monitor", headers=lee) as again:
            assert [again.receive_json()["type"] for _ in range(2)] == ["catch_up", "live"]
            assert ingest.say("g1", "s2", said)["status"] == "accepted"
            [next_segment] = _monitor_until_segments(again, 1)
        ingest.end("g1")
    assert "text_unredacted" not in segment
    assert next_segment["text_unredacted"] == said
