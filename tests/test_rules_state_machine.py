"""The live pipeline's rules under random interleavings (a hypothesis state machine).

Drives the real `EmbeddedPipeline` (real SQLite store, real hub) through customer and agent
turns on up to three live conversations, duplicate deliveries (as sent, or retried with
other words), rule edits while the conversations are live (create, update, disable,
enable, delete, delete and create again), restarts on the same store and clock ticks, on
a clock the test controls.
A small reference model, written here independently of the rule evaluators, predicts
every hit (a rule firing) and what it does to its conversation's one alert (raised, or
joined: docs/alerts.md), and the alert's own life: resolved when the conversation ends or
the customer recovered, notified again when nobody acknowledged it; after each step the
alert events the pipeline pushed and the alerts the store holds must be exactly the
predicted ones.

The rules are restricted so that the model stays simple: sentiment on the latest turn
(one turn), keywords (customer turns), and response time.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from analytics.rolling import RollingConfig
from analytics.rules import KeywordRule, ResponseTimeRule, RuleSet, SentimentRule
from analytics.scoring import score
from contact_center import protocol as p
from contact_center.buses import Delivery, Source
from contact_center.embedded_pipeline import EmbeddedPipeline
from contact_center.stores import AlertQuery
from contact_center.stores.sqlite import SQLiteStore
from monitoring.alerts import MAX_HITS, AlertPolicy
from monitoring.feeds.memory import HubOutlet
from monitoring.hub import Hub
from monitoring.messages import ALERT_EVENTS_TOPIC

T = TypeVar("T")

# Customer texts, from very negative to positive; some carry a keyword.
TEXTS = [
    "This is terrible, I am furious and upset, everything went badly wrong!",
    "I hate this, it is sad and painful and so wrong!",
    "Hmm, this is a bit disappointing.",
    "I have a question about my bill.",
    "The order number is 12345.",
    "That is fine, thanks.",
    "Thank you so much, that is wonderful, great help, I really love it!",
    "I want a refund.",
    "I want a refund, this is terrible and I am furious!",
    "Great, the refund came through, thank you!",
    "Let me speak to your manager.",
    "Your manager was awful and I am upset.",
]
COMPOUND = {text: score(text).compound for text in TEXTS}
WORDS = {text: re.findall(r"[a-z0-9]+", text.lower()) for text in TEXTS}
AGENT_TEXT = "Let me look into that for you."
PHRASES = ["refund", "manager", "cancel", "your manager"]

RULE_KINDS = {"neg-a": "sentiment", "neg-b": "sentiment", "kw": "keyword",
              "wait-a": "response_time", "wait-b": "response_time"}
CONVERSATIONS = ["c1", "c2", "c3", "c4", "c5"]
MAX_LIVE = 3

# Seconds between events: half of them short, so cooldowns and waits overlap often.
gaps = st.sampled_from([0.0, 0.1, 1.0, 2.0]) | st.sampled_from([4.5, 5.0, 10.0, 30.0, 90.0])
cooldowns = st.sampled_from([0.0, 5.0, 30.0, 120.0, 600.0])

# The alert policy (the defaults): every rule here is "high", re-notified after 300 s.
POLICY = AlertPolicy()
RENOTIFY = POLICY.renotify_seconds["high"]
WINDOW = RollingConfig().window  # customer turns in the rolling mean


def says(text: str, phrase: str) -> bool:
    """The phrase's words appear together in the text, as whole words."""
    words, wanted = WORDS[text], phrase.lower().split()
    return any(words[i:i + len(wanted)] == wanted for i in range(len(words)))


# -- the reference model --------------------------------------------------------------------


@dataclass
class ModelRule:
    kind: str
    params: dict[str, Any]
    cooldown: float
    enabled: bool = True
    version: int = 1

    def definition(self) -> tuple[Any, ...]:
        return (self.kind, sorted(self.params.items()), self.cooldown, self.enabled)

    def build(self, rule_id: str) -> SentimentRule | KeywordRule | ResponseTimeRule:
        """The product's rule for this definition (its version is the rule set's job)."""
        common = {"id": rule_id, "cooldown_seconds": self.cooldown, "enabled": self.enabled}
        if self.kind == "sentiment":
            return SentimentRule(metric="turn", consecutive=1, below=self.params["below"],
                                 clear_above=self.params["clear_above"], **common)
        if self.kind == "keyword":
            return KeywordRule(phrases=list(self.params["phrases"]), **common)
        return ResponseTimeRule(seconds=self.params["seconds"], **common)


@dataclass
class ModelState:
    armed: bool = True
    last_fired: float | None = None
    fired_for: float | None = None  # the wait a response-time alert was raised for

    def cooling(self, rule: ModelRule, now: float) -> bool:
        return self.last_fired is not None and now - self.last_fired < rule.cooldown


@dataclass
class ModelConversation:
    id: str
    live: bool = True
    waiting_since: float | None = None
    states: dict[str, ModelState] = field(default_factory=dict)
    sent: list[p.Segment] = field(default_factory=list)
    compounds: list[float] = field(default_factory=list)  # the customer's, last WINDOW
    # Its alert: whether one is unresolved, its hits so far, when last notified.
    alert_open: bool = False
    hit_count: int = 0
    notified_at: float = 0.0
    recovering: int = 0  # customer turns in a row recovered, while the alert is open
    alert_id: str | None = None  # (learnt from the pushes: ids are random)

    def hit(self, rule_id: str, version: int, now: float) -> Event:
        """A hit: it joins the unresolved alert (all rules here are of one severity:
        quietly), or raises a new one."""
        self.recovering = 0
        if self.alert_open:
            self.hit_count += 1
            return (self.id, "alert.updated", rule_id, version, now, self.hit_count, None)
        self.alert_open, self.hit_count, self.notified_at = True, 1, now
        return (self.id, "alert.raised", rule_id, version, now, 1, None)

    def resolve(self, resolution: str) -> Event:
        self.alert_open = False
        return (self.id, "alert.resolved", None, None, None, self.hit_count, resolution)


# An alert event: conversation id, type, then for a hit its rule id, rule version and
# raised at; the alert's hit count; a resolution's reason.
Event = tuple[str, str, str | None, int | None, float | None, int, str | None]
HIT_EVENTS = ("alert.raised", "alert.updated", "alert.escalated")


def params_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    if kind == "sentiment":
        return st.builds(
            lambda below, lift: {"below": below, "clear_above": min(1.0, below + lift)},
            st.sampled_from([-0.8, -0.5, -0.2, 0.0, 0.3]),
            st.sampled_from([0.0, 0.3, 0.6, 1.2]))
    if kind == "keyword":
        return st.builds(lambda phrases: {"phrases": tuple(phrases)},
                         st.lists(st.sampled_from(PHRASES), min_size=1, max_size=2, unique=True))
    return st.builds(lambda seconds: {"seconds": seconds}, st.sampled_from([5.0, 15.0, 60.0]))


conversation_indexes = st.integers(0, len(CONVERSATIONS) - 1)
turn_ops = st.tuples(st.sampled_from(["customer", "customer", "agent", "duplicate",
                                      "altered duplicate"]),
                     conversation_indexes, st.integers(0, len(TEXTS) - 1), gaps)


class RulesOnTheLivePipeline(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="cc-rules-sm-"))
        self.store = SQLiteStore(self.dir / "cc.db", synchronous="OFF")
        self.hub = Hub(queue_size=100_000)
        # The pipeline's alert events as committed (in commit order: one pipeline).
        self.subscription = self.hub.subscribe(ALERT_EVENTS_TOPIC)
        self.rule_set = RuleSet()
        self.pipeline = EmbeddedPipeline(self.store, HubOutlet(self.hub), self.rule_set,
                                         RollingConfig(), policy=POLICY)
        self.source = Source()
        self.now = 1_000_000.0
        self.rules: dict[str, ModelRule] = {}  # in rule-set order
        self.conversations: list[ModelConversation] = []
        self.next_segment = 0
        self.latest: dict[str, dict[str, Any]] = {}  # each alert as last pushed
        self.last_event_id = 0
        self.total_hits = 0
        self.run(self.store.open())
        self.run(self.pipeline.restore())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- talking to the pipeline ----------------------------------------------------------

    def deliver(self, timed: list[tuple[p.Event, float]]) -> list[p.Reply]:
        async def go() -> list[p.Reply]:
            loop = asyncio.get_running_loop()
            deliveries = [Delivery(event, self.source, at, loop.create_future())
                          for event, at in timed]
            await self.pipeline.process(deliveries)
            assert all(d.reply.done() for d in deliveries), "every event is answered"
            return [d.reply.result() for d in deliveries]

        return self.run(go())

    def check_alerts(self, expected: list[Event]) -> None:
        """The alert events of this step, as pushed live, are ``expected`` (in order for
        each conversation), and the store holds every alert as last pushed."""
        pushed = []
        while not self.subscription.queue.empty():
            message = self.subscription.queue.get_nowait()
            assert message is not None, "the alert subscriber overflowed"
            pushed.append(json.loads(message.text))
        got: list[Event] = []
        for event_ in pushed:
            kind, alert = event_["type"], event_["alert"]
            assert event_["event_id"] > self.last_event_id, "events in commit order"
            self.last_event_id = event_["event_id"]
            conv = next(c for c in self.conversations if c.id == alert["conversation_id"])
            # Invariants: one alert per conversation at a time; each change one version.
            if kind == "alert.raised":
                assert alert["id"] not in self.latest and alert["version"] == 1, alert
                assert conv.alert_id is None or \
                    self.latest[conv.alert_id]["status"] == "resolved"
                conv.alert_id = alert["id"]
            else:
                assert alert["id"] == conv.alert_id, (kind, alert)
                assert alert["version"] == self.latest[alert["id"]]["version"] + 1, alert
            assert alert["status"] == ("resolved" if kind == "alert.resolved" else "open")
            assert alert["hit_count"] == len(alert["hits"]) or len(alert["hits"]) == MAX_HITS
            self.latest[alert["id"]] = alert
            if kind in HIT_EVENTS:
                hit = alert["hits"][-1]
                # Invariants: a hit is for a rule in force and enabled, at its version.
                model = self.rules.get(hit["rule_id"])
                assert model is not None, f"a hit of a deleted rule: {alert}"
                assert model.enabled, f"a hit of a disabled rule: {alert}"
                assert hit["rule_version"] == model.version, alert
                assert hit["kind"] == model.kind
                got.append((conv.id, kind, hit["rule_id"], hit["rule_version"],
                            hit["raised_at"], alert["hit_count"], None))
            else:
                got.append((conv.id, kind, None, None, None, alert["hit_count"],
                            alert["resolution"]))

        def per_conversation(events: list[Event]) -> dict[str, list[Event]]:
            grouped: dict[str, list[Event]] = {}
            for e in events:
                grouped.setdefault(e[0], []).append(e)
            return grouped

        assert per_conversation(got) == per_conversation(expected), \
            f"pushed {got}, model expected {expected}"

        stored = self.run(self.store.list_alerts(AlertQuery(limit=10_000)))
        assert {a["id"]: a for a in stored} == self.latest
        self.total_hits += sum(e[1] in HIT_EVENTS for e in expected)
        assert sum(a["hit_count"] for a in stored) == self.total_hits
        assert sum(a["status"] != "resolved" for a in stored) == sum(
            c.alert_open for c in self.conversations)

    # -- the model ----------------------------------------------------------------------

    def model_turn(self, conv: ModelConversation, role: str, text: str,
                   now: float) -> list[Event]:
        if role != "customer":
            conv.waiting_since = None  # an answer ends the wait
            return []
        if conv.waiting_since is None:
            conv.waiting_since = now
        conv.compounds = [*conv.compounds, COMPOUND[text]][-WINDOW:]
        fired: list[Event] = []
        for rule_id, model in self.rules.items():
            if not model.enabled or model.kind == "response_time":
                continue
            state = conv.states.setdefault(rule_id, ModelState())
            if model.kind == "sentiment":
                compound = COMPOUND[text]
                if not state.armed:
                    if compound >= model.params["clear_above"]:
                        event("sentiment: re-armed")
                        state.armed = True
                    else:
                        event("sentiment: disarmed, no alert")
                    continue
                if compound >= model.params["below"]:
                    continue
                if state.cooling(model, now):
                    event("sentiment: breach in cooldown, no alert")
                    continue
                state.armed = False
            else:
                if not any(says(text, ph) for ph in model.params["phrases"]):
                    continue
                if state.cooling(model, now):
                    event("keyword: match in cooldown, no alert")
                    continue
            state.last_fired = now
            event(f"{model.kind}: alert")
            if conv.alert_open:
                event("a hit joins the open alert")
            fired.append(conv.hit(rule_id, model.version, now))
        if not fired and conv.alert_open:
            # The customer recovers: a turn without a hit, the rolling mean high enough.
            mean = sum(conv.compounds) / len(conv.compounds)
            conv.recovering = conv.recovering + 1 if mean >= POLICY.recovered_above else 0
            if conv.recovering >= POLICY.recovered_turns:
                event("alert: resolved, the customer recovered")
                fired.append(conv.resolve("recovered"))
        return fired

    def model_tick(self, now: float) -> list[Event]:
        fired: list[Event] = []
        for conv in self.conversations:
            waiting = conv.waiting_since
            if not conv.live or waiting is None:
                continue
            for rule_id, model in self.rules.items():
                if not model.enabled or model.kind != "response_time":
                    continue
                state = conv.states.setdefault(rule_id, ModelState())
                if state.fired_for == waiting or now - waiting < model.params["seconds"]:
                    continue
                if state.cooling(model, now):
                    event("response_time: due in cooldown, no alert")
                    continue
                state.fired_for, state.last_fired = waiting, now
                event("response_time: alert" + (" after an edit" if model.version > 1 else ""))
                fired.append(conv.hit(rule_id, model.version, now))
        for conv in self.conversations:
            # An open alert nobody acknowledged is notified again.
            if conv.live and conv.alert_open and conv.notified_at + RENOTIFY <= now:
                event("alert: renotified")
                conv.notified_at = now
                fired.append((conv.id, "alert.renotified", None, None, None, conv.hit_count,
                              None))
        return fired

    # -- conversations --------------------------------------------------------------------

    def live(self) -> list[ModelConversation]:
        return [c for c in self.conversations if c.live]

    @initialize()
    def first_conversation(self) -> None:
        self.start_conversation(0.0)

    @initialize(data=st.data(), rule_ids=st.lists(st.sampled_from(sorted(RULE_KINDS)),
                                                  min_size=1, unique=True))
    def first_rules(self, data: st.DataObject, rule_ids: list[str]) -> None:
        for rule_id in rule_ids:
            self.create_rule(data, rule_id, data.draw(cooldowns))

    @precondition(lambda self: len(self.live()) < MAX_LIVE
                  and len(self.conversations) < len(CONVERSATIONS))
    @rule(gap=gaps)
    def start_conversation(self, gap: float) -> None:
        self.now += gap
        cid = CONVERSATIONS[len(self.conversations)]
        started = p.ConversationStarted(conversation=p.ConversationInfo(
            id=cid, queue="billing", agent_id="agent-1", customer=p.Customer(id=f"cust-{cid}")))
        [reply] = self.deliver([(started, self.now)])
        assert isinstance(reply, p.Ack) and reply.status == "accepted", reply
        self.conversations.append(ModelConversation(cid))
        self.check_alerts([])

    @precondition(lambda self: len(self.live()) > 1)
    @rule(which=st.integers(0, MAX_LIVE - 1), gap=gaps)
    def end_conversation(self, which: int, gap: float) -> None:
        self.now += gap
        conv = self.live()[which % len(self.live())]
        [reply] = self.deliver([(p.ConversationEnded(conversation_id=conv.id), self.now)])
        assert isinstance(reply, p.Ack) and reply.status == "accepted", reply
        conv.live, conv.waiting_since = False, None
        # Its end resolves its alert.
        if conv.alert_open:
            event("alert: resolved, the conversation ended")
        self.check_alerts([conv.resolve("conversation_ended")] if conv.alert_open else [])

    # -- segments -------------------------------------------------------------------------

    @rule(which=conversation_indexes, text=st.integers(0, len(TEXTS) - 1), gap=gaps)
    def customer_turn(self, which: int, text: int, gap: float) -> None:
        self.send([("customer", which, text, gap)])

    @rule(which=conversation_indexes, gap=gaps)
    def agent_turn(self, which: int, gap: float) -> None:
        self.send([("agent", which, 0, gap)])

    @rule(which=conversation_indexes, segment=st.integers(0, 50), gap=gaps,
          altered=st.booleans())
    def duplicate(self, which: int, segment: int, gap: float, altered: bool) -> None:
        self.send([("altered duplicate" if altered else "duplicate", which, segment, gap)])

    @rule(ops=st.lists(turn_ops, min_size=2, max_size=5))
    def a_batch_of_segments(self, ops: list[tuple[str, int, int, float]]) -> None:
        self.send(ops)

    def send(self, ops: list[tuple[str, int, int, float]]) -> None:
        timed: list[tuple[p.Event, float]] = []
        expected_replies: list[tuple[str, str]] = []  # (reply type, status or error code)
        expected: list[Event] = []
        for kind, which, text_index, gap in ops:
            conv = self.conversations[which % len(self.conversations)]
            if kind in ("duplicate", "altered duplicate"):
                if not conv.sent:
                    continue
                event = conv.sent[text_index % len(conv.sent)]
                if kind == "altered duplicate":  # a retry's words do not count either
                    event = event.model_copy(update={
                        "role": "customer", "text": TEXTS[text_index % len(TEXTS)]})
                expected_replies.append(("ack", "duplicate"))  # changes nothing
            else:
                self.next_segment += 1
                text = TEXTS[text_index] if kind == "customer" else AGENT_TEXT
                event = p.Segment(conversation_id=conv.id, segment_id=f"s{self.next_segment}",
                                  role=kind, text=text)
                if conv.live:
                    conv.sent.append(event)
                    expected_replies.append(("ack", "accepted"))
                    expected += self.model_turn(conv, kind, text, self.now + gap)
                else:
                    expected_replies.append(("error", p.ErrorCode.CONVERSATION_ENDED))
            self.now += gap
            timed.append((event, self.now))
        if not timed:
            return
        replies = self.deliver(timed)
        got = [("ack", r.status) if isinstance(r, p.Ack) else ("error", r.code) for r in replies]
        assert got == expected_replies, replies
        self.check_alerts(expected)

    # -- rule edits -----------------------------------------------------------------------

    def apply_rules(self, rule_set: RuleSet) -> None:
        self.rule_set = rule_set
        self.run(self.pipeline.change_rules(rule_set))
        assert [r.id for r in rule_set.rules] == list(self.rules)
        for r in rule_set.rules:
            model = self.rules[r.id]
            assert (r.kind, r.version, r.enabled) == (model.kind, model.version, model.enabled)
        self.check_alerts([])

    def edit(self, rule_id: str, changed: ModelRule) -> None:
        previous = self.rules.get(rule_id)
        if previous is None:
            changed.version = 1
        elif previous.definition() != changed.definition():
            changed.version = previous.version + 1
        else:
            changed.version = previous.version
        self.rules[rule_id] = changed
        self.apply_rules(self.rule_set.with_rule(changed.build(rule_id)))

    @rule(data=st.data(), rule_id=st.sampled_from(sorted(RULE_KINDS)), cooldown=cooldowns)
    def create_rule(self, data: st.DataObject, rule_id: str, cooldown: float) -> None:
        if rule_id in self.rules:
            return
        kind = RULE_KINDS[rule_id]
        self.edit(rule_id, ModelRule(kind, data.draw(params_for(kind)), cooldown))

    @precondition(lambda self: bool(self.rules))
    @rule(data=st.data(), which=st.integers(0, len(RULE_KINDS) - 1), cooldown=cooldowns)
    def update_rule(self, data: st.DataObject, which: int, cooldown: float) -> None:
        rule_id = list(self.rules)[which % len(self.rules)]
        current = self.rules[rule_id]
        params = data.draw(params_for(current.kind))
        self.edit(rule_id, ModelRule(current.kind, params, cooldown, current.enabled))

    @precondition(lambda self: bool(self.rules))
    @rule(which=st.integers(0, len(RULE_KINDS) - 1))
    def toggle_rule(self, which: int) -> None:
        rule_id = list(self.rules)[which % len(self.rules)]
        current = self.rules[rule_id]
        self.edit(rule_id, ModelRule(current.kind, current.params, current.cooldown,
                                     not current.enabled))

    @precondition(lambda self: bool(self.rules))
    @rule(which=st.integers(0, len(RULE_KINDS) - 1))
    def delete_rule(self, which: int) -> None:
        rule_id = list(self.rules)[which % len(self.rules)]
        del self.rules[rule_id]
        for conv in self.conversations:
            conv.states.pop(rule_id, None)  # re-creating the id starts afresh
        self.apply_rules(self.rule_set.without(rule_id))

    @precondition(lambda self: bool(self.rules))
    @rule(data=st.data(), which=st.integers(0, len(RULE_KINDS) - 1), cooldown=cooldowns)
    def delete_and_create_again(self, data: st.DataObject, which: int, cooldown: float) -> None:
        rule_id = list(self.rules)[which % len(self.rules)]
        self.delete_rule(which)
        self.create_rule(data, rule_id, cooldown)

    @rule()
    def restart(self) -> None:
        """A new pipeline on the same store resumes every live conversation's rule state
        (what edits dropped stays dropped) and its alert."""
        self.pipeline = EmbeddedPipeline(self.store, HubOutlet(self.hub), self.rule_set,
                                         RollingConfig(), policy=POLICY)
        self.run(self.pipeline.restore())
        self.check_alerts([])

    # -- the clock ------------------------------------------------------------------------

    @rule(gap=gaps)
    def tick(self, gap: float) -> None:
        self.now += gap
        expected = self.model_tick(self.now)
        self.run(self.pipeline.tick(self.now))
        self.check_alerts(expected)

    @rule(gap=st.sampled_from([15.0, 60.0, 120.0, 700.0]))
    def tick_after_a_long_wait(self, gap: float) -> None:
        self.tick(gap)

    @invariant()
    def nothing_refused(self) -> None:
        assert not self.source.refused


RulesOnTheLivePipeline.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None)
test_rules_on_the_live_pipeline = RulesOnTheLivePipeline.TestCase
