"""Random interleavings of hits, people's changes (stale, duplicated), conversation ends
and clients resuming from cursors, against the pipeline's logic (`Applier`) with each
batch committed as the stores do (alert events numbered in commit order): at most one
unresolved alert per conversation, no change lost or applied twice, and every event
reaches a resuming client once, in order."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from analytics.rolling import RollingConfig
from analytics.rules import RuleSet
from analytics.scoring import score
from contact_center import protocol as p
from contact_center.applier import Applier, Effects
from monitoring.alerts import ACTIONS, AlertPolicy

RULES = RuleSet.model_validate({"rules": [
    {"id": "insult", "name": "Insult", "kind": "keyword", "phrases": ["idiots"],
     "severity": "medium", "cooldown_seconds": 0},
    {"id": "negative", "name": "Negative", "kind": "sentiment", "below": -0.3,
     "consecutive": 1, "metric": "turn", "clear_above": 1.0, "severity": "high",
     "cooldown_seconds": 0}]})
TEXTS = ["you idiots", "This is terrible, I am furious and upset, everything is wrong!",
         "Thank you so much, that is wonderful, great help!", "my order number is 12"]
CONVERSATIONS = ["a", "b", "c"]


class AlertWorkflow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.applier = Applier(RULES, RollingConfig(), policy=AlertPolicy(
            recovered_turns=2, renotify_seconds={"low": 0.0, "medium": 0.0, "high": 0.0}))
        self.now = 1_000.0
        self.log: list[dict[str, Any]] = []  # committed alert events, as pushed
        self.stored: dict[str, dict[str, Any]] = {}  # alert id -> its stored state
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.ids = itertools.count(1)
        self.applied_commands: dict[str, int] = {}  # command id -> events it made
        self.cursor = 0  # a client's: the last event it handled
        self.received: list[int] = []

    def _apply(self, event: Any, text: str | None = None) -> p.Reply:
        self.now += 1.0
        effects = Effects()
        reply = self.applier.apply(event, self.now, score(text) if text else None, effects)
        effects.save_state(self.now)
        for row in effects.batch.alert_events:  # committed: numbered in commit order
            row.event_id = len(self.log) + 1
            assert row.message is not None
            row.message["event_id"] = row.event_id
            self.log.append(row.message)
        self.stored.update(effects.batch.alerts)
        return reply

    @rule(cid=st.sampled_from(CONVERSATIONS))
    def start(self, cid: str) -> None:
        reply = self._apply(p.ConversationStarted(conversation=p.ConversationInfo(
            id=cid, agent_id="agent-1")))
        assert isinstance(reply, p.Ack)
        self.started.add(cid)

    @rule(cid=st.sampled_from(CONVERSATIONS), text=st.sampled_from(TEXTS),
          role=st.sampled_from(["customer", "customer", "agent"]))
    def say(self, cid: str, text: str, role: str) -> None:
        reply = self._apply(p.Segment(conversation_id=cid, segment_id=f"s{next(self.ids)}",
                                      role=role, text=text), text)  # type: ignore[arg-type]
        if cid in self.ended or cid not in self.started:
            assert isinstance(reply, p.ErrorReply)

    @rule(cid=st.sampled_from(CONVERSATIONS), action=st.sampled_from(ACTIONS),
          stale=st.booleans(), redeliver=st.booleans())
    def change(self, cid: str, action: Any, stale: bool, redeliver: bool) -> None:
        mine = sorted(a for a in self.stored.values() if a["conversation_id"] == cid)
        if not mine or cid in self.ended:
            return
        alert = max(mine, key=lambda a: a["id"])
        command_id = f"k{next(self.ids)}"
        command = p.AlertCommand(conversation_id=cid, command_id=command_id,
                                 alert_id=alert["id"], action=action,
                                 # stale: before its last change of state (quiet
                                 # hits since do not make a version stale)
                                 version=alert["state_version"] - 1 if stale
                                 else alert["version"], by="sam",
                                 assignee="kim" if action == "assign" else None)
        before = len(self.log)
        reply = self._apply(command)
        made = len(self.log) - before
        if stale:
            assert isinstance(reply, p.ErrorReply) and reply.code == "version_conflict"
        if isinstance(reply, p.Ack):
            assert made == 1 and self.log[-1]["type"].startswith("alert.")
            assert self.stored[alert["id"]]["version"] == alert["version"] + 1
        else:
            assert made == 0  # refused: nothing changed
        if redeliver:  # the same command again: recognised, not applied twice
            again = self._apply(command)
            assert len(self.log) == before + made
            if isinstance(reply, p.Ack):
                assert isinstance(again, p.Ack) and again.status == "duplicate"

    @rule(cid=st.sampled_from(CONVERSATIONS))
    def end(self, cid: str) -> None:
        self._apply(p.ConversationEnded(conversation_id=cid))
        if cid in self.started:
            self.ended.add(cid)
            assert all(a["status"] == "resolved" for a in self.stored.values()
                       if a["conversation_id"] == cid)

    @rule(take=st.integers(min_value=0, max_value=5))
    def resume(self, take: int) -> None:
        """A client reconnects with its cursor, handles a few events, then drops."""
        missed = [e for e in self.log if e["event_id"] > self.cursor][:take]
        for event in missed:
            self.received.append(event["event_id"])
            self.cursor = event["event_id"]

    @precondition(lambda self: self.log)
    @rule()
    def catch_up(self) -> None:
        self.resume(len(self.log))
        assert self.received == list(range(1, len(self.log) + 1))  # each once, in order

    @invariant()
    def at_most_one_unresolved_alert_per_conversation(self) -> None:
        for cid in CONVERSATIONS:
            unresolved = [a for a in self.stored.values()
                          if a["conversation_id"] == cid and a["status"] != "resolved"]
            assert len(unresolved) <= 1
            conv = self.applier.conversations.get(cid)
            if conv is not None and conv.alert is not None:
                assert self.stored[conv.alert["id"]] == conv.alert  # memory = the store

    @invariant()
    def every_version_is_one_event(self) -> None:
        versions: dict[str, list[int]] = {}
        for event in self.log:
            versions.setdefault(event["alert"]["id"], []).append(event["alert"]["version"])
        for numbers in versions.values():
            assert numbers == list(range(1, len(numbers) + 1))


TestAlertWorkflow = AlertWorkflow.TestCase
TestAlertWorkflow.settings = settings(max_examples=150, stateful_step_count=40,
                                      deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
