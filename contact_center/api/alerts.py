"""Alerts: list and read them, change them (acknowledge, assign, resolve, reopen), and
the alert stream (WebSocket), which resumes from a cursor. docs/alerts.md."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket
from pydantic import Field

from analytics.rules import Severity
from contact_center import protocol as p
from contact_center.api.audited import audited
from contact_center.api.auth import authorize_websocket, require
from contact_center.api.openapi import COMMON, error
from contact_center.api.sockets import pump, pushes_batched
from contact_center.api.views import Alert, Alerts, AlertStatus, AlertWithHistory
from contact_center.buses import Source
from contact_center.protocol import Model, Timestamp
from contact_center.stores import AlertQuery
from monitoring import alerts
from monitoring.alerts import Action
from monitoring.feeds import Announcement
from monitoring.messages import ALERT_EVENTS_TOPIC, ALERTS_TOPIC, WHISPERS_TOPIC, LiveMessage
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["supervision"], responses=COMMON)

SNAPSHOT_LIMIT = 1000  # unresolved alerts in a resync's snapshot, newest first
COMMAND_WAIT_SECONDS = 5.0  # a change waits this long for room on the bus

NOT_FOUND = error("unknown_alert: no such alert, or not one the caller may see")
CHANGES = {**COMMON, 404: NOT_FOUND, 409: error(
    "version_conflict: the alert changed since the version given (reload it); "
    "invalid_transition: its status does not allow this change")}


def _not_found(alert_id: str) -> HTTPException:
    return HTTPException(404, {"type": "error", "code": "unknown_alert",
                               "message": f"no alert {alert_id}"})


async def _visible(request: Request, alert_id: str, principal: Principal) -> dict[str, Any]:
    store = request.app.state.store
    alert: dict[str, Any] | None = await store.get_alert(alert_id)
    if alert is None or not principal.can_see_alert(alert["queue"], alert["agent_id"]):
        raise _not_found(alert_id)  # (never 403: whether it exists is not told)
    own = principal.agent_id is not None and alert["agent_id"] == principal.agent_id
    if principal.within is not None and not own and not await store.list_alerts(AlertQuery(
            conversation_id=alert["conversation_id"], within=principal.within, limit=1)):
        raise _not_found(alert_id)  # its conversation has left the scope since
    return alert


@router.get("/v1/alerts", response_model=Alerts)
async def list_alerts(
    request: Request,
    status: AlertStatus | None = None,
    severity: Severity | None = None,
    rule_id: str | None = Query(default=None, max_length=128,
                                description="Alerts with a hit of this rule."),
    queue: str | None = Query(default=None, max_length=128),
    agent_id: str | None = Query(default=None, max_length=128),
    assignee: str | None = Query(default=None, max_length=64),
    conversation_id: str | None = Query(default=None, max_length=128),
    since: Timestamp | None = Query(default=None, description="First raised at or after."),
    until: Timestamp | None = Query(default=None, description="First raised before."),
    cursor: str | None = Query(default=None, max_length=64,
                               description="The previous page's next_cursor."),
    limit: int = Query(default=100, ge=1, le=1000),
    principal: Principal = require(Permission.ALERTS_OWN, Permission.ALERTS_ALL),
) -> dict[str, Any]:
    """Alerts this user may see (their own conversations', or all in their scope),
    newest first."""
    within = principal.within
    if not principal.can(Permission.ALERTS_ALL):
        if principal.agent_id is None or agent_id not in (None, principal.agent_id):
            return {"alerts": [], "next_cursor": None}
        agent_id, within = principal.agent_id, None
    query = AlertQuery(status=status, severity=severity, rule_id=rule_id, queue=queue,
                       agent_id=agent_id, assignee=assignee, conversation_id=conversation_id,
                       since=since.timestamp() if since else None,
                       until=until.timestamp() if until else None, before=cursor,
                       limit=limit, within=within)
    found = await request.app.state.store.list_alerts(query)
    return {"alerts": found,
            "next_cursor": found[-1]["id"] if len(found) == limit else None}


@router.get("/v1/alerts/{alert_id}", response_model=AlertWithHistory,
            responses={404: NOT_FOUND})
async def get_alert(request: Request, alert_id: str,
                    principal: Principal = require(Permission.ALERTS_OWN,
                                                   Permission.ALERTS_ALL)) -> dict[str, Any]:
    """An alert, with every change made to it: who, when, from where."""
    alert = await _visible(request, alert_id, principal)
    return alert | {"history": await request.app.state.store.alert_history(alert_id)}


class Change(Model):
    version: int = Field(description="The alert's version this change is made against.")
    request_id: p.Id | None = Field(default=None, description=(
        "Makes retrying safe: a change sent again with the same request_id (by the same "
        "user) is applied once, and answered with the alert as it is."))


class Assignment(Change):
    username: str | None = Field(max_length=64, description="null: unassign.")


class Resolution(Change):
    note: str | None = Field(default=None, max_length=2000)


async def _change(request: Request, alert_id: str, action: Action, change: Change,
                  principal: Principal, assignee: str | None = None,
                  note: str | None = None, own: bool = False) -> dict[str, Any]:
    """Have the pipeline make the change (in turn with the conversation's events), or,
    once the conversation has ended, the store; answer the alert as it then is. ``own``:
    only while the alert is on the caller's own conversation. Recorded in the audit log
    (``alert.<action>``), refusals too."""
    asked = {"version": change.version, "assignee": assignee} if action == "assign" \
        else {"version": change.version}
    async with audited(request, principal, f"alert.{action}", "alert", alert_id,
                       asked) as outcome:
        alert = await _visible(request, alert_id, principal)
        outcome.details["conversation_id"] = alert["conversation_id"]
        if own and (alert["agent_id"] is None or alert["agent_id"] != principal.agent_id):
            raise HTTPException(403, {"type": "error", "code": "forbidden", "message": (
                "acknowledging another agent's alert needs alerts-manage")})
        await _command(request, alert, action, change, principal, assignee, note, own)
    return await _visible(request, alert_id, principal)


async def _command(request: Request, alert: dict[str, Any], action: Action, change: Change,
                   principal: Principal, assignee: str | None, note: str | None,
                   own: bool) -> None:
    """Make the change (see `_change`); raises the HTTP error it is answered with."""
    alert_id = alert["id"]
    origin = request.client.host if request.client else None
    key = (f"{principal.username}:{change.request_id}" if change.request_id
           else secrets.token_hex(12))
    command = p.AlertCommand(
        conversation_id=alert["conversation_id"], command_id=key, alert_id=alert_id,
        agent_id=principal.agent_id if own else None, action=action,
        version=change.version, by=principal.username, origin=origin, assignee=assignee,
        note=note)
    try:
        reply = await (await request.app.state.bus.submit(
            command, Source(), max_wait=COMMAND_WAIT_SECONDS))
        if isinstance(reply, p.ErrorReply) and reply.code in (
                p.ErrorCode.CONVERSATION_ENDED, p.ErrorCode.UNKNOWN_CONVERSATION):
            reply = await _change_ended(request, alert_id, command)
    except p.ProtocolError as exc:  # the bus stayed full
        reply = p.ErrorReply.of(exc)
    except LookupError:  # (gone meanwhile)
        raise _not_found(alert_id) from None
    if isinstance(reply, p.ErrorReply):
        status = {p.ErrorCode.VERSION_CONFLICT: 409, p.ErrorCode.INVALID_TRANSITION: 409,
                  p.ErrorCode.OVERLOADED: 503, p.ErrorCode.UNAVAILABLE: 503}.get(reply.code, 500)
        raise HTTPException(status, {"type": "error", "code": reply.code.value,
                                     "message": reply.message})


async def _change_ended(request: Request, alert_id: str, command: p.AlertCommand) -> p.Reply:
    """The change to an alert of an ended conversation: made in the store, then announced
    to the alert streams."""
    runtime = request.app.state.runtime

    def change(alert: dict[str, Any], latest: bool) -> str:
        if command.agent_id is not None and alert["agent_id"] != command.agent_id:
            raise alerts.TransitionError("invalid_transition",
                                         "the alert is no longer on your conversation")
        return alerts.transition(alert, command.action, command.version, command.by,
                                 time.time(), assignee=command.assignee, note=command.note,
                                 latest=latest)

    try:
        row = await request.app.state.store.change_ended_alert(
            alert_id, change, command.by, command.origin, time.time())
    except alerts.TransitionError as exc:
        return p.ErrorReply(code=p.ErrorCode(exc.code), message=exc.message)
    if row is None:  # (not ended after all: a conversation restarted under its id)
        return p.ErrorReply(code=p.ErrorCode.UNAVAILABLE, message="retry")
    message = alerts.event(row.type, row.event_id, row.alert)
    await runtime.outlet.publish(Announcement([LiveMessage(
        row.conversation_id, ALERT_EVENTS_TOPIC, message, event_id=row.event_id or 0,
        match={"agent_id": row.alert["agent_id"], "queue": row.alert["queue"]})]))
    return p.Ack(event=command.type, conversation_id=command.conversation_id)


@router.post("/v1/alerts/{alert_id}/acknowledge", response_model=Alert, responses=CHANGES)
async def acknowledge(request: Request, alert_id: str, change: Change,
                      principal: Principal = require(Permission.ALERTS_MANAGE,
                                                     Permission.ALERTS_OWN)) -> dict[str, Any]:
    """Someone is on it. Supervisors (alerts-manage), and agents for their own
    conversations' alerts."""
    own = not principal.can(Permission.ALERTS_MANAGE)
    return await _change(request, alert_id, "acknowledge", change, principal, own=own)


@router.post("/v1/alerts/{alert_id}/assign", response_model=Alert,
             responses={**CHANGES, 422: error("unknown_user: no such user to assign")})
async def assign(request: Request, alert_id: str, assignment: Assignment,
                 principal: Principal = require(Permission.ALERTS_MANAGE)) -> dict[str, Any]:
    """Give the alert to a user (null: to nobody)."""
    if assignment.username is not None and await request.app.state.store.get_user(
            username=assignment.username) is None:
        raise HTTPException(422, {"type": "error", "code": "unknown_user",
                                  "message": f"no user {assignment.username}"})
    return await _change(request, alert_id, "assign", assignment, principal,
                         assignee=assignment.username)


@router.post("/v1/alerts/{alert_id}/resolve", response_model=Alert, responses=CHANGES)
async def resolve(request: Request, alert_id: str, resolution: Resolution,
                  principal: Principal = require(Permission.ALERTS_MANAGE)) -> dict[str, Any]:
    """Done with it, with an optional note. A new hit afterwards opens a new alert."""
    return await _change(request, alert_id, "resolve", resolution, principal,
                         note=resolution.note)


@router.post("/v1/alerts/{alert_id}/reopen", response_model=Alert, responses=CHANGES)
async def reopen(request: Request, alert_id: str, change: Change,
                 principal: Principal = require(Permission.ALERTS_MANAGE)) -> dict[str, Any]:
    """Open a resolved alert again (its conversation's newest only)."""
    return await _change(request, alert_id, "reopen", change, principal)


@router.websocket("/v1/alerts/stream")
async def alert_stream(ws: WebSocket) -> None:
    """Alert events in event_id order: an agent's own conversations', or all for
    supervisors. ``?after=<event_id>``: first every event after it (else a ``resync``
    with a snapshot of the unresolved alerts). An agent also gets the whispers meant for
    them, live (never resumed)."""
    principal = await authorize_websocket(ws, Permission.ALERTS_OWN, Permission.ALERTS_ALL)
    if principal is None:
        return
    batched = await pushes_batched(ws)
    if batched is None:
        return
    after = ws.query_params.get("after")
    hub, sequencer = ws.app.state.hub, ws.app.state.runtime.alert_stream

    # The user as of now: a narrowed scope stops what left it at once (`open_sockets`).
    held = ws.app.state.open_sockets.hold(ws, principal, Permission.ALERTS_OWN,
                                          Permission.ALERTS_ALL)

    def visible(meta: dict[str, Any]) -> bool:
        return held.principal.can_see_alert(meta["queue"], meta["agent_id"])

    def wanted(meta: dict[str, Any]) -> bool:
        if "to_agent" in meta:  # a whisper: to its agent alone
            return meta["to_agent"] is not None and meta["to_agent"] == principal.agent_id
        return visible(meta)

    # First: nothing falls between.
    sub = hub.subscribe(ALERTS_TOPIC, WHISPERS_TOPIC, accept=wanted)
    first: list[dict[str, Any]] = []
    through = sequencer.delivered
    try:
        if after is not None and after.isdigit() and len(after) <= 18:
            missed = await sequencer.since(int(after))
            if missed is not None:
                first = [e for e in missed if visible(e["alert"])]
                through = max([int(after), *(e["event_id"] for e in missed)])
            else:
                first = [await _snapshot(ws, principal, through)]
        elif after is not None:
            first = [await _snapshot(ws, principal, through)]
    except Exception:
        hub.unsubscribe(sub)
        ws.app.state.open_sockets.release(held)
        raise
    hello = {"type": "subscribed", "user": principal.username, "agent_id": principal.agent_id,
             "event_id": through}
    await pump(ws, "alerts", sub, hub, [hello, *first], seen={"": through}, held=held,
               batched=batched)


async def _snapshot(ws: WebSocket, principal: Principal, through: int) -> dict[str, Any]:
    """A resync: the unresolved alerts as they are now (events after ``through`` follow,
    some perhaps already reflected: keep the higher version)."""
    store = ws.app.state.store
    everyone = principal.can(Permission.ALERTS_ALL)
    agent_id = None if everyone else principal.agent_id
    found = [a for status in ("open", "acknowledged")
             for a in await store.list_alerts(AlertQuery(
                 status=status, agent_id=agent_id, limit=SNAPSHOT_LIMIT,
                 within=principal.within if everyone else None))
             if principal.can_see_alert(a["queue"], a["agent_id"])]
    found.sort(key=lambda a: a["id"], reverse=True)
    return {"type": "resync", "reason": "the cursor is older than the events kept, or not "
            "one of this deployment's", "event_id": through, "alerts": found[:SNAPSHOT_LIMIT]}
