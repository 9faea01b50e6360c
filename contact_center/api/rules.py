"""Escalation rule routes: the rule set as a document, single-rule CRUD, and backtest.

Every change is validated as a whole, saved, then applied from the next event on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from analytics.backtest import backtest, reads_words
from analytics.rules import AnyRule, HumanRequestedRule, Rule, RuleSet
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Responses, error
from contact_center.protocol import Model, Timestamp
from contact_center.stores import HistoryQuery
from monitoring.permissions import Permission, Principal
from monitoring.scope import Within

log = logging.getLogger(__name__)
T = TypeVar("T")
_RULE: TypeAdapter[AnyRule] = TypeAdapter(Rule)
router = APIRouter(tags=["rules"], responses=COMMON)
_UNKNOWN: Responses = {404: error("unknown_rule: no rule with this id")}
_CONFLICT = error("version_conflict: the rule is at another version than the body says; "
                  "fetch it and retry")
RULE_EXAMPLE = {"id": "churn", "kind": "signal", "name": "Threatens to leave",
                "any_of": ["churn"], "severity": "high"}
# Rules apply to every conversation: a user with a scope may read and backtest them (on
# their scope), not change them.
CHANGING = require(Permission.RULES_MANAGE, unscoped=True)


def _invalid(loc: tuple[str, ...], message: str) -> HTTPException:
    """A 422 shaped like every other validation error, with its one detail."""
    return HTTPException(422, {"type": "error", "code": "validation_error",
                               "message": f"{'.'.join(loc)}: {message}",
                               "details": [{"loc": list(loc), "msg": message,
                                            "type": "value_error"}]})


def _unknown(rule_id: str) -> HTTPException:
    return HTTPException(404, {"type": "error", "code": "unknown_rule",
                               "message": f"no rule {rule_id}"})


async def _current(request: Request) -> RuleSet:
    rules: RuleSet = await request.app.state.runtime.current_rules()
    return rules


def _lock(request: Request) -> AbstractAsyncContextManager[None]:
    """One rules change at a time, across every API node of the deployment."""
    lock: AbstractAsyncContextManager[None] = request.app.state.runtime.rules_lock()
    return lock


async def _commit(request: Request, rules: RuleSet) -> None:
    try:
        await request.app.state.store.save_rules(rules.model_dump(mode="json"))
    except Exception:
        log.exception("saving the rules failed")
        raise HTTPException(503, {"type": "error", "code": "unavailable",
                                  "message": "storage is unavailable; the rules were not "
                                             "changed, retry"}) from None
    await request.app.state.runtime.change_rules(rules)


def _validated(make: Callable[[], T], where: tuple[str, ...] = ()) -> T:
    """Build a rule set (or a value), reporting a problem (duplicate ids, too many rules,
    phrases over their budget) as the same 422 ``validation_error`` a malformed body gets;
    ``where`` prefixes the error locations."""
    try:
        made = make()
    except ValidationError as exc:
        raise RequestValidationError(
            [e | {"loc": (*where, *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None
    if isinstance(made, RuleSet) and (why := made.over_budget()) is not None:
        raise _invalid(("body",), why)
    return made


def _check_version(rule_id: str, expected: int | None, current: AnyRule) -> None:
    if expected is not None and expected != current.version:
        raise HTTPException(409, {"type": "error", "code": "version_conflict",
                                  "message": f"rule {rule_id} is at version {current.version}, "
                                             f"not {expected}; fetch it and retry"})


def _versions(before: AnyRule, after: AnyRule | None) -> dict[str, Any]:
    """What the audit log keeps of a rule's change: its version before and after."""
    return {"version_before": before.version,
            "version": after.version if after is not None else None}


@router.get("/v1/rules", response_model=RuleSet)
async def get_rules(request: Request,
                    _: Principal = require(Permission.RULES_MANAGE)) -> RuleSet:
    """The rule set in force, as a document that `PUT /v1/rules` takes back unchanged."""
    return await _current(request)


@router.put("/v1/rules", response_model=RuleSet)
async def put_rules(request: Request, rules: RuleSet,
                    principal: Principal = CHANGING) -> RuleSet:
    """Replace the whole rule set (an import). Versions are the server's: an unchanged
    rule keeps its version, a changed one is bumped, a new one starts at 1."""
    async with audited(request, principal, "rules.import", "rules") as outcome, \
            _lock(request):
        current_rules = await _current(request)
        new = _validated(lambda: current_rules.replacing(rules))
        await _commit(request, new)
        outcome.details = _differences(current_rules, new)
    return new


def _differences(before: RuleSet, after: RuleSet) -> dict[str, list[str]]:
    """The ids of the rules an import added, changed and removed."""
    old = {rule.id: rule.version for rule in before.rules}
    new = {rule.id: rule.version for rule in after.rules}
    return {"added": sorted(new.keys() - old.keys()),
            "changed": sorted(i for i in new.keys() & old.keys() if new[i] != old[i]),
            "removed": sorted(old.keys() - new.keys())}


@router.post("/v1/rules", status_code=201, response_model=Rule,
             responses={409: error("rule_exists: a rule has this id; PUT to change it")})
async def create_rule(request: Request,
                      rule: Annotated[Rule, Body(openapi_examples={
                          "signal": {"value": RULE_EXAMPLE}})],
                      principal: Principal = CHANGING) -> AnyRule:
    """Add one rule (version 1); 409 ``rule_exists`` if its id is taken."""
    async with audited(request, principal, "rule.create", "rule", rule.id), _lock(request):
        rules = await _current(request)
        if rules.get(rule.id) is not None:
            raise HTTPException(409, {"type": "error", "code": "rule_exists",
                                      "message": f"rule {rule.id} exists; PUT to change it"})
        new = _validated(lambda: rules.with_rule(rule))
        await _commit(request, new)
    created = new.get(rule.id)
    assert created is not None
    return created


@router.get("/v1/rules/{rule_id}", response_model=Rule, responses=_UNKNOWN)
async def get_rule(request: Request, rule_id: str,
                   _: Principal = require(Permission.RULES_MANAGE)) -> AnyRule:
    rule = (await _current(request)).get(rule_id)
    if rule is None:
        raise _unknown(rule_id)
    return rule


@router.put("/v1/rules/{rule_id}", response_model=Rule,
            responses={**_UNKNOWN, 409: _CONFLICT})
async def update_rule(request: Request, rule_id: str, rule: Annotated[Rule, Body()],
                      principal: Principal = CHANGING) -> AnyRule:
    """Replace one rule. A ``version`` in the body, if given, must be the current one
    (409 ``version_conflict`` otherwise); the version is bumped if anything changed."""
    if rule.id != rule_id:
        raise _invalid(("body", "id"), f"id {rule.id!r} differs from the path's {rule_id!r}")
    async with audited(request, principal, "rule.change", "rule", rule_id) as outcome, \
            _lock(request):
        rules = await _current(request)
        current = rules.get(rule_id)
        if current is None:
            raise _unknown(rule_id)
        _check_version(rule_id, rule.version if "version" in rule.model_fields_set else None,
                       current)
        new = _validated(lambda: rules.with_rule(rule))
        await _commit(request, new)
        outcome.details = _versions(current, new.get(rule_id))
    updated = new.get(rule_id)
    assert updated is not None
    return updated


@router.patch("/v1/rules/{rule_id}", response_model=Rule,
              responses={**_UNKNOWN, 409: _CONFLICT})
async def patch_rule(request: Request, rule_id: str,
                     change: Annotated[dict[str, Any], Body(openapi_examples={
                         "disable": {"value": {"enabled": False}}})],
                     principal: Principal = CHANGING) -> AnyRule:
    """Change some fields of one rule, e.g. ``{"enabled": false}`` to disable it. The
    result is validated as a whole rule; ``version``, if given, must be the current one."""
    async with audited(request, principal, "rule.change", "rule", rule_id,
                       {"fields": sorted(change)}) as outcome, _lock(request):
        rules = await _current(request)
        current = rules.get(rule_id)
        if current is None:
            raise _unknown(rule_id)
        expected = change.pop("version", None)
        if expected is not None:
            expected = _validated(lambda: TypeAdapter(int).validate_python(
                expected, strict=True), ("body", "version"))
        _check_version(rule_id, expected, current)
        if "id" in change and change["id"] != rule_id:
            raise _invalid(("body", "id"), "a rule's id cannot be changed; create a new rule "
                                           "and delete this one")
        merged = current.model_dump(mode="json") | change
        rule = _validated(lambda: _RULE.validate_python(merged), ("body",))
        new = _validated(lambda: rules.with_rule(rule))
        await _commit(request, new)
        outcome.details |= _versions(current, new.get(rule_id))
    patched = new.get(rule_id)
    assert patched is not None
    return patched


@router.delete("/v1/rules/{rule_id}", status_code=204, response_class=Response,
               responses=_UNKNOWN)
async def delete_rule(request: Request, rule_id: str,
                      principal: Principal = CHANGING) -> None:
    """Delete one rule; its alerts stay, and record the version that fired."""
    async with audited(request, principal, "rule.delete", "rule", rule_id), _lock(request):
        rules = await _current(request)
        if rules.get(rule_id) is None:
            raise _unknown(rule_id)
        await _commit(request, rules.without(rule_id))


# -- backtest ---------------------------------------------------------------------------------


class BacktestRequest(Model):
    rule: Rule | None = Field(default=None, description="A draft rule (saved or not).")
    rule_id: str | None = Field(default=None, description="Or the id of a saved rule.")
    since: Timestamp | None = Field(default=None, description="Conversations started at or "
                                                              "after this time.")
    until: Timestamp | None = Field(default=None, description="... and before this time.")
    queue: str | None = Field(default=None, max_length=128)
    samples: int = Field(default=5, ge=0, le=50, description="Sample alerts to return.")
    max_conversations: int = Field(default=10_000, ge=1, le=50_000)


class AlertsPerConversation(BaseModel):
    mean: float
    one: int
    two: int
    three_or_more: int


class BacktestOutcome(BaseModel):
    rule: dict[str, Any]
    conversations_judged: int
    conversations_not_judged: int = Field(
        description="Conversations whose words the rule reads were not recorded.")
    conversations_replayed: int = Field(
        description="Judged conversations that could fire (the rest were ruled out by "
                    "their stored scores alone).")
    alerts: int
    conversations_with_alerts: int
    alerts_per_conversation: AlertsPerConversation
    samples: list[dict[str, Any]]


class BacktestDifference(BaseModel):
    alerts: int = Field(description="Draft alerts minus current alerts.")
    conversations_only_draft: int
    conversations_only_current: int
    conversations_both: int
    examples_only_draft: list[str]
    examples_only_current: list[str]


class BacktestResult(BacktestOutcome):
    conversations: int
    truncated: bool = Field(description="More conversations matched than max_conversations.")
    current: BacktestOutcome | None = Field(
        description="The saved rule with the draft's id, run over the same conversations.")
    difference: BacktestDifference | None
    elapsed_ms: float = Field(description="The run itself: reading the history and replaying "
                                          "it.")


BACKTEST_BUSY_RETRY_SECONDS = 5


@router.post("/v1/rules/backtest", response_model=BacktestResult,
             responses={404: error("unknown_rule: no saved rule with rule_id"),
                        503: error("busy: another backtest is running (one at a time); "
                                   "retry after the `Retry-After` seconds; unavailable: "
                                   "the database is down")})
async def run_backtest(request: Request, body: BacktestRequest,
                       principal: Principal = require(Permission.RULES_MANAGE),
                       ) -> dict[str, Any]:
    """Run a draft or saved rule over the recorded conversations in the user's scope and
    see what it would have raised, and how that differs from the saved rule with the same
    id. One at a time per API node: another is answered 503 ``busy`` at once."""
    if (body.rule is None) == (body.rule_id is None):
        raise _invalid(("body",), "give exactly one of rule and rule_id")
    if body.since and body.until and body.since >= body.until:
        raise _invalid(("body", "until"), "until must be after since")
    rule_id = body.rule_id if body.rule is None else body.rule.id
    asked = {"draft": body.rule is not None, "max_conversations": body.max_conversations} | {
        name: value for name, value in (
            ("since", body.since.timestamp() if body.since else None),
            ("until", body.until.timestamp() if body.until else None),
            ("queue", body.queue)) if value is not None}
    async with audited(request, principal, "rule.backtest", "rule", rule_id,
                       asked) as outcome:
        result, elapsed = await _backtest(request, body, principal.within)
        outcome.details |= {"conversations": result["conversations"],
                            "alerts": result["alerts"]}
    return result | {"elapsed_ms": elapsed * 1000}


async def _backtest(request: Request, body: BacktestRequest,
                    within: Within | None) -> tuple[dict[str, Any], float]:
    """The backtest's result over the conversations ``within`` covers, and how long it
    took (seconds)."""
    rules = await _current(request)
    if body.rule_id is not None:
        rule, current = rules.get(body.rule_id), None
        if rule is None:
            raise _unknown(body.rule_id)
    else:
        assert body.rule is not None
        rule, current = body.rule, rules.get(body.rule.id)
    query = HistoryQuery(
        since=body.since.timestamp() if body.since else None,
        until=body.until.timestamp() if body.until else None, queue=body.queue,
        # Words for the rules that read them, and for the samples' evidence.
        with_text=(body.samples > 0 or reads_words(rule)
                   or (current is not None and reads_words(current))),
        with_agents=any(isinstance(r, HumanRequestedRule) for r in (rule, current)),
        limit=body.max_conversations, within=within)
    lock = request.app.state.backtest_lock
    if lock.locked():  # one at a time (each takes a core): no queue of waiting requests
        raise HTTPException(503, {"type": "error", "code": "busy", "message": (
            "another backtest is running on this node; retry shortly")},
            headers={"Retry-After": str(BACKTEST_BUSY_RETRY_SECONDS)})
    async with lock:
        started = time.perf_counter()
        try:
            history = await request.app.state.store.load_history(query)
        except Exception:
            log.exception("loading the backtest history failed")
            raise HTTPException(503, {"type": "error", "code": "unavailable",
                                      "message": "storage is unavailable; retry"}) from None
        result = await asyncio.to_thread(backtest, rule, history,
                                         request.app.state.settings.rolling, current,
                                         body.samples)
        elapsed = time.perf_counter() - started
    return result, elapsed

