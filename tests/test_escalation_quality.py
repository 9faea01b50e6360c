"""Escalation quality on real conversations labelled by reading (tests/data): the default
rules must find the unhappy customers without crying wolf. The labels were made without
looking at any score; `docs/rules.md` reports these figures."""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics import signals
from analytics.default_rules import DEFAULT_RULES
from analytics.quality import (
    Spread,
    cross_validated,
    fold_of,
    judge,
    load_corpus,
    load_labels,
    load_snippets,
    replay_corpus,
)
from analytics.scoring import SUPPORT_LEXICON, Scorer, load_overlay
from contact_center.app import create_app
from contact_center.settings import Settings
from tests.conftest import SHARED_DATA, Connector, Users, auth, make_store

LABELS = Path(__file__).parent / "data" / "twitter_care_labels.jsonl"
CORPUS = SHARED_DATA / "twitter-care" / "conversations.jsonl"
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(),
                                  reason="needs ../shared/data (the twitter-care corpus)")
# Review snippets labelled by reading (keyed by snippet id; the texts stay in ../shared).
SNIPPETS = SHARED_DATA / "vader-groundtruth" / "amazonReviewSnippets_GroundTruth.tsv"
SNIPPET_LABELS = Path(__file__).parent / "data" / "amazon_review_labels.jsonl"
needs_snippets = pytest.mark.skipif(not SNIPPETS.is_file(),
                                    reason="needs ../shared/data (vader-groundtruth)")


@needs_corpus
def test_every_customer_turn_is_labelled() -> None:
    labels = load_labels(LABELS)
    turns = {(c["conversation_id"], t["seq"]) for c in load_corpus(CORPUS)
             for t in c["turns"] if t["speaker"] == "customer"}
    assert set(labels) == turns
    assert set(labels.values()) == {"escalate", "mild", "none"}


@needs_corpus
def test_default_rules_find_the_unhappy_customers_fold_by_fold() -> None:
    """The targets, on the labelled split judged in five folds by conversation: the
    pooled figures meet them; each fold's are printed with their spread."""
    judged = cross_validated(DEFAULT_RULES, load_corpus(CORPUS), load_labels(LABELS))
    print(json.dumps({"pooled": {k: v for k, v in judged.pooled.as_dict().items()
                                 if k != "by_rule"},
                      "spread": {k: vars_of(v) for k, v in judged.spread.items()}}, indent=1))
    figures = judged.pooled
    assert figures.escalate_conversations == 69
    # Few alerts on neutral turns: supervisors learn to trust them.
    assert figures.neutral_share <= 0.08
    # Most conversations with an "escalate" turn raise an alert.
    assert figures.escalate_recall >= 0.78
    # High severity means it: most high alerts land on "escalate" turns.
    assert figures.high_on_escalate >= 0.75
    # No fold is far off: the figures are not carried by a few conversations.
    assert judged.spread["neutral_share"].high <= 0.15
    assert judged.spread["escalate_recall"].low >= 0.6
    assert judged.spread["high_on_escalate"].low >= 0.6



@needs_corpus
def test_the_folds_the_signals_were_not_made_from() -> None:
    """The signals were changed from the errors of folds 0-2 alone; folds 3 and 4 are
    the out-of-sample figures docs/rules.md reports (neutral alerts there are above the
    8% target: 8.5%)."""
    corpus, labels = load_corpus(CORPUS), load_labels(LABELS)
    held_out = judge(DEFAULT_RULES, [c for c in corpus
                                     if fold_of(c["conversation_id"], 5) in (3, 4)], labels)
    print(json.dumps({k: v for k, v in held_out.as_dict().items() if k != "by_rule"},
                     indent=1))
    assert held_out.neutral_share <= 0.09
    assert held_out.escalate_recall >= 0.78
    assert held_out.high_on_escalate >= 0.75


def vars_of(spread: Spread) -> dict[str, float]:
    return {k: round(getattr(spread, k), 3) for k in ("mean", "stdev", "low", "high")}


@needs_snippets
def test_every_review_snippet_is_labelled() -> None:
    conversations, labels = load_snippets(SNIPPETS, SNIPPET_LABELS)
    assert len(conversations) == len(labels) == 3708
    assert {(c["conversation_id"], 1) for c in conversations} == set(labels)
    assert Counter(labels.values()) == {"none": 2373, "mild": 1119, "escalate": 216}


@needs_snippets
def test_the_rules_hold_on_review_snippets_they_were_not_written_from() -> None:
    """3,708 sentences of customers' product reviews, labelled the same way: each is a
    one-turn conversation (so the figures are the turn-level signals'). The rules were
    not tuned on them sentence by sentence; these figures say what carries over."""
    judged = cross_validated(DEFAULT_RULES, *load_snippets(SNIPPETS, SNIPPET_LABELS))
    print(json.dumps({"pooled": {k: v for k, v in judged.pooled.as_dict().items()},
                      "spread": {k: vars_of(v) for k, v in judged.spread.items()}}, indent=1))
    figures = judged.pooled
    assert figures.neutral_share <= 0.12
    assert figures.escalate_recall >= 0.5  # of the snippets labelled escalate
    assert figures.high_on_escalate >= 0.75


# What the misses and false alarms were like, said in other words than any
# labelled turn: each kind must raise an alert (of the severity it deserves).
KINDS = {
    "a decision to leave, already taken": [
        ("I uninstalled your app this morning.", "high"),
        ("We moved our accounts to another bank last week.", "high"),
        ("You just lost me as a customer.", "high"),
        ("Switched to @Verizon today, bye.", "high")],
    "contempt without profanity": [
        ("Your service sucks.", "high"), ("This company should be ashamed.", "high"),
        ("Worthless product, total rip-off.", "medium")],
    "stuck in a loop": [
        ("I keep getting sent around in circles between departments.", "medium"),
        ("Endless troubleshooting and nothing changes.", "medium"),
        ("Impossible to reach a real person at your company.", "medium"),
        ("Nobody answers the phone and your chat doesn't respond.", "medium")],
    "regulators and the press": [
        ("@FCC @CFPB look at how this company treats its customers", "high"),
        ("I'm contacting a journalist about this.", "high"),
        ("The attorney general will hear about this.", "high")],
    "desperation and going public": [
        ("I'm begging you, please restore my account.", "medium"),
        ("This is devastating, all my photos are gone.", "medium"),
        ("I'll be posting this everywhere on social media.", "high")],
}
SEVERITY = {"low": 0, "medium": 1, "high": 2}


def _hits(text: str) -> list[Any]:
    conversation = {"conversation_id": "k", "queue": "q",
                    "turns": [{"seq": 1, "speaker": "customer", "text": text}]}
    return [trigger for _, trigger in replay_corpus(DEFAULT_RULES, [conversation])]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_unhappy_customer_raises_an_alert(kind: str) -> None:
    for text, severity in KINDS[kind]:
        hits = _hits(text)
        assert hits, text
        assert max(SEVERITY[t.rule.severity] for t in hits) >= SEVERITY[severity], \
            (text, [(t.rule.id, t.rule.severity) for t in hits])


CALM = [
    "Hi, I'd like to cancel my subscription please.", "Please close my account, thank you.",
    "Can you help me cancel my membership?", "I want to cancel my order, it was a mistake.",
    "How do I delete my account?", "Could I get a refund for the duplicate charge please?",
    "Hello, please cancel my plan at the end of this month. Thanks!",
    "I would like to close my savings account and move the money to my checking.",
    "Is it possible to get a full refund? The item arrived damaged.",
    "I need to cancel my card, I think I lost it.", "Please unsubscribe me from your newsletter",
    "I'm moving abroad so I need to close my account. What do I need to do?",
    "Can I cancel the service without a fee?", "Hi, requesting a refund for order 1234.",
    "We are closing our business account at the end of the year, please advise.",
    "Please cancel my subscription, I no longer need it.",
    "I cancelled my order yesterday, when will I get my refund?",
    # "scam" and "fraud" asked about, headlines and bugs described
    "Is this email a scam? It says my account is locked.",
    "Is this a fraud call? Someone phoned asking for my PIN.",
    "I got a text saying I won a prize, is it a scam?",
    "BREAKING NEWS: the merger is official, what happens to my plan?",
    "Company X to go public next year, will my shares change?",
    "The app crashes every time I open the camera on Android 14.",
    "I have had this phone for three months now and the battery drains overnight.",
]


def test_calm_requests_raise_no_high_alert() -> None:
    """Asking to cancel, close or get a refund, politely; asking whether something is a
    scam; a headline; a bug described: a supervisor need not look now."""
    for text in CALM:
        high = [t.rule.id for t in _hits(text) if t.rule.severity == "high"]
        assert not high, (text, high)


def _texts() -> list[str]:
    texts = [t["text"] for c in load_corpus(CORPUS) for t in c["turns"]]
    path = SHARED_DATA / "vader-groundtruth" / "amazonReviewSnippets_GroundTruth.tsv"
    with path.open(encoding="utf-8") as f:
        texts += [row[2] for row in itertools.islice(csv.reader(f, delimiter="\t"), 2000)]
    return texts


def test_no_signal_pattern_runs_on_every_turn() -> None:
    """Each pattern is indexed by how its matches start or by a piece of text they hold,
    so a turn runs only the few that could match it (see bench/README.md)."""
    assert [signals._PATTERNS[i][1].pattern for i in signals._index(None).always] == []
    counted, desk = (next(i for i, entry in enumerate(signals._PATTERNS)
                          if entry[1].pattern.startswith(start))
                     for start in (r"(?:\d+", r"(?:\w{0,24}newsdesk"))
    plain = set(signals._candidates("the order came on time, thanks"))
    assert {counted, desk} <= set(signals._candidates("i sent 12 emails to your newsdesk"))
    assert not {counted, desk} & plain
    assert counted in set(signals._candidates("٣ calls"))  # (any digit `\d` matches)


@needs_corpus
def test_fast_signal_detection_equals_the_plain_patterns() -> None:
    """`detect` skips patterns that cannot match; it must find what every pattern, run
    plainly over the whole text, finds (and may list overlapping matches the plain
    alternation consumed)."""
    plain = {name: signals._compile(patterns) for name, patterns in signals.PATTERNS.items()}
    for text in _texts():
        for negation_aware in (True, False):
            found = signals.detect(text, negation_aware)
            found.pop("intensity", None)
            expected = {name: hits for name, pattern in plain.items()
                        if (hits := signals.matches(
                            pattern, text, negation_aware and name in signals.NEGATABLE))}
            assert found.keys() == expected.keys(), text
            for name, hits in expected.items():
                assert set(hits) <= set(found[name]), text


@needs_corpus
def test_detecting_some_signals_finds_what_detecting_all_finds_of_them() -> None:
    """A turn is searched only for the signals its role's rules read (an agent's for
    profanity alone), through an index of those signals' patterns alone."""
    wanted = {DEFAULT_RULES.signals_for(role) for role in ("customer", "agent", "bot")}
    wanted |= {frozenset({name}) for name in signals.PATTERNS}
    for text in _texts():
        for negation_aware in (True, False):
            everything = signals.detect(text, negation_aware)
            for only in wanted:
                assert signals.detect(text, negation_aware, only) == {
                    name: hits for name, hits in everything.items() if name in only}, text


@needs_corpus
@needs_snippets
def test_the_support_overlay_cuts_false_alarms_and_keeps_recall() -> None:
    """Why the service applies it unless told not to: on the folds the signals were made
    from, on the review snippets and on the held-out folds alike, fewer alerts on neutral
    turns and no conversation with an "escalate" turn lost."""
    corpus, labels = load_corpus(CORPUS), load_labels(LABELS)
    snippets, snippet_labels = load_snippets(SNIPPETS, SNIPPET_LABELS)
    plain, tuned = Scorer(), Scorer(load_overlay(SUPPORT_LEXICON))
    for name, conversations, labelled in (
            ("folds 0-2", [c for c in corpus if fold_of(c["conversation_id"], 5) < 3], labels),
            ("review snippets", snippets, snippet_labels),
            ("folds 3-4", [c for c in corpus if fold_of(c["conversation_id"], 5) >= 3],
             labels)):
        before = judge(DEFAULT_RULES, conversations, labelled, plain)
        after = judge(DEFAULT_RULES, conversations, labelled, tuned)
        print(name, before.alerts_by_label, after.alerts_by_label)
        assert after.alerts_by_label["none"] < before.alerts_by_label["none"], name
        assert after.escalate_conversations_alerted >= before.escalate_conversations_alerted
        assert after.high_on_escalate >= 0.75, name


def test_serve_applies_the_support_overlay_and_a_deployments_own(tmp_path: Path) -> None:
    """By default the support overlay reaches live scores; turned off, scores are plain
    VADER's; a deployment's own overlay applies on top of it."""
    text = "My account is blocked and I get an error"
    own = tmp_path / "own.txt"
    own.write_text("blocked -3\n")
    cases = (({}, Scorer(load_overlay(SUPPORT_LEXICON))),
             ({"support_lexicon": False}, Scorer()),
             ({"lexicon_overlay": own},
              Scorer(load_overlay(SUPPORT_LEXICON) | load_overlay(own))))
    for n, (given, expected) in enumerate(cases):
        folder = tmp_path / str(n)
        folder.mkdir()
        settings = Settings(database=folder / "cc.db", **given)
        with TestClient(create_app(settings, make_store("sqlite", folder))) as client:
            token = Users(lambda folder=folder: make_store("sqlite", folder)).token("Connector")
            with client.websocket_connect("/v1/ingest", headers=auth(token)) as ws:
                connector = Connector(ws)
                connector.start("c1")
                ack = connector.say("c1", "s1", text)
        assert ack["scores"] == expected.score(text).as_dict(), given
    assert Scorer().score(text).compound < -0.5 < cases[0][1].score(text).compound
    assert cases[2][1].score(text).compound < cases[0][1].score(text).compound


@needs_corpus
def test_one_alert_per_conversation_in_trouble_on_the_labelled_split(tmp_path: Path) -> None:
    """The labelled split replayed through the service: hits join one alert per
    conversation (at most 1.15 alerts per alerted conversation), and as many conversations
    with an "escalate" turn alert as the rules find on their own."""
    corpus, labels = load_corpus(CORPUS), load_labels(LABELS)
    wanted = {cid for (cid, _), label in labels.items() if label == "escalate"}
    settings = Settings(database=tmp_path / "cc.db")
    with TestClient(create_app(settings, make_store("sqlite", tmp_path))) as client:
        users = Users(lambda: make_store("sqlite", tmp_path))
        manager = auth(users.token("CallCenterManager"))
        with client.websocket_connect("/v1/ingest", headers=auth(users.token("Connector"))) \
                as ws:
            connector = Connector(ws)
            for c in corpus:
                cid = c["conversation_id"]
                assert connector.start(cid, queue=c["queue"])["status"] == "accepted"
                for t in c["turns"]:
                    role = "customer" if t["speaker"] == "customer" else "agent"
                    assert connector.say(cid, str(t["seq"]), t["text"], role=role)[
                        "status"] == "accepted"
                assert connector.end(cid)["status"] == "accepted"
        alerts, cursor = [], ""
        while cursor is not None:
            page = client.get(f"/v1/alerts?limit=1000{cursor and '&cursor=' + cursor}",
                              headers=manager).json()
            alerts += page["alerts"]
            cursor = page["next_cursor"]
    per_conversation = Counter(a["conversation_id"] for a in alerts)
    hits = sum(a["hit_count"] for a in alerts)
    baseline = judge(DEFAULT_RULES, corpus, labels)
    figures = {"alerts": len(alerts), "hits": hits,
               "alerted_conversations": len(per_conversation),
               "alerts_per_alerted_conversation": len(alerts) / len(per_conversation),
               "escalate_conversations_alerted": len(wanted & set(per_conversation)),
               "escalate_conversations_alerted_by_the_rules_alone":
                   baseline.escalate_conversations_alerted}
    print(json.dumps(figures, indent=1))  # docs/alerts.md reports them
    assert figures["alerts_per_alerted_conversation"] <= 1.15
    assert hits > len(alerts)  # (what a supervisor used to get: one alert per hit)
    assert all(a["status"] == "resolved" for a in alerts)  # every conversation ended
    assert figures["escalate_conversations_alerted"] >= baseline.escalate_conversations_alerted


ORDINARY = [  # everyday words that once read as anger, churn or threats
    "Hi, this is Patty", "my dojo membership", "I saw it on the news",
    "cancel my newspaper delivery", "I moved to Texas, please update my address",
    "I went back to check", "transfer money to another bank", "I work for a company",
    "I should have gotten a confirmation email", "you took my money twice",
    "I'm leaving for the airport", "it was fraud, I didn't make this charge",
    "it's in my junk folder", "the garbage disposal broke", "tell me a joke",
    "this vacuum sucks up everything", "I screwed up my order", "I don't order often",
    "how do I avoid this fee?", "I did not pick up the parcel", "running around the park",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_words_raise_nothing(text: str) -> None:
    assert [t.rule.id for t in _hits(text)] == []


@pytest.mark.parametrize(("text", "signal"), [
    ("I called twice", "repeated_contact"), ("I should have gone with verizon", "churn"),
    ("I will never buy anything again", "churn"), ("what an ahole", "insult"),
    ("@NYAttorneyGeneral please help", "threat")])
def test_optional_spaces_and_handles_match(text: str, signal: str) -> None:
    """A pattern's " ?" is an optional space, not a required one."""
    assert signal in signals.detect(text)


@pytest.mark.parametrize("text", ["consumer" * 1000, "attorney" * 500, "a" * 4000,
                                  "no one " * 570, "fuck" * 1000])
def test_no_signal_pattern_backtracks_on_long_words(text: str) -> None:
    """A bound far above the measured cost (under 3 ms), far below what an unbounded
    repeat before a literal cost (1.1 s on the first of these)."""
    started = time.perf_counter()
    signals.detect(text)
    assert time.perf_counter() - started < 0.25
