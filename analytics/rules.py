"""The escalation rules engine: rule definitions and their pure evaluation.

A rule keeps a small state per conversation (``RuleState``). ``evaluate`` takes one final
turn and the conversation it belongs to and returns the alerts to raise; ``due`` does the
same for rules that fire on a clock (response time). Neither does I/O, so the pipeline,
the backtest and the tests all drive them directly. Each kind's evaluator is one small
function; `docs/rules.md` documents every field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from analytics import phrases as phrase_index
from analytics import signals
from analytics.phrases import PhraseIndex
from analytics.rolling import RollingSentiment
from analytics.scoring import Scores
from analytics.signals import Signal
from analytics.text import has_nul

Role = Literal["customer", "agent", "bot", "supervisor"]
ROLES: tuple[Role, ...] = ("customer", "agent", "bot", "supervisor")
Severity = Literal["low", "medium", "high"]
Metric = Literal["window", "ewma", "turn"]
MAX_COOLDOWN = 7 * 24 * 3600.0


def _has_a_word(phrase: str) -> str:
    if not re.search(r"\w", phrase):
        raise ValueError("a phrase needs at least one letter or digit")
    return phrase


Phrase = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_has_a_word)]
Phrases = list[Phrase]
# Rules read at most this much of a turn's text: its first and its last READ_CHARS
# characters (what a customer says first and last); scores read all of it.
READ_CHARS = 2000


_SEAM = "\n\x00\n"  # no phrase or pattern matches across it (a text holds no NUL)


def readable(text: str) -> str:
    """What rules read of ``text``: all of it, or its beginning and end (cut where words
    end, so a cut word cannot read as another)."""
    if len(text) <= 2 * READ_CHARS:
        return text
    head, tail = text[:READ_CHARS], text[-READ_CHARS:]
    head = head[:head.rfind(" ")] if " " in head[-50:] else head
    tail = tail[tail.find(" ") + 1:] if " " in tail[:50] else tail
    return head + _SEAM + tail


class Scope(BaseModel):
    """Where a rule applies; an empty list means everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queues: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=200)
    channels: list[Literal["chat", "voice"]] = Field(default_factory=list)

    def covers(self, queue: str, channel: str) -> bool:
        return ((not self.queues or queue in self.queues)
                and (not self.channels or channel in self.channels))


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if has_nul(data):  # no store keeps a NUL character (PostgreSQL refuses it)
            raise ValueError("a rule must not contain NUL characters (\\u0000)")
        return data

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    # Strict: a version is an integer, not true, "3" or 2.0.
    version: int = Field(default=1, ge=1, strict=True,
                         description="Bumped by the server on every change.")
    name: str = Field(default="", max_length=200)
    severity: Severity = "high"
    scope: Scope = Field(default_factory=Scope)
    cooldown_seconds: float = Field(default=300.0, ge=0, le=MAX_COOLDOWN, allow_inf_nan=False)
    enabled: bool = True

    def definition(self) -> dict[str, Any]:
        """What the rule does, without its version: equal definitions, same version."""
        return self.model_dump(mode="json", exclude={"version"})


class SentimentRule(_RuleBase):
    """Customer sentiment below ``below`` for ``consecutive`` customer turns; re-arms only
    once it climbs back to ``clear_above`` (hysteresis)."""

    kind: Literal["sentiment"] = "sentiment"
    metric: Metric = "window"
    below: float = Field(default=-0.5, ge=-1, le=1)
    consecutive: int = Field(default=2, ge=1, le=100)
    clear_above: float = Field(default=-0.1, ge=-1, le=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> SentimentRule:
        if self.clear_above < self.below:
            raise ValueError("clear_above must be >= below")
        return self


class SentimentDropRule(_RuleBase):
    """Customer sentiment fell by more than ``drop`` from its first value (``start``) or
    its best so far (``peak``); re-arms once the fall is back within ``clear_within``."""

    kind: Literal["sentiment_drop"] = "sentiment_drop"
    metric: Metric = "window"
    drop: float = Field(default=0.8, gt=0, le=2)
    reference: Literal["start", "peak"] = "peak"
    clear_within: float | None = Field(default=None, ge=0, le=2,
                                       description="default: half of drop")
    min_turns: int = Field(default=2, ge=1, le=100)

    @model_validator(mode="after")
    def _hysteresis(self) -> SentimentDropRule:
        if self.clear_within is not None and self.clear_within > self.drop:
            raise ValueError("clear_within must be <= drop")
        return self

    @property
    def rearm_at(self) -> float:
        return self.drop / 2 if self.clear_within is None else self.clear_within


class _Phrased:
    """A rule that reads literal ``phrases`` (matched by the rule set's `PhraseIndex`)."""

    phrases: list[str]

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset(map(phrase_index.normalized, self.phrases))

    def found(self, reading: Reading, negation_aware: bool) -> list[str]:
        """Its phrases in the turn ``reading`` reads, first seen first."""
        return [phrase for phrase, free in reading.phrases().items()
                if phrase in self.keys and (free or not negation_aware)]


class KeywordRule(_Phrased, _RuleBase):
    """A turn by one of ``roles`` contains one of ``phrases`` (whole words, any case);
    with ``negation_aware``, a phrase just after "not", "never", "don't"... does not count."""

    kind: Literal["keyword"] = "keyword"
    phrases: Phrases = Field(min_length=1, max_length=500)
    roles: list[Role] = Field(default=["customer"], min_length=1)
    negation_aware: bool = False


class SignalRule(_RuleBase):
    """A turn shows signals beyond sentiment: any of ``any_of``, all of ``all_of``, and
    (optionally) a compound score below ``sentiment_below`` on the same turn."""

    kind: Literal["signal"] = "signal"
    any_of: list[Signal] = Field(default_factory=list)
    all_of: list[Signal] = Field(default_factory=list)
    sentiment_below: float | None = Field(default=None, ge=-1, le=1)
    roles: list[Role] = Field(default=["customer"], min_length=1)
    negation_aware: bool = True

    @model_validator(mode="after")
    def _some_signal(self) -> SignalRule:
        if not self.any_of and not self.all_of:
            raise ValueError("name at least one signal in any_of or all_of")
        return self


class ResponseTimeRule(_RuleBase):
    """A customer message unanswered (by an agent or bot) for more than ``seconds``; fires
    on the clock, once per wait, and clears when someone answers."""

    kind: Literal["response_time"] = "response_time"
    seconds: float = Field(default=120.0, gt=0, le=MAX_COOLDOWN, allow_inf_nan=False)


class AgentConductRule(_Phrased, _RuleBase):
    """An agent's own turn crosses a line: its compound score below ``below``, or words
    from the profanity signal (``profanity``) or from ``phrases``."""

    kind: Literal["agent_conduct"] = "agent_conduct"
    below: float | None = Field(default=-0.6, ge=-1, le=1)
    profanity: bool = True
    phrases: Phrases = Field(default_factory=list, max_length=500)
    roles: list[Role] = Field(default=["agent"], min_length=1)


class HumanRequestedRule(_Phrased, _RuleBase):
    """In a bot-handled conversation (no agent assigned yet) the customer asks for a
    person, or the bot fails ``bot_failures`` times: a hand-over alert for the queue."""

    kind: Literal["human_requested"] = "human_requested"
    bot_failures: int = Field(default=2, ge=0, le=100, description="0: never on failures")
    phrases: Phrases = Field(default_factory=list, max_length=500,
                             description="extra customer phrases asking for a person")


def reacts_to(rule: _RuleBase, role: str) -> bool:
    """Whether a final turn by ``role`` can raise ``rule``'s alert or change its state."""
    if isinstance(rule, SentimentRule | SentimentDropRule):
        return role == "customer"
    if isinstance(rule, KeywordRule | SignalRule | AgentConductRule):
        return role in rule.roles
    return isinstance(rule, HumanRequestedRule) and role in ("customer", "bot")


def signals_read(rule: _RuleBase, role: str) -> frozenset[str]:
    """The signals ``rule`` looks for in a turn by ``role``."""
    if isinstance(rule, SignalRule) and role in rule.roles:
        return frozenset(rule.any_of) | frozenset(rule.all_of)
    if isinstance(rule, AgentConductRule) and role in rule.roles and rule.profanity:
        return frozenset({"profanity"})
    if isinstance(rule, HumanRequestedRule):
        return frozenset({"customer": {"human_request"}, "bot": {"bot_failure"}}.get(role, ()))
    return frozenset()


AnyRule = (SentimentRule | SentimentDropRule | KeywordRule | SignalRule | ResponseTimeRule
           | AgentConductRule | HumanRequestedRule)
Rule = Annotated[AnyRule, Field(discriminator="kind")]
MAX_RULES = 200


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice; ids must be unique")
            seen.add(rule.id)
        return self

    def over_budget(self) -> str | None:
        """Why the set's phrases are over their budget (`analytics.phrases`), or None.
        Checked where a set is saved, not where a saved one is read back."""
        return phrase_index.budget(self.phrase_index)

    @cached_property
    def phrase_index(self) -> PhraseIndex:
        """Every phrase of the set's rules, for matching each turn once."""
        return PhraseIndex(p for r in self.rules if isinstance(r, _Phrased) for p in r.phrases)

    def get(self, rule_id: str) -> AnyRule | None:
        return self._by_id.get(rule_id)

    @cached_property
    def _by_id(self) -> dict[str, AnyRule]:
        return {r.id: r for r in self.rules}

    @cached_property
    def timers(self) -> tuple[ResponseTimeRule, ...]:
        """The enabled clock rules (response time)."""
        return tuple(r for r in self.rules if isinstance(r, ResponseTimeRule) and r.enabled)

    @cached_property
    def _signals_by_role(self) -> dict[str, frozenset[str]]:
        return {role: frozenset().union(*(signals_read(r, role) for r in self.rules
                                          if r.enabled))
                for role in ROLES}

    @cached_property
    def _reacting(self) -> dict[str, tuple[AnyRule, ...]]:
        return {role: tuple(r for r in self.rules if r.enabled and reacts_to(r, role))
                for role in ROLES}

    def reacting_to(self, role: str) -> tuple[AnyRule, ...]:
        """The enabled rules a final turn by ``role`` can change (in scope or not)."""
        return self._reacting[role]

    def signals_for(self, role: str) -> frozenset[str]:
        """The signals the enabled rules read in a turn by ``role``: a turn is searched
        for these alone."""
        return self._signals_by_role[role]

    # Changes return a new set: the server owns versions, bumping one whenever a rule's
    # definition changes, so an unchanged document round-trips with the same versions.

    def with_rule(self, rule: AnyRule) -> RuleSet:
        """Add ``rule``, or replace the rule with its id."""
        rule = _versioned(rule, self.get(rule.id))
        rules = [rule if r.id == rule.id else r for r in self.rules]
        if rule.id not in {r.id for r in self.rules}:
            rules.append(rule)
        return RuleSet(rules=rules)

    def without(self, rule_id: str) -> RuleSet:
        return RuleSet(rules=[r for r in self.rules if r.id != rule_id])

    def replacing(self, incoming: RuleSet) -> RuleSet:
        """``incoming`` as the whole set, versioned against this one."""
        return RuleSet(rules=[_versioned(r, self.get(r.id)) for r in incoming.rules])


def _versioned(rule: AnyRule, previous: AnyRule | None) -> AnyRule:
    if previous is None:
        version = 1
    elif previous.definition() == rule.definition():
        version = previous.version
    else:
        version = previous.version + 1
    return rule.model_copy(update={"version": version})


# -- what rules read ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """A scored final segment, as rules see it. ``text`` is None for a turn restored from
    storage whose words were not recorded."""

    segment_id: str
    role: Role
    participant_id: str
    text: str | None
    scores: Scores
    at: float

    def evidence(self) -> dict[str, Any]:
        return {"segment_id": self.segment_id, "role": self.role,
                "participant_id": self.participant_id, "text": self.text,
                "scores": self.scores.as_dict(), "at": self.at}

    def reference(self) -> dict[str, Any]:
        """The turn without its words, as rule state keeps it across restarts."""
        return {"segment_id": self.segment_id, "role": self.role,
                "participant_id": self.participant_id, "scores": self.scores.as_dict(),
                "at": self.at}

    @classmethod
    def from_reference(cls, ref: dict[str, Any], text: str | None) -> Turn:
        return cls(segment_id=ref["segment_id"], role=ref["role"],
                   participant_id=ref["participant_id"], text=text,
                   scores=Scores(**ref["scores"]), at=ref["at"])


class Subject(Protocol):
    """What rules read of a conversation besides the turn (``Conversation`` is one)."""

    queue: str
    channel: str
    agent_id: str | None
    rolling: RollingSentiment
    start_sentiment: float | None  # the first customer turn's compound score
    customer_waiting_since: float | None


def track_wait(waiting_since: float | None, role: str, at: float) -> float | None:
    """The customer waits from their oldest unanswered turn until an agent or bot answers."""
    if role != "customer":
        return None
    return at if waiting_since is None else waiting_since


@dataclass(slots=True)
class RuleState:
    """One rule's memory of one conversation; ``snapshot`` keeps no words."""

    kind: str = ""  # the kind of rule it belongs to: a rule that changes kind starts afresh
    armed: bool = True
    breaches: list[Turn] = field(default_factory=list)
    last_fired_at: float | None = None
    start: float | None = None  # sentiment_drop: first value of its metric
    peak: float | None = None  # sentiment_drop: best value so far
    turns: int = 0  # sentiment_drop: customer turns seen
    bot_failures: list[Turn] = field(default_factory=list)  # human_requested
    fired_for: float | None = None  # response_time: the wait it fired for

    @property
    def fresh(self) -> bool:
        """Whether it remembers nothing: the same as a new ``RuleState(kind)``, which the
        engine creates when a rule has none, so a fresh one need not be kept or saved."""
        return (self.armed and not self.breaches and self.last_fired_at is None
                and self.start is None and self.peak is None and not self.turns
                and not self.bot_failures and self.fired_for is None)

    def snapshot(self) -> dict[str, Any]:
        """What differs from a fresh state (``restore`` reads the rest as the defaults)."""
        data: dict[str, Any] = {"kind": self.kind}
        if not self.armed:
            data["armed"] = False
        for name in ("last_fired_at", "start", "peak", "fired_for"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.turns:
            data["turns"] = self.turns
        if self.breaches:
            data["breaches"] = [t.reference() for t in self.breaches]
        if self.bot_failures:
            data["bot_failures"] = [t.reference() for t in self.bot_failures]
        return data

    @classmethod
    def restore(cls, data: dict[str, Any],
                text_of: Callable[[str], str | None] = lambda _: None) -> RuleState:
        state = cls(data.get("kind", ""))
        for name, value in data.items():  # (what a snapshot left out keeps its default)
            if name in _TURN_LISTS:
                setattr(state, name, [Turn.from_reference(r, text_of(r["segment_id"]))
                                      for r in value])
            elif name in _VALUES:
                setattr(state, name, value)
        return state


_TURN_LISTS = frozenset({"breaches", "bot_failures"})
_VALUES = frozenset({"armed", "last_fired_at", "start", "peak", "turns", "fired_for"})


@dataclass(frozen=True, slots=True)
class Trigger:
    """A rule decided to raise an alert; the pipeline turns it into a stored alert."""

    rule: AnyRule
    reason: str
    turns: tuple[Turn, ...]
    metric: float | None = None
    matched: tuple[str, ...] = ()
    signals: dict[str, list[str]] = field(default_factory=dict)
    window: tuple[float, ...] | None = None  # the customer scores the metric was read over
    at: float = 0.0  # when it fired


# -- evaluators, one per kind ---------------------------------------------------------------

class Reading:
    """A turn's words as rules read them (`readable`), each part read once whatever the
    number of rules: its signals (by negation awareness) and the set's phrases."""

    def __init__(self, text: str | None, wanted: frozenset[str],
                 index: PhraseIndex) -> None:
        self.text = readable(text) if text else None
        self._wanted, self._index = wanted, index
        self._signals: dict[bool, dict[str, list[str]]] = {}
        self._phrases: dict[str, bool] | None = None

    def signals(self, negation_aware: bool) -> dict[str, list[str]]:
        if negation_aware not in self._signals:
            self._signals[negation_aware] = (
                signals.detect(self.text, negation_aware, self._wanted) if self.text else {})
        return self._signals[negation_aware]

    def phrases(self) -> dict[str, bool]:
        """The set's phrases in the text, each with whether it occurs not negated."""
        if self._phrases is None:
            self._phrases = self._index.find(self.text) if self.text else {}
        return self._phrases


def _cooling(state: RuleState, rule: _RuleBase, now: float) -> bool:
    # The same sum `deadlines` computes, so a clock rule due at it is not cooling then.
    return state.last_fired_at is not None and now < state.last_fired_at + rule.cooldown_seconds


def _fire(state: RuleState, now: float, trigger: Trigger) -> Trigger:
    state.last_fired_at = now
    return replace(trigger, at=now)


def _window(rolling: RollingSentiment, metric: str) -> tuple[float, ...]:
    return (rolling.values[-1],) if metric == "turn" else tuple(rolling.values)


def _customer_metric(turn: Turn, conv: Subject, metric: str) -> float | None:
    """The rolling metric after a customer turn (None for other turns)."""
    return conv.rolling.value(metric) if turn.role == "customer" else None


def _sentiment(rule: SentimentRule, state: RuleState, turn: Turn, conv: Subject,
               reading: Reading) -> Trigger | None:
    value = _customer_metric(turn, conv, rule.metric)
    if value is None:
        return None
    if not state.armed:
        if value >= rule.clear_above:
            state.armed = True
        return None
    if value >= rule.below:
        state.breaches.clear()
        return None
    state.breaches.append(turn)
    del state.breaches[: -rule.consecutive]
    if len(state.breaches) < rule.consecutive or _cooling(state, rule, turn.at):
        return None
    turns = tuple(state.breaches)
    state.breaches.clear()
    state.armed = False
    return _fire(state, turn.at, Trigger(
        rule=rule, turns=turns, metric=value, window=_window(conv.rolling, rule.metric),
        reason=(f"customer sentiment ({rule.metric}) {value:.3f} below {rule.below} "
                f"for {rule.consecutive} consecutive customer turn(s)")))


def _sentiment_drop(rule: SentimentDropRule, state: RuleState, turn: Turn, conv: Subject,
                    reading: Reading) -> Trigger | None:
    value = _customer_metric(turn, conv, rule.metric)
    if value is None:
        return None
    state.turns += 1
    if state.start is None:
        # A window's or EWMA's first value is the first customer score, whenever the rule
        # began watching.
        state.start = value if conv.start_sentiment is None else conv.start_sentiment
    state.peak = value if state.peak is None else max(state.peak, value)
    reference = state.start if rule.reference == "start" else state.peak
    fall = reference - value
    if not state.armed:
        if fall <= rule.rearm_at:
            state.armed = True
        return None
    if fall <= rule.drop or state.turns < rule.min_turns or _cooling(state, rule, turn.at):
        return None
    state.armed = False
    return _fire(state, turn.at, Trigger(
        rule=rule, turns=(turn,), metric=value, window=_window(conv.rolling, rule.metric),
        reason=(f"customer sentiment ({rule.metric}) fell {fall:.3f} from its "
                f"{rule.reference} {reference:.3f} to {value:.3f} (more than {rule.drop})")))


def _keyword(rule: KeywordRule, state: RuleState, turn: Turn, conv: Subject,
             reading: Reading) -> Trigger | None:
    if turn.role not in rule.roles:
        return None
    found = rule.found(reading, rule.negation_aware)
    if not found or _cooling(state, rule, turn.at):
        return None
    return _fire(state, turn.at, Trigger(
        rule=rule, reason=f"{turn.role} said: " + ", ".join(repr(p) for p in found),
        turns=(turn,), matched=tuple(found)))


def _signal(rule: SignalRule, state: RuleState, turn: Turn, conv: Subject,
            reading: Reading) -> Trigger | None:
    if turn.role not in rule.roles:
        return None
    detected = reading.signals(rule.negation_aware)
    if rule.any_of and detected.keys().isdisjoint(rule.any_of):
        return None
    if rule.all_of and not all(s in detected for s in rule.all_of):
        return None
    if rule.sentiment_below is not None and turn.scores.compound >= rule.sentiment_below:
        return None
    if _cooling(state, rule, turn.at):
        return None
    shown: dict[str, list[str]] = {s: detected[s] for s in (*rule.all_of, *rule.any_of)
                                   if s in detected}
    words = [w for hits in shown.values() for w in hits]
    tone = ("" if rule.sentiment_below is None
            else f"; sentiment {turn.scores.compound:.3f} below {rule.sentiment_below}")
    return _fire(state, turn.at, Trigger(
        rule=rule, turns=(turn,), matched=tuple(dict.fromkeys(words)), signals=shown,
        metric=turn.scores.compound if rule.sentiment_below is not None else None,
        reason=f"{turn.role} turn shows {', '.join(shown)}: "
               + ", ".join(repr(w) for w in words[:5]) + tone))


def _agent_conduct(rule: AgentConductRule, state: RuleState, turn: Turn, conv: Subject,
                   reading: Reading) -> Trigger | None:
    if turn.role not in rule.roles:
        return None
    detected = reading.signals(True)
    words = list(detected.get("profanity", [])) if rule.profanity else []
    words += rule.found(reading, negation_aware=False)
    low = rule.below is not None and turn.scores.compound < rule.below
    if not (words or low) or _cooling(state, rule, turn.at):
        return None
    why = [f"sentiment {turn.scores.compound:.3f} below {rule.below}"] if low else []
    if words:
        why.append("said " + ", ".join(repr(w) for w in words[:5]))
    return _fire(state, turn.at, Trigger(
        rule=rule, turns=(turn,), matched=tuple(dict.fromkeys(words)),
        metric=turn.scores.compound if low else None,
        signals={"profanity": detected["profanity"]} if "profanity" in detected else {},
        reason=f"{turn.role} conduct: " + "; ".join(why)))


def _human_requested(rule: HumanRequestedRule, state: RuleState, turn: Turn, conv: Subject,
                     reading: Reading) -> Trigger | None:
    if conv.agent_id is not None or not state.armed or turn.text is None:
        return None
    if turn.role not in ("bot", "customer"):
        return None
    detected = reading.signals(True)
    if turn.role == "bot" and rule.bot_failures and "bot_failure" in detected:
        state.bot_failures.append(turn)
        if len(state.bot_failures) >= rule.bot_failures:
            state.armed = False
            return _fire(state, turn.at, Trigger(
                rule=rule, turns=tuple(state.bot_failures),
                signals={"bot_failure": detected["bot_failure"]},
                reason=f"the bot failed {len(state.bot_failures)} times; hand over"))
        return None
    if turn.role != "customer":
        return None
    asked = list(detected.get("human_request", [])) + rule.found(reading, negation_aware=True)
    if not asked:
        return None
    state.armed = False
    return _fire(state, turn.at, Trigger(
        rule=rule, turns=(turn,), matched=tuple(dict.fromkeys(asked)),
        signals={"human_request": asked},
        reason="customer asked for a person: " + ", ".join(repr(w) for w in asked[:3])))


def _response_time(rule: ResponseTimeRule, state: RuleState, conv: Subject,
                   now: float, last_customer_turn: Turn | None) -> Trigger | None:
    waiting = conv.customer_waiting_since
    if waiting is None or state.fired_for == waiting or now < waiting + rule.seconds:
        return None
    if _cooling(state, rule, now):
        return None
    state.fired_for = waiting
    return _fire(state, now, Trigger(
        rule=rule, turns=(last_customer_turn,) if last_customer_turn else (),
        metric=now - waiting,
        reason=f"customer waiting {now - waiting:.0f} s for an answer (limit {rule.seconds:g} s)"))


# -- the engine -----------------------------------------------------------------------------

def applies(rule: AnyRule, conv: Subject) -> bool:
    return rule.enabled and rule.scope.covers(conv.queue, conv.channel)


# The evaluator of each kind that reacts to final turns (response_time runs on the clock).
_EVALUATORS: dict[str, Callable[..., Trigger | None]] = {
    "sentiment": _sentiment, "sentiment_drop": _sentiment_drop, "keyword": _keyword,
    "signal": _signal, "agent_conduct": _agent_conduct, "human_requested": _human_requested}


def evaluate(rules: RuleSet, states: dict[str, RuleState], turn: Turn,
             conv: Subject) -> list[Trigger]:
    """Run every enabled rule in scope on one final turn (``conv.rolling`` includes it)."""
    triggers = []
    reading = Reading(turn.text, rules.signals_for(turn.role), rules.phrase_index)

    spare: RuleState | None = None  # a fresh state, for the next rule that has none
    for rule in rules.reacting_to(turn.role):
        if not rule.scope.covers(conv.queue, conv.channel):
            continue
        state = states.get(rule.id)
        new = state is None
        if state is None:
            state, spare = spare or RuleState(), None
            state.kind = rule.kind
        fired = _EVALUATORS[rule.kind](rule, state, turn, conv, reading)
        if fired is not None:
            triggers.append(fired)
        if not state.fresh:
            if new:
                states[rule.id] = state
        elif new:  # (most rules of most turns: memory is per live conversation)
            spare = state
        else:
            del states[rule.id]
    return triggers


def deadlines(rules: RuleSet, states: dict[str, RuleState], conv: Subject) -> list[float]:
    """When the clock rules in scope that have not fired for the current wait would fire,
    earliest first."""
    waiting = conv.customer_waiting_since
    if waiting is None:
        return []
    pending = []
    for rule in rules.timers:
        state = states.get(rule.id)
        if not applies(rule, conv) or (state is not None and state.fired_for == waiting):
            continue
        when = waiting + rule.seconds
        if state is not None and state.last_fired_at is not None:  # not while cooling down
            when = max(when, state.last_fired_at + rule.cooldown_seconds)
        pending.append(when)
    return sorted(pending)


def due(rules: RuleSet, states: dict[str, RuleState], conv: Subject, now: float,
        last_customer_turn: Turn | None = None) -> list[Trigger]:
    """Run the clock rules (response time) at ``now``."""
    triggers = []
    for rule in rules.timers:
        if applies(rule, conv):
            state = states.setdefault(rule.id, RuleState(rule.kind))
            fired = _response_time(rule, state, conv, now, last_customer_turn)
            if fired is not None:
                triggers.append(fired)
            elif state.fresh:
                del states[rule.id]
    return triggers
