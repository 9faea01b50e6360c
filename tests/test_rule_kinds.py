"""Every rule kind's evaluator and the signal detectors, driven through the public engine:
``evaluate``, ``due``, ``deadlines`` and ``replay``, plus rule validation, versioning,
state snapshots and the scorer's lexicon overlay."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from analytics import scoring, signals
from analytics.replay import Replayed, fresh, replay
from analytics.rolling import RollingConfig
from analytics.rules import (
    AgentConductRule,
    AnyRule,
    HumanRequestedRule,
    KeywordRule,
    ResponseTimeRule,
    Role,
    RuleSet,
    RuleState,
    Scope,
    SentimentDropRule,
    SentimentRule,
    SignalRule,
    Trigger,
    Turn,
    deadlines,
    due,
    evaluate,
    track_wait,
)
from analytics.scoring import OverlayError, Scorer, Scores, load_overlay
from analytics.signals import Signal

NO_RULES = RuleSet()


# -- helpers --------------------------------------------------------------------------------


def subject(agent_id: str | None = "agent-1", queue: str = "billing", channel: str = "chat",
            window: int = 5) -> Replayed:
    return fresh("c1", queue, channel, agent_id, RollingConfig(window=window, ewma_alpha=0.5))


def turn(i: int, text: str | None = "", role: Role = "customer", compound: float = 0.0,
         at: float | None = None) -> Turn:
    return Turn(segment_id=f"s{i}", role=role, participant_id=f"{role}-1", text=text,
                scores=Scores(0.0, 1.0, 0.0, compound), at=float(i) if at is None else at)


def feed(rules: RuleSet | AnyRule, conv: Replayed, *turns: Turn) -> list[Trigger]:
    """Feed turns as the pipeline does (rolling sentiment, waits, rules)."""
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet(rules=[rules])
    return replay(ruleset, conv, turns)


def arrive(conv: Replayed, *turns: Turn) -> None:
    """Record turns on the conversation without running any rule."""
    assert replay(NO_RULES, conv, turns) == []


def fired(rule: AnyRule, compounds: list[float], times: list[float] | None = None,
          window: int = 5) -> list[tuple[int, Trigger]]:
    """Feed customer turns with these compounds; (index, trigger) for each alert."""
    conv, out = subject(window=window), []
    for i, c in enumerate(compounds):
        at = float(i) if times is None else times[i]
        out += [(i, t) for t in feed(rule, conv, turn(i, compound=c, at=at))]
    return out


def says(rule: AnyRule, text: str | None, role: Role = "customer", compound: float = 0.0,
         conv: Replayed | None = None) -> list[Trigger]:
    return feed(rule, conv or subject(), turn(0, text, role, compound))


def ids(trigger: Trigger) -> tuple[str, ...]:
    return tuple(t.segment_id for t in trigger.turns)


# -- sentiment threshold: the three metrics ------------------------------------------------


def test_sentiment_window_metric_reads_the_moving_mean() -> None:
    rule = SentimentRule(id="w", metric="window", below=-0.5, consecutive=1,
                         clear_above=-0.1, cooldown_seconds=0)
    # Means over a window of 3: 0.6, -0.15, -0.4, -0.9.
    alerts = fired(rule, [0.6, -0.9, -0.9, -0.9], window=3)
    assert [i for i, _ in alerts] == [3]
    t = alerts[0][1]
    assert t.metric == pytest.approx(-0.9)
    assert t.window == (-0.9, -0.9, -0.9)
    assert ids(t) == ("s3",)
    assert t.reason == ("customer sentiment (window) -0.900 below -0.5 "
                        "for 1 consecutive customer turn(s)")
    assert t.matched == () and t.signals == {}


def test_sentiment_ewma_metric_weighs_recent_turns() -> None:
    ewma = SentimentRule(id="e", metric="ewma", below=-0.5, consecutive=1, cooldown_seconds=0)
    window = SentimentRule(id="w", metric="window", below=-0.5, consecutive=1,
                           cooldown_seconds=0)
    # EWMA (alpha 0.5): 0.6, -0.15, -0.525; the mean of the three is only -0.4.
    alerts = fired(ewma, [0.6, -0.9, -0.9])
    assert [i for i, _ in alerts] == [2]
    t = alerts[0][1]
    assert t.metric == pytest.approx(-0.525)
    assert t.window == (0.6, -0.9, -0.9)
    assert t.reason.startswith("customer sentiment (ewma) -0.525 below -0.5")
    assert fired(window, [0.6, -0.9, -0.9]) == []


def test_sentiment_turn_metric_reads_the_latest_turn_alone() -> None:
    rule = SentimentRule(id="t", metric="turn", below=-0.75, consecutive=1,
                         clear_above=-0.25, cooldown_seconds=0)
    alerts = fired(rule, [0.5, -0.9])
    assert [i for i, _ in alerts] == [1]
    t = alerts[0][1]
    assert t.metric == -0.9
    assert t.window == (-0.9,)  # the metric read one turn, not the whole window
    assert ids(t) == ("s1",)


def test_sentiment_streak_spans_agent_turns() -> None:
    """Agent turns neither count nor break the streak; the evidence is both customer turns."""
    rule = SentimentRule(id="n", metric="turn", below=-0.5, consecutive=2, cooldown_seconds=0)
    conv = subject()
    assert feed(rule, conv, turn(0, compound=-0.9)) == []
    assert feed(rule, conv, turn(1, "sorry about that", "agent", compound=0.9)) == []
    [t] = feed(rule, conv, turn(2, compound=-0.8))
    assert ids(t) == ("s0", "s2")
    assert t.metric == -0.8


# -- sentiment_drop -------------------------------------------------------------------------


def test_sentiment_drop_from_start_and_from_peak() -> None:
    start = SentimentDropRule(id="start", metric="turn", drop=0.8, reference="start",
                              min_turns=1, cooldown_seconds=0)
    peak = SentimentDropRule(id="peak", metric="turn", drop=0.8, reference="peak",
                             min_turns=1, cooldown_seconds=0)
    conv, alerts = subject(), []
    for i, c in enumerate([0.5, 0.9, -0.2, -0.4]):
        alerts += [(i, t) for t in feed(RuleSet(rules=[start, peak]), conv,
                                        turn(i, compound=c))]
    assert [(i, t.rule.id) for i, t in alerts] == [(2, "peak"), (3, "start")]
    (_, from_peak), (_, from_start) = alerts
    assert from_peak.reason == ("customer sentiment (turn) fell 1.100 from its peak 0.900 "
                                "to -0.200 (more than 0.8)")
    assert from_peak.metric == -0.2 and from_peak.window == (-0.2,)
    assert ids(from_peak) == ("s2",)
    assert from_start.reason == ("customer sentiment (turn) fell 0.900 from its start 0.500 "
                                 "to -0.400 (more than 0.8)")
    assert ids(from_start) == ("s3",)
    assert conv.states["start"].start == 0.5 and conv.states["peak"].peak == 0.9


def test_sentiment_drop_waits_for_min_turns() -> None:
    def at(min_turns: int) -> list[int]:
        rule = SentimentDropRule(id="d", metric="turn", drop=0.5, reference="start",
                                 min_turns=min_turns, cooldown_seconds=0)
        return [i for i, _ in fired(rule, [0.8, -0.8, -0.8])]

    assert at(1) == [1]
    assert at(2) == [1]
    assert at(3) == [2]  # the fall was there at turn 1, but only 2 customer turns
    assert at(4) == []


def test_sentiment_drop_rearms_only_within_clear_within() -> None:
    rule = SentimentDropRule(id="d", metric="turn", drop=1.0, clear_within=0.2,
                             reference="start", min_turns=1, cooldown_seconds=0)
    # falls from 0.5: 0, 1.1 (fire), 0.5 (still disarmed), 1.1, 0.15 (re-arms), 1.1 (fire)
    assert [i for i, _ in fired(rule, [0.5, -0.6, 0.0, -0.6, 0.35, -0.6])] == [1, 5]


def test_sentiment_drop_rearms_by_default_at_half_the_drop() -> None:
    rule = SentimentDropRule(id="d", metric="turn", drop=1.0, reference="start",
                             min_turns=1, cooldown_seconds=0)
    assert rule.rearm_at == 0.5
    assert [i for i, _ in fired(rule, [0.5, -0.6, -0.1, -0.6])] == [1]  # fell back 0.6
    assert [i for i, _ in fired(rule, [0.5, -0.6, 0.05, -0.6])] == [1, 3]  # back to 0.45


def test_sentiment_drop_cooldown_holds_the_alert_until_it_ends() -> None:
    rule = SentimentDropRule(id="d", metric="turn", drop=1.0, clear_within=0.2,
                             reference="start", min_turns=1, cooldown_seconds=100)
    alerts = fired(rule, [0.5, -0.6, 0.45, -0.6, -0.6], times=[0, 10, 20, 30, 120])
    # Re-armed at t=20, cooling at t=30, still fallen and armed at t=120.
    assert [(i, t.turns[0].at) for i, t in alerts] == [(1, 10.0), (4, 120.0)]


def test_sentiment_drop_ignores_agent_turns() -> None:
    rule = SentimentDropRule(id="d", metric="turn", drop=0.5, reference="start",
                             min_turns=3, cooldown_seconds=0)
    conv = subject()
    assert feed(rule, conv, turn(0, compound=0.8)) == []
    assert feed(rule, conv, turn(1, "no", "agent", compound=-1.0)) == []
    assert feed(rule, conv, turn(2, compound=-0.8)) == []
    assert feed(rule, conv, turn(3, "no", "agent", compound=-1.0)) == []
    assert conv.states["d"].turns == 2
    assert conv.states["d"].start == 0.8
    [t] = feed(rule, conv, turn(4, compound=-0.8))
    assert ids(t) == ("s4",)


# -- keyword ----------------------------------------------------------------------------------


def test_keyword_whole_words_any_case() -> None:
    rule = KeywordRule(id="kw", phrases=["cancel", "speak to a manager"], cooldown_seconds=0)
    [t] = says(rule, "I want to cancel")
    assert t.matched == ("cancel",)
    assert t.reason == "customer said: 'cancel'"
    assert ids(t) == ("s0",) and t.metric is None and t.signals == {}
    assert says(rule, "The cancellation went through") == []
    assert says(rule, "It was cancelled yesterday") == []
    assert [t.matched for t in says(rule, "CANCEL. Now.")] == [("cancel",)]
    [t] = says(rule, "Cancel it or let me Speak   to a\nMANAGER")
    assert t.matched == ("cancel", "speak to a manager")
    assert t.reason == "customer said: 'cancel', 'speak to a manager'"
    assert says(rule, None) == []  # a restored turn without words


def test_keyword_roles() -> None:
    customers = KeywordRule(id="kw", phrases=["cancel"], cooldown_seconds=0)
    assert says(customers, "I can cancel that for you", role="agent") == []
    assert says(customers, "cancel", role="bot") == []
    staff = KeywordRule(id="kw", phrases=["cancel"], roles=["agent", "bot"], cooldown_seconds=0)
    assert says(staff, "I want to cancel") == []
    [t] = says(staff, "I can cancel that for you", role="agent")
    assert t.reason == "agent said: 'cancel'"
    assert [t.reason for t in says(staff, "Shall I cancel?", role="bot")] == [
        "bot said: 'cancel'"]


def test_keyword_negation_aware_on_and_off() -> None:
    aware = KeywordRule(id="kw", phrases=["cancel"], negation_aware=True, cooldown_seconds=0)
    plain = KeywordRule(id="kw", phrases=["cancel"], cooldown_seconds=0)
    assert says(aware, "I do not want to cancel") == []
    assert says(aware, "I don't want to cancel") == []
    assert says(aware, "I never said cancel") == []
    assert [t.matched for t in says(aware, "I want to cancel")] == [("cancel",)]
    # A negator more than three words back no longer counts.
    assert [t.matched for t in says(aware, "Not happy at all, I want to cancel")] == [
        ("cancel",)]
    assert [t.matched for t in says(plain, "I do not want to cancel")] == [("cancel",)]


def test_keyword_negation_with_a_curly_apostrophe() -> None:
    """Phones type a curly apostrophe (U+2019): "don\u2019t" negates like "don't"."""
    aware = KeywordRule(id="kw", phrases=["cancel"], negation_aware=True, cooldown_seconds=0)
    assert says(aware, "I don\u2019t want to cancel") == []


@pytest.mark.parametrize("text", ["plain words", "don\u2019t", "a \u2018quote\u2019",
                                  "mod\u02bcal", "\u2019", ""])
def test_a_text_is_translated_only_where_it_holds_what_the_table_changes(text: str) -> None:
    straightened = signals.translated(text)
    assert straightened == text.translate(signals.QUOTES)
    if straightened == text:
        assert straightened is text  # (not copied: the common case costs no translate)


def test_keyword_phrase_with_an_apostrophe_matches_a_curly_one() -> None:
    rule = KeywordRule(id="kw", phrases=["can't log in"], cooldown_seconds=0)
    assert [t.matched for t in says(rule, "I can't log in")] == [("can't log in",)]
    assert [t.matched for t in says(rule, "I can\u2019t log in")] == [("can't log in",)]


def test_keyword_cooldown() -> None:
    rule = KeywordRule(id="kw", phrases=["cancel"], cooldown_seconds=60)
    conv = subject()
    assert len(feed(rule, conv, turn(0, "cancel", at=10))) == 1
    assert feed(rule, conv, turn(1, "cancel", at=69)) == []
    assert len(feed(rule, conv, turn(2, "cancel", at=70))) == 1


# -- signals ----------------------------------------------------------------------------------

EXAMPLES: list[tuple[str, str, list[str]]] = [
    ("churn", "I uninstalled your app, you lost me as a customer.",
     ["lost me as a customer", "lost me", "i uninstalled your app"]),
    ("cancellation", "Please cancel my subscription.", ["cancel my subscription"]),
    ("churn", "I'm switching to Verizon, done with you.", ["i'm switching to",
                                                          "done with you"]),
    ("threat", "I will be contacting my lawyer about this.", ["lawyer"]),
    ("threat", "I am going to report this to the BBB", ["bbb", "report this to"]),
    ("insult", "Your support is useless.", ["your support is useless"]),
    ("contempt", "What a rip-off, this thing is junk.", ["junk", "rip-off"]),
    ("profanity", "This shit is broken again", ["shit"]),
    ("repeated_contact", "This is the third time I have called about this.", ["third time"]),
    ("exasperation", "I am so fed up with this.", ["fed up"]),
    ("intensity", "THIS IS UNACCEPTABLE", ["THIS", "UNACCEPTABLE"]),
    ("human_request", "Can I talk to someone please", ["talk to someone"]),
    ("bot_failure", "Sorry, I didn't understand that. Could you rephrase?",
     ["didn't understand", "could you rephrase"]),
]

NEUTRAL = [
    "I keep getting error code 1006 when I log in, how do I fix it?",
    "How do I reset my password?",
    "When will my order arrive? The tracking number is 1Z999.",
    "I can't connect my printer over WiFi, what should I try?",
    "My card was declined at the ATM, can you check why?",
    "I updated the firmware and the USB port no longer works, any ideas?",
    "Can I get a refund for order 4471?",
]

ALL_SIGNALS: list[Signal] = list(get_args(Signal))


def test_every_signal_has_an_example() -> None:
    assert {name for name, _, _ in EXAMPLES} == set(ALL_SIGNALS)
    assert set(signals.PATTERNS) | {"intensity"} == set(ALL_SIGNALS)


@pytest.mark.parametrize(("name", "text", "hits"), EXAMPLES)
def test_signal_detects_a_realistic_sentence(name: str, text: str, hits: list[str]) -> None:
    assert signals.detect(text)[name] == hits


@pytest.mark.parametrize("text", NEUTRAL)
def test_neutral_technical_questions_show_no_signal(text: str) -> None:
    assert signals.detect(text) == {}
    rule = SignalRule(id="any", any_of=ALL_SIGNALS, cooldown_seconds=0)
    assert says(rule, text) == []


@pytest.mark.parametrize("text", ["How do I switch to dark mode in the app?",
                                  "Can I switch to the annual plan?"])
def test_switching_a_setting_or_plan_is_not_churn(text: str) -> None:
    assert "churn" not in signals.detect(text)


@pytest.mark.parametrize(("curly", "expected"), [
    ("I\u2019m switching to Verizon", {"churn": ["i'm switching to"]}),
    ("I\u2019ve had enough", {"exasperation": ["had enough"]}),
    ("I can\u2019t believe this", {"exasperation": ["can't believe this"]}),
    ("I won\u2019t be renewing", {"churn": ["won't be renewing"]}),
    ("I don\u2019t want to cancel my account, I just want a refund", {}),
    ("I don\u2019t want to sue anyone, just fix it", {}),
    ("Sorry, I didn\u2019t catch that.", {"bot_failure": ["i didn't catch that"]}),
])
def test_curly_apostrophes_work_like_straight_ones(curly: str,
                                                   expected: dict[str, list[str]]) -> None:
    assert signals.detect(curly) == expected
    assert signals.detect(curly.replace("\u2019", "'")) == expected


def test_intensity_needs_two_caps_words_or_repeated_marks() -> None:
    assert signals.intensity("THIS IS UNACCEPTABLE") == ["THIS", "UNACCEPTABLE"]
    assert signals.intensity("WHY IS THIS STILL BROKEN") == ["WHY", "THIS", "STILL"]
    assert signals.intensity("FIX THIS NOW!!") == ["FIX", "THIS", "NOW", "!!"]
    assert signals.intensity("I am ANGRY") == []  # one caps word is not shouting
    assert signals.intensity("NOW NOW NOW") == []  # nor is one word repeated
    assert signals.intensity("Where is my refund??") == ["??"]
    assert signals.intensity("Why?!") == ["?!"]
    assert signals.intensity("Is it working? Thanks!") == []
    # Acronyms are not shouting.
    assert signals.intensity("My USB PIN reader stopped working") == []
    assert signals.intensity("My USB PIN is LOCKED") == []
    assert "intensity" not in signals.detect("The USB PIN and the HDMI port")


def test_signal_rule_any_of() -> None:
    rule = SignalRule(id="s", any_of=["churn", "threat"], cooldown_seconds=0)
    [t] = says(rule, "I'm switching to Verizon")
    assert t.signals == {"churn": ["i'm switching to"]}
    assert t.matched == ("i'm switching to",)
    assert t.metric is None and t.window is None
    assert t.reason == "customer turn shows churn: \"i'm switching to\""
    [t] = says(rule, "I'm done with you or I call my lawyer")
    assert t.signals == {"churn": ["i'm done with", "done with you"], "threat": ["lawyer"]}
    assert t.matched == ("i'm done with", "done with you", "lawyer")
    assert says(rule, "Your support is useless.") == []
    assert says(rule, "Please cancel my account.") == []  # asked: cancellation, not churn


def test_signal_rule_all_of() -> None:
    rule = SignalRule(id="s", all_of=["intensity", "insult"], cooldown_seconds=0)
    [t] = says(rule, "THIS IS UNACCEPTABLE")
    assert t.signals == {"intensity": ["THIS", "UNACCEPTABLE"], "insult": ["unacceptable"]}
    assert t.matched == ("THIS", "UNACCEPTABLE", "unacceptable")
    assert t.reason == ("customer turn shows intensity, insult: "
                        "'THIS', 'UNACCEPTABLE', 'unacceptable'")
    assert says(rule, "this is unacceptable") == []  # insult, but no shouting
    assert says(rule, "WHY IS THIS STILL BROKEN") == []  # shouting, but no insult


def test_signal_rule_all_of_with_any_of() -> None:
    rule = SignalRule(id="s", all_of=["intensity"], any_of=["exasperation", "profanity"],
                      cooldown_seconds=0)
    [t] = says(rule, "THIS IS UNACCEPTABLE and I am fed up")
    assert t.signals == {"intensity": ["THIS", "UNACCEPTABLE"], "exasperation": ["fed up"]}
    assert says(rule, "THIS IS UNACCEPTABLE") == []  # none of any_of
    assert says(rule, "I am so fed up with this.") == []  # not all of all_of


def test_signal_rule_sentiment_below() -> None:
    rule = SignalRule(id="s", any_of=["insult"], sentiment_below=0.0, cooldown_seconds=0)
    [t] = says(rule, "Your support is useless.", compound=-0.4)
    assert t.metric == -0.4
    assert t.reason == ("customer turn shows insult: 'your support is useless'; "
                        "sentiment -0.400 below 0.0")
    assert says(rule, "Your support is useless.", compound=0.0) == []
    assert says(rule, "Your support is useless.", compound=0.3) == []
    assert says(rule, "Your support is great.", compound=-0.4) == []


def test_signal_rule_roles() -> None:
    customers = SignalRule(id="s", any_of=["insult"], cooldown_seconds=0)
    assert says(customers, "Your support is useless.", role="agent") == []
    agents = SignalRule(id="s", any_of=["insult"], roles=["agent"], cooldown_seconds=0)
    assert says(agents, "Your support is useless.") == []
    assert [t.reason for t in says(agents, "You are useless.", role="agent")] == [
        "agent turn shows insult: 'you are useless'"]


def test_signal_rule_is_negation_aware_for_churn_and_threat() -> None:
    rule = SignalRule(id="s", any_of=["churn", "cancellation", "threat"], cooldown_seconds=0)
    assert says(rule, "I don't want to cancel my account, I just want a refund") == []
    assert says(rule, "I'm not going to sue you") == []
    assert says(rule, "I won't be going elsewhere") == []
    assert [t.signals for t in says(rule, "I want to cancel my account")] == [
        {"cancellation": ["cancel my account"]}]
    assert [t.signals for t in says(rule, "I'm going to sue you")] == [{"threat": ["sue"]}]
    # A negator more than three words before the phrase does not cancel it.
    assert [t.signals for t in says(rule, "No, I am going to sue you")] == [
        {"threat": ["sue"]}]


def test_signal_rule_negation_aware_off_counts_negated_churn() -> None:
    rule = SignalRule(id="s", any_of=["cancellation"], negation_aware=False,
                      cooldown_seconds=0)
    [t] = says(rule, "I don't want to cancel my account")
    assert t.signals == {"cancellation": ["cancel my account"]}


def test_signal_rule_cooldown() -> None:
    rule = SignalRule(id="s", any_of=["insult"], cooldown_seconds=30)
    conv = subject()
    assert len(feed(rule, conv, turn(0, "you are useless", at=0))) == 1
    assert feed(rule, conv, turn(1, "you are useless", at=29)) == []
    assert len(feed(rule, conv, turn(2, "you are useless", at=30))) == 1


# -- response_time ------------------------------------------------------------------------------


def test_track_wait() -> None:
    assert track_wait(None, "customer", 5.0) == 5.0
    assert track_wait(5.0, "customer", 9.0) == 5.0  # the oldest unanswered turn
    assert track_wait(5.0, "agent", 9.0) is None
    assert track_wait(5.0, "bot", 9.0) is None
    assert track_wait(None, "agent", 9.0) is None


def test_response_time_fires_once_per_wait_from_the_oldest_turn() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120, cooldown_seconds=0)])
    conv = subject()
    first, second = turn(1, "hello?", at=10.0), turn(2, "anyone there?", at=50.0)
    arrive(conv, first, second)
    assert conv.customer_waiting_since == 10.0
    assert deadlines(rules, conv.states, conv) == [130.0]
    assert due(rules, conv.states, conv, 129.5, conv.last_customer_turn) == []

    [t] = due(rules, conv.states, conv, 130.0, conv.last_customer_turn)
    assert t.rule.id == "rt"
    assert t.metric == 120.0
    assert t.turns == (second,)
    assert t.reason == "customer waiting 120 s for an answer (limit 120 s)"
    assert t.matched == () and t.signals == {} and t.window is None
    assert conv.states["rt"].fired_for == 10.0

    assert due(rules, conv.states, conv, 200.0, conv.last_customer_turn) == []  # same wait
    assert deadlines(rules, conv.states, conv) == []

    arrive(conv, turn(3, "on it", "agent", at=210.0))  # answered: the wait is over
    assert conv.customer_waiting_since is None
    assert deadlines(rules, conv.states, conv) == []
    assert due(rules, conv.states, conv, 1000.0, conv.last_customer_turn) == []

    third = turn(4, "still broken", at=300.0)  # a new wait
    arrive(conv, third)
    assert deadlines(rules, conv.states, conv) == [420.0]
    assert due(rules, conv.states, conv, 419.0, third) == []
    [t] = due(rules, conv.states, conv, 420.0, third)
    assert t.metric == 120.0 and t.turns == (third,)


def test_response_time_a_bot_answer_ends_the_wait() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120)])
    conv = subject(agent_id=None)
    arrive(conv, turn(0, "hi", at=0.0), turn(1, "How can I help?", "bot", at=5.0))
    assert deadlines(rules, conv.states, conv) == []
    assert due(rules, conv.states, conv, 500.0, conv.last_customer_turn) == []


def test_response_time_without_a_customer_turn_passed() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=60)])
    conv = subject()
    arrive(conv, turn(0, "hi", at=0.0))
    [t] = due(rules, conv.states, conv, 61.0)
    assert t.turns == () and t.metric == 61.0
    assert t.reason == "customer waiting 61 s for an answer (limit 60 s)"


@pytest.mark.parametrize(("scope", "queue", "channel", "fires"), [
    (Scope(channels=["chat"]), "billing", "chat", True),
    (Scope(channels=["chat"]), "billing", "voice", False),
    (Scope(queues=["vip"]), "vip", "voice", True),
    (Scope(queues=["vip"]), "billing", "chat", False),
    (Scope(queues=["vip"], channels=["chat"]), "vip", "voice", False),
])
def test_response_time_scope(scope: Scope, queue: str, channel: str, fires: bool) -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=60, scope=scope)])
    conv = subject(queue=queue, channel=channel)
    arrive(conv, turn(0, "hi", at=0.0))
    assert deadlines(rules, conv.states, conv) == ([60.0] if fires else [])
    assert len(due(rules, conv.states, conv, 100.0, conv.last_customer_turn)) == int(fires)
    assert len(replay(rules, subject(queue=queue, channel=channel), [turn(0, "hi")],
                      ended_at=100.0)) == int(fires)


def test_response_time_disabled() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=60, enabled=False)])
    conv = subject()
    arrive(conv, turn(0, "hi", at=0.0))
    assert deadlines(rules, conv.states, conv) == []
    assert due(rules, conv.states, conv, 100.0) == []


def test_response_time_cooldown_spans_waits() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120, cooldown_seconds=300)])
    conv = subject()
    arrive(conv, turn(0, "hi", at=10.0))
    assert len(due(rules, conv.states, conv, 130.0)) == 1
    arrive(conv, turn(1, "hello", "agent", at=200.0), turn(2, "and?", at=210.0))
    assert due(rules, conv.states, conv, 330.0) == []  # the new wait, but cooling down
    assert due(rules, conv.states, conv, 429.0) == []
    [t] = due(rules, conv.states, conv, 430.0)
    assert t.metric == 220.0
    assert t.reason == "customer waiting 220 s for an answer (limit 120 s)"


def test_deadlines_account_for_the_cooldown() -> None:
    """The wait that starts while the rule cools down is due when the cooldown ends."""
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120, cooldown_seconds=300)])
    conv = subject()
    arrive(conv, turn(0, "hi", at=10.0))
    assert len(due(rules, conv.states, conv, 130.0)) == 1
    arrive(conv, turn(1, "hello", "agent", at=200.0), turn(2, "and?", at=210.0))
    assert deadlines(rules, conv.states, conv) == [430.0]


def test_deadlines_of_several_clock_rules_earliest_first() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="a", seconds=300, cooldown_seconds=0),
                           ResponseTimeRule(id="b", seconds=60, cooldown_seconds=0),
                           ResponseTimeRule(id="c", seconds=120, cooldown_seconds=0)])
    conv = subject()
    assert deadlines(rules, conv.states, conv) == []  # nobody waiting
    arrive(conv, turn(0, "hi", at=10.0))
    assert deadlines(rules, conv.states, conv) == [70.0, 130.0, 310.0]
    triggers = due(rules, conv.states, conv, 130.0)
    assert [(t.rule.id, t.metric) for t in triggers] == [("b", 120.0), ("c", 120.0)]
    assert deadlines(rules, conv.states, conv) == [310.0]


def test_evaluate_leaves_clock_rules_alone() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=1)])
    conv = subject()
    conv.customer_waiting_since = 0.0
    assert evaluate(rules, conv.states, turn(5, "hi", at=500.0), conv) == []
    assert conv.states == {}


def test_replay_fires_a_wait_that_outlived_the_conversation() -> None:
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120, cooldown_seconds=0)])
    hello = turn(0, "hello?", at=0.0)
    [t] = replay(rules, subject(), [hello], ended_at=500.0)
    assert t.metric == 120.0 and t.turns == (hello,)
    assert replay(rules, subject(), [hello], ended_at=100.0) == []
    assert replay(rules, subject(), [hello]) == []
    # Answered in time: nothing, however long the conversation lasts afterwards.
    assert replay(rules, subject(), [hello, turn(1, "hi!", "agent", at=100.0)],
                  ended_at=1000.0) == []
    # Answered late: it fired at the deadline, before the answer.
    [t] = replay(rules, subject(), [hello, turn(1, "sorry", "agent", at=200.0)])
    assert t.metric == 120.0
    # Waiting since the oldest unanswered turn; the evidence is the latest one.
    later = turn(1, "anyone?", at=100.0)
    [t] = replay(rules, subject(), [hello, later], ended_at=1000.0)
    assert t.metric == 120.0 and t.turns == (later,)


def test_replay_fires_a_wait_held_back_by_the_cooldown_once_it_ends() -> None:
    """Live, the pipeline fires the second wait when the cooldown ends (t=430); a replay
    of the same conversation must raise the same two alerts."""
    rules = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=120, cooldown_seconds=300)])
    raised = replay(rules, subject(), [turn(0, "hi", at=10.0),
                                       turn(1, "hello", "agent", at=200.0),
                                       turn(2, "and?", at=210.0)], ended_at=1000.0)
    assert [t.metric for t in raised] == [120.0, 220.0]


# -- agent_conduct ------------------------------------------------------------------------------


def test_agent_conduct_low_sentiment() -> None:
    rule = AgentConductRule(id="ac", below=-0.6, cooldown_seconds=0)
    [t] = says(rule, "I cannot help you with that", role="agent", compound=-0.7)
    assert t.metric == -0.7
    assert t.matched == () and t.signals == {}
    assert t.reason == "agent conduct: sentiment -0.700 below -0.6"
    assert says(rule, "I cannot help you with that", role="agent", compound=-0.6) == []
    no_floor = AgentConductRule(id="ac", below=None, cooldown_seconds=0)
    assert says(no_floor, "I cannot help you with that", role="agent", compound=-1.0) == []


def test_agent_conduct_profanity_and_phrases() -> None:
    rule = AgentConductRule(id="ac", phrases=["not my problem"], cooldown_seconds=0)
    [t] = says(rule, "This damn system is slow again", role="agent")
    assert t.matched == ("damn",)
    assert t.signals == {"profanity": ["damn"]}
    assert t.metric is None
    assert t.reason == "agent conduct: said 'damn'"
    [t] = says(rule, "That is NOT my problem", role="agent")
    assert t.matched == ("not my problem",) and t.signals == {}
    assert t.reason == "agent conduct: said 'not my problem'"
    [t] = says(rule, "damn, not my problem", role="agent", compound=-0.8)
    assert t.matched == ("damn", "not my problem")
    assert t.metric == -0.8
    assert t.reason == "agent conduct: sentiment -0.800 below -0.6; said 'damn', 'not my problem'"
    clean = AgentConductRule(id="ac", profanity=False, cooldown_seconds=0)
    assert says(clean, "This damn system is slow again", role="agent") == []


def test_agent_conduct_ignores_customer_turns() -> None:
    rule = AgentConductRule(id="ac", phrases=["not my problem"], cooldown_seconds=0)
    assert says(rule, "damn, not my problem", compound=-0.9) == []
    assert says(rule, "damn, not my problem", role="bot", compound=-0.9) == []
    bots = AgentConductRule(id="ac", roles=["bot"], cooldown_seconds=0)
    assert [t.matched for t in says(bots, "damn", role="bot")] == [("damn",)]


# -- human_requested ----------------------------------------------------------------------------


def test_human_requested_when_the_customer_asks_for_a_person() -> None:
    rule = HumanRequestedRule(id="hr")
    conv = subject(agent_id=None)
    asked = turn(0, "Can I talk to someone please")
    [t] = feed(rule, conv, asked)
    assert t.turns == (asked,)
    assert t.matched == ("talk to someone",)
    assert t.signals == {"human_request": ["talk to someone"]}
    assert t.reason == "customer asked for a person: 'talk to someone'"
    # At most once per conversation.
    assert feed(rule, conv, turn(1, "I want a real person!", at=1000.0)) == []
    assert feed(rule, conv, turn(2, "Sorry, I didn't understand that.", "bot", at=1001.0),
                turn(3, "Sorry, I didn't understand that.", "bot", at=1002.0)) == []


def test_human_requested_on_bot_failures() -> None:
    rule = HumanRequestedRule(id="hr", bot_failures=2)
    conv = subject(agent_id=None)
    one = turn(1, "Sorry, I didn't understand that.", "bot")
    assert feed(rule, conv, turn(0, "where is my parcel"), one) == []
    assert feed(rule, conv, turn(2, "my PARCEL"), turn(3, "Your parcel is on its way", "bot"),
                turn(4, "when?")) == []
    two = turn(5, "I'm sorry, I didn't catch that. Could you rephrase?", "bot")
    [t] = feed(rule, conv, two)
    assert t.turns == (one, two)
    assert sorted(t.signals["bot_failure"]) == ["could you rephrase", "i didn't catch that"]
    assert list(t.signals) == ["bot_failure"]
    assert t.reason == "the bot failed 2 times; hand over"
    assert feed(rule, conv, turn(6, "Sorry, I didn't understand that.", "bot"),
                turn(7, "talk to a human")) == []


def test_human_requested_one_bot_failure_is_not_enough() -> None:
    rule = HumanRequestedRule(id="hr", bot_failures=2)
    assert feed(rule, subject(agent_id=None),
                turn(0, "Sorry, I didn't understand that.", "bot")) == []
    never = HumanRequestedRule(id="hr", bot_failures=0)
    assert feed(never, subject(agent_id=None),
                *[turn(i, "Please try again.", "bot") for i in range(5)]) == []


def test_human_requested_never_with_an_agent() -> None:
    rule = HumanRequestedRule(id="hr", phrases=["escalate"])
    conv = subject(agent_id="agent-7")
    assert feed(rule, conv, turn(0, "Can I talk to a real person please"),
                turn(1, "Sorry, I didn't understand that.", "bot"),
                turn(2, "Sorry, I didn't understand that.", "bot"),
                turn(3, "please escalate")) == []
    # An agent taking over between two failures stops the count from firing.
    conv = subject(agent_id=None)
    assert feed(rule, conv, turn(0, "Sorry, I didn't understand that.", "bot")) == []
    conv.agent_id = "agent-7"
    assert feed(rule, conv, turn(1, "Sorry, I didn't understand that.", "bot")) == []


def test_human_requested_extra_phrases_negation_aware() -> None:
    rule = HumanRequestedRule(id="hr", phrases=["escalate"])
    assert says(rule, "No need, please don't escalate this", conv=subject(agent_id=None)) == []
    [t] = says(rule, "Please ESCALATE this", conv=subject(agent_id=None))
    assert t.matched == ("escalate",)
    assert t.signals == {"human_request": ["escalate"]}
    # A bot offering a person is not the customer asking for one.
    assert says(rule, "Would you like to talk to an agent?", role="bot",
                conv=subject(agent_id=None)) == []


def test_human_requested_not_on_a_negated_request() -> None:
    rule = HumanRequestedRule(id="hr")
    assert says(rule, "I don't need to talk to a person, just tell me the opening hours",
                conv=subject(agent_id=None)) == []


# -- scope and enabled --------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "queue", "channel", "fires"), [
    (Scope(), "billing", "voice", True),
    (Scope(queues=["vip", "billing"]), "billing", "chat", True),
    (Scope(queues=["vip"]), "billing", "chat", False),
    (Scope(channels=["voice"]), "billing", "voice", True),
    (Scope(channels=["voice"]), "billing", "chat", False),
    (Scope(queues=["billing"], channels=["voice"]), "billing", "chat", False),
])
def test_scope_queues_and_channels(scope: Scope, queue: str, channel: str,
                                   fires: bool) -> None:
    rule = KeywordRule(id="kw", phrases=["cancel"], scope=scope)
    conv = subject(queue=queue, channel=channel)
    assert len(feed(rule, conv, turn(0, "cancel"))) == int(fires)
    assert ("kw" in conv.states) is fires  # out of scope: no state either


@pytest.mark.parametrize("rule", [
    SentimentRule(id="r", metric="turn", consecutive=1, enabled=False),
    SentimentDropRule(id="r", metric="turn", drop=0.1, min_turns=1, enabled=False),
    KeywordRule(id="r", phrases=["cancel"], enabled=False),
    SignalRule(id="r", any_of=["churn"], enabled=False),
    AgentConductRule(id="r", roles=["customer"], enabled=False),
    HumanRequestedRule(id="r", phrases=["cancel"], enabled=False),
])
def test_disabled_rules_never_fire(rule: AnyRule) -> None:
    conv = subject(agent_id=None)
    assert feed(rule, conv, turn(0, "great", compound=0.9),
                turn(1, "damn, I want to cancel my account", compound=-0.9)) == []
    assert conv.states == {}


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phrase", ["   ", "\t\n", "", "!!!"])
def test_phrases_need_a_word(phrase: str) -> None:
    with pytest.raises(ValidationError):
        KeywordRule(id="k", phrases=["cancel", phrase])
    with pytest.raises(ValidationError):
        AgentConductRule(id="a", phrases=[phrase])
    with pytest.raises(ValidationError):
        HumanRequestedRule(id="h", phrases=[phrase])


@pytest.mark.parametrize("cooldown", [float("inf"), float("-inf"), float("nan"), "Infinity",
                                      "NaN", -1.0, 7 * 24 * 3600.0 + 1])
def test_cooldown_must_be_finite_and_bounded(cooldown: Any) -> None:
    with pytest.raises(ValidationError):
        KeywordRule.model_validate({"id": "k", "phrases": ["x"], "cooldown_seconds": cooldown})
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"rules": [{"id": "r", "kind": "response_time",
                                           "cooldown_seconds": cooldown}]})


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0.0, -5.0])
def test_response_time_seconds_must_be_finite_and_positive(seconds: float) -> None:
    with pytest.raises(ValidationError):
        ResponseTimeRule(id="rt", seconds=seconds)


def test_signal_rule_needs_a_signal() -> None:
    with pytest.raises(ValidationError, match="name at least one signal"):
        SignalRule(id="s")
    with pytest.raises(ValidationError):
        SignalRule(id="s", any_of=[], all_of=[])
    with pytest.raises(ValidationError):
        SignalRule.model_validate({"id": "s", "any_of": ["anger"]})
    assert SignalRule(id="s", all_of=["intensity"]).any_of == []


def test_sentiment_drop_clear_within_at_most_drop() -> None:
    with pytest.raises(ValidationError, match="clear_within must be <= drop"):
        SentimentDropRule(id="d", drop=0.8, clear_within=0.9)
    assert SentimentDropRule(id="d", drop=0.8, clear_within=0.8).rearm_at == 0.8
    assert SentimentDropRule(id="d", drop=0.8, clear_within=0.0).rearm_at == 0.0


EVERY_KIND: list[AnyRule] = [
    SentimentRule(id="sentiment", metric="ewma", below=-0.4, consecutive=3, clear_above=0.0,
                  severity="medium", name="Sour", cooldown_seconds=60),
    SentimentDropRule(id="drop", metric="turn", drop=1.2, reference="start",
                      clear_within=0.3, min_turns=4, scope=Scope(queues=["vip"])),
    KeywordRule(id="keyword", phrases=["cancel my account", "supervisor"],
                roles=["customer", "bot"], negation_aware=True, severity="low"),
    SignalRule(id="signal", any_of=["churn", "threat"], all_of=["intensity"],
               sentiment_below=0.25, roles=["customer", "agent"], negation_aware=False),
    ResponseTimeRule(id="response", seconds=45.5, scope=Scope(channels=["chat"]),
                     enabled=False),
    AgentConductRule(id="conduct", below=None, profanity=False, phrases=["calm down"]),
    HumanRequestedRule(id="human", bot_failures=3, phrases=["escalate"], version=4),
]


def test_every_kind_round_trips_through_model_dump() -> None:
    assert {r.kind for r in EVERY_KIND} == {
        get_args(t.model_fields["kind"].annotation)[0] for t in get_args(AnyRule)}
    rules = RuleSet(rules=EVERY_KIND)
    assert rules.phrase_index.phrases  # what is cached on a set or rule does not change it
    for rule in EVERY_KIND:
        if isinstance(rule, KeywordRule | AgentConductRule | HumanRequestedRule):
            assert rule.keys
    for mode in ("python", "json"):
        dumped = rules.model_dump(mode=mode)
        again = RuleSet.model_validate(dumped)
        assert again == rules
        assert again.model_dump(mode=mode) == dumped
        assert [type(r) for r in again.rules] == [type(r) for r in EVERY_KIND]
    assert RuleSet.model_validate_json(rules.model_dump_json()) == rules
    assert RuleSet.model_validate(json.loads(json.dumps(rules.model_dump(mode="json")))) == rules


# -- versions -----------------------------------------------------------------------------------


def test_with_rule_versions() -> None:
    rules = RuleSet().with_rule(KeywordRule(id="k", phrases=["x"], version=7))
    assert [(r.id, r.version) for r in rules.rules] == [("k", 1)]
    same = rules.with_rule(KeywordRule(id="k", phrases=["x"]))
    assert same == rules and same.rules[0].version == 1
    changed = same.with_rule(KeywordRule(id="k", phrases=["y"], version=1))
    assert [(r.id, r.version, r.phrases) for r in changed.rules] == [("k", 2, ["y"])]
    two = changed.with_rule(SentimentRule(id="s"))
    assert [(r.id, r.version) for r in two.rules] == [("k", 2), ("s", 1)]
    toggled = two.with_rule(KeywordRule(id="k", phrases=["y"], enabled=False))
    assert [(r.id, r.version) for r in toggled.rules] == [("k", 3), ("s", 1)]  # kept in place
    other_kind = toggled.with_rule(SignalRule(id="k", any_of=["churn"]))
    assert [(r.id, r.kind, r.version) for r in other_kind.rules] == [
        ("k", "signal", 4), ("s", "sentiment", 1)]
    assert two.rules[0].version == 2  # the sets are new; the old one is unchanged


def test_without() -> None:
    rules = RuleSet().with_rule(KeywordRule(id="k", phrases=["x"])).with_rule(
        SentimentRule(id="s"))
    assert [r.id for r in rules.without("k").rules] == ["s"]
    assert rules.without("missing") == rules
    assert [r.id for r in rules.rules] == ["k", "s"]


def test_replacing_versions_against_the_current_set() -> None:
    current = (RuleSet().with_rule(KeywordRule(id="k", phrases=["x"]))
               .with_rule(KeywordRule(id="k", phrases=["y"]))
               .with_rule(SentimentRule(id="s")))
    assert [(r.id, r.version) for r in current.rules] == [("k", 2), ("s", 1)]
    # The unchanged document (as GET returns it) keeps its versions.
    unchanged = current.replacing(RuleSet.model_validate(current.model_dump(mode="json")))
    assert unchanged == current
    # Versions sent by a client are ignored: the server owns them.
    incoming = RuleSet(rules=[SentimentRule(id="s", below=-0.6, version=99),
                              KeywordRule(id="k", phrases=["y"], version=50),
                              ResponseTimeRule(id="rt", version=9)])
    replaced = current.replacing(incoming)
    assert [(r.id, r.version) for r in replaced.rules] == [("s", 2), ("k", 2), ("rt", 1)]
    # A rule left out is dropped; brought back later, it starts again at 1.
    dropped = replaced.replacing(RuleSet(rules=[ResponseTimeRule(id="rt")]))
    assert [(r.id, r.version) for r in dropped.rules] == [("rt", 1)]
    assert [(r.id, r.version) for r in dropped.replacing(current).rules] == [
        ("k", 1), ("s", 1)]


# -- rule state across restarts ---------------------------------------------------------------


def test_snapshot_keeps_the_streak_as_references_without_text() -> None:
    rule = SentimentRule(id="neg", metric="turn", below=-0.5, consecutive=2,
                         cooldown_seconds=0)
    conv = subject()
    first = turn(0, "this is terrible", compound=-0.9, at=10.0)
    assert feed(rule, conv, first) == []
    snap = conv.states["neg"].snapshot()
    assert "terrible" not in json.dumps(snap)
    assert snap["breaches"] == [{"segment_id": "s0", "role": "customer",
                                 "participant_id": "customer-1",
                                 "scores": {"neg": 0.0, "neu": 1.0, "pos": 0.0,
                                            "compound": -0.9},
                                 "at": 10.0}]
    # Only what differs from a fresh state is saved; restoring reads the rest as defaults.
    assert "armed" not in snap and "last_fired_at" not in snap
    assert RuleState.restore(snap, {"s0": "this is terrible"}.get) == conv.states["neg"]

    def resume(text_of: Any) -> Trigger:
        restored = RuleState.restore(json.loads(json.dumps(snap)), text_of)
        later = subject()
        later.rolling.add(-0.9)
        later.states["neg"] = restored
        [t] = feed(rule, later, turn(1, "still terrible", compound=-0.8, at=20.0))
        return t

    t = resume({"s0": "this is terrible"}.get)
    assert ids(t) == ("s0", "s1")
    assert [x.text for x in t.turns] == ["this is terrible", "still terrible"]
    assert t.turns[0] == first
    t = resume(lambda _: None)
    assert [x.text for x in t.turns] == [None, "still terrible"]
    assert RuleState.restore(snap).breaches[0].text is None  # the default text_of


def test_snapshot_keeps_bot_failures_and_the_wait_fired_for() -> None:
    hr = HumanRequestedRule(id="hr")
    conv = subject(agent_id=None)
    failed = turn(0, "Sorry, I didn't understand that.", "bot")
    assert feed(hr, conv, failed) == []
    snap = conv.states["hr"].snapshot()
    assert "understand" not in json.dumps(snap)
    later = subject(agent_id=None)
    later.states["hr"] = RuleState.restore(snap, {"s0": failed.text}.get)
    [t] = feed(hr, later, turn(1, "Please try again.", "bot"))
    assert ids(t) == ("s0", "s1") and t.turns[0] == failed

    rt = RuleSet(rules=[ResponseTimeRule(id="rt", seconds=60, cooldown_seconds=0)])
    conv = subject()
    arrive(conv, turn(0, "hi", at=0.0))
    assert len(due(rt, conv.states, conv, 60.0)) == 1
    conv.states = {"rt": RuleState.restore(conv.states["rt"].snapshot())}
    assert deadlines(rt, conv.states, conv) == []
    assert due(rt, conv.states, conv, 500.0) == []


# -- scorer and lexicon overlay -----------------------------------------------------------------

TEXTS = ["I love it!", "This is awful :(", "my account is blocked",
         "The agent was NOT helpful at all!!", "The refund arrived, thanks", ""]


def test_scorer_without_overlay_is_vader() -> None:
    reference = SentimentIntensityAnalyzer()
    plain = Scorer()
    for text in TEXTS:
        assert plain.score(text).as_dict() == reference.polarity_scores(text)
        assert scoring.score(text).as_dict() == reference.polarity_scores(text)
    assert plain.score_many(TEXTS) == [plain.score(t) for t in TEXTS]


def test_scorer_overlay_changes_only_its_words() -> None:
    reference = SentimentIntensityAnalyzer()
    overlaid = Scorer({"blocked": 0.0})
    assert reference.polarity_scores("my account is blocked")["compound"] == -0.2732
    assert overlaid.score("my account is blocked") == Scores(0.0, 1.0, 0.0, 0.0)
    for text in TEXTS:
        if "blocked" not in text:
            assert overlaid.score(text).as_dict() == reference.polarity_scores(text)
    # The overlay is the scorer's own: the default scorer still reads plain VADER.
    assert scoring.score("my account is blocked").compound == -0.2732


def test_load_overlay(tmp_path: Path) -> None:
    path = tmp_path / "overlay.txt"
    path.write_text("# support vocabulary\n"
                    "blocked\t0.0\n"
                    "\n"
                    "   \n"
                    "error -0.5\n"
                    "Problem   -0.3\n"
                    "  refund 1.5  \n"
                    "#disabled 3\n"
                    "awesome\t4\n"
                    "dreadful -4.0\n", encoding="utf-8")
    assert load_overlay(path) == {"blocked": 0.0, "error": -0.5, "problem": -0.3,
                                  "refund": 1.5, "awesome": 4.0, "dreadful": -4.0}
    assert Scorer(load_overlay(path)).score("my account is blocked").compound == 0.0


@pytest.mark.parametrize("bad", ["blocked 5.0", "blocked abc", "blocked\t-4.5",
                                 "blocked nan", "blocked inf", "blocked", "\t0.5"])
def test_load_overlay_names_the_bad_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "overlay.txt"
    path.write_text(f"# comment\nerror -0.5\n{bad}\nproblem -0.3\n", encoding="utf-8")
    with pytest.raises(OverlayError, match=re.escape(f"{path}:3:")) as caught:
        load_overlay(path)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("text", "signal", "found"), [
    ("I'm not happy, cancel my account", "cancellation", ["cancel my account"]),
    ("No. I am cancelling my subscription", "churn", ["i am cancelling my subscription"]),
    ("I can't believe how useless this is", "contempt", ["useless"]),
    ("not only useless but rude", "contempt", ["useless"]),
    ("I do not want to cancel my account", "cancellation", []),
    ("I won't be going elsewhere", "churn", []),
])
def test_negation_stays_in_its_clause(text: str, signal: str, found: list[str]) -> None:
    assert signals.detect(text).get(signal, []) == found


def test_negation_looks_back_a_bounded_distance() -> None:
    text = "sue " * 5000
    assert signals.detect(text)["threat"] == ["sue"]
    assert signals.negated("not " + "x " * 100 + "cancel", 205) is False


def test_curly_apostrophes_in_phrases_match_either_kind() -> None:
    rule = KeywordRule(id="k", phrases=["can\u2019t log in"], cooldown_seconds=0)
    for text in ("I can't log in", "I can\u2019t log in"):
        conv = fresh("c", "q", "chat", "a", RollingConfig())
        assert evaluate(RuleSet(rules=[rule]), conv.states,
                        Turn("s", "customer", "c", text, Scores(0, 1, 0, 0), 1.0), conv)


def test_response_time_fires_at_its_deadline_whatever_the_float() -> None:
    """At exactly waiting + seconds, rounding must not hold the alert back."""
    for seconds in (90.3, 0.1, 45.7, 120.0):
        rule = ResponseTimeRule(id="slow", seconds=seconds, cooldown_seconds=seconds)
        conv = fresh("c", "q", "chat", "a", RollingConfig())
        waited = 1_764_064_843.123456
        conv.customer_waiting_since = waited
        (when,) = deadlines(RuleSet(rules=[rule]), conv.states, conv)
        assert len(due(RuleSet(rules=[rule]), conv.states, conv, when)) == 1, seconds
        conv.customer_waiting_since = when + 1.0  # a new wait, while cooling down
        (again,) = deadlines(RuleSet(rules=[rule]), conv.states, conv)
        assert len(due(RuleSet(rules=[rule]), conv.states, conv, again)) == 1, seconds


def test_drop_from_start_reads_the_conversations_first_turn() -> None:
    """A rule that starts watching mid-conversation still measures from the start."""
    rule = SentimentDropRule(id="d", metric="turn", drop=1.0, reference="start",
                             min_turns=1, cooldown_seconds=0)
    conv = fresh("c", "q", "chat", "a", RollingConfig())
    conv.start_sentiment = 0.8  # the first customer turn, before the rule existed
    conv.rolling.add(-0.5)
    (fired,) = evaluate(RuleSet(rules=[rule]), conv.states,
                        Turn("s2", "customer", "c", "", Scores(0, 0, 0, -0.5), 2.0), conv)
    assert "from its start 0.800" in fired.reason and fired.at == 2.0


def test_a_state_that_remembers_nothing_is_neither_kept_nor_saved() -> None:
    """Memory and saved state per live conversation: a rule that has nothing to remember
    of it (most rules, most turns) holds no state; one that has, keeps exactly that."""
    rule = SentimentRule(id="neg", metric="turn", below=-0.5, consecutive=2,
                         cooldown_seconds=0)
    conv = subject()
    assert feed(rule, conv, turn(0, "fine thanks", compound=0.4, at=10.0)) == []
    assert "neg" not in conv.states
    assert feed(rule, conv, turn(1, "terrible", compound=-0.9, at=11.0)) == []
    assert conv.states["neg"].breaches and not conv.states["neg"].fresh
    full = RuleState(kind="sentiment", armed=False, last_fired_at=1.0, start=0.5,
                     peak=0.7, turns=3, fired_for=2.0)
    assert RuleState.restore(json.loads(json.dumps(full.snapshot()))) == full
    assert RuleState("signal").snapshot() == {"kind": "signal"}
