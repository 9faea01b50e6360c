"""Webhooks: endpoints that get alert events, their deliveries, a manual redelivery.
docs/alerts.md#webhooks."""

from __future__ import annotations

import secrets
import time
import urllib.parse
from typing import Any, Literal

import httpx2 as httpx
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import Field

from analytics.rules import Severity
from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed, Responses, error
from contact_center.protocol import Id, Model
from contact_center.webhook_delivery import checked_address
from monitoring.alerts import EVENT_TYPES
from monitoring.permissions import Permission, Principal
from monitoring.webhooks import allowed_networks, new_secret

router = APIRouter(tags=["admin"], responses=COMMON)
# No scope divides them: a user with one may not use these routes.
MANAGING = require(Permission.WEBHOOKS_MANAGE, unscoped=True)

MAX_WEBHOOKS = 100
EventType = Literal["alert.raised", "alert.updated", "alert.escalated", "alert.renotified",
                    "alert.acknowledged", "alert.assigned", "alert.resolved",
                    "alert.reopened"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]
NOTIFYING: list[EventType] = ["alert.raised", "alert.escalated", "alert.renotified"]

NOT_FOUND: Responses = {404: error("unknown_webhook: no such webhook")}
REFUSED: Responses = {422: error("invalid_webhook: the URL is not http(s), does not resolve, or "
                      "resolves to a private, loopback or link-local address outside "
                      "CC_WEBHOOK_ALLOWED_NETWORKS; too many webhooks")}


class WebhookFields(Model):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https://.")
    events: list[EventType] = Field(default_factory=lambda: list(NOTIFYING), min_length=1,
                                    description="Which alert events; default: the ones "
                                                "that notify.")
    min_severity: Severity = Field(default="low", description="Events of alerts at least "
                                                              "this severe.")
    queues: list[Id] | None = Field(default=None, max_length=100,
                                    description="Only these queues' alerts; null: all.")


class WebhookChange(Model):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[EventType] | None = Field(default=None, min_length=1)
    min_severity: Severity | None = None
    queues: list[Id] | None = Field(default=None, max_length=100)
    enabled: bool | None = Field(default=None, description="true also clears the reason "
                                                           "it was disabled.")


class WebhookInfo(Closed):
    id: str
    url: str
    events: list[EventType]
    min_severity: Severity
    queues: list[str] | None
    enabled: bool
    disabled_reason: str | None = Field(description="Why the service disabled it.")
    failing_since: float | None = Field(description="Its deliveries have failed since "
                                                    "(Unix time); null: healthy.")
    created_at: float
    created_by: str | None


class NewWebhook(WebhookInfo):
    secret: str = Field(description="The signing secret (whsec_…): shown in this response "
                                    "only.")


class Webhooks(Closed):
    webhooks: list[WebhookInfo]


class Delivery(Closed):
    id: int
    webhook_id: str
    event_id: int
    message_id: str = Field(description="The webhook-id header: the same on every try.")
    type: EventType
    payload: str = Field(description="The body as sent.")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: float
    last_status: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None
    created_at: float
    delivered_at: float | None


class Deliveries(Closed):
    deliveries: list[Delivery] = Field(description="Newest first.")
    next_cursor: int | None


def _public(hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k not in ("secret", "after_event_id")}


def _invalid(message: str) -> HTTPException:
    return HTTPException(422, {"type": "error", "code": "invalid_webhook", "message": message})


async def _checked(request: Request, url: str) -> str:
    allowed = allowed_networks(request.app.state.settings.webhook_allowed_networks)
    try:
        await checked_address(httpx.URL(url), allowed)
    except (ValueError, OSError, httpx.InvalidURL) as exc:
        raise _invalid(f"{url}: {exc}") from None
    return url


async def _found(request: Request, webhook_id: str) -> dict[str, Any]:
    hook: dict[str, Any] | None = await request.app.state.store.get_webhook(webhook_id)
    if hook is None:
        raise HTTPException(404, {"type": "error", "code": "unknown_webhook",
                                  "message": f"no webhook {webhook_id}"})
    return hook


@router.post("/v1/webhooks", status_code=201, response_model=NewWebhook, responses=REFUSED)
async def add_webhook(request: Request, body: WebhookFields,
                      principal: Principal = MANAGING
                      ) -> dict[str, Any]:
    """Send alert events to a URL, signed (Standard Webhooks). The secret is in this
    response only."""
    store = request.app.state.store
    webhook_id = "wh_" + secrets.token_hex(8)
    async with audited(request, principal, "webhook.create", "webhook", webhook_id,
                       {"url": _shown(body.url), "events": body.events,
                        "min_severity": body.min_severity, "queues": body.queues}):
        if len(await store.list_webhooks()) >= MAX_WEBHOOKS:
            raise _invalid(f"at most {MAX_WEBHOOKS} webhooks")
        hook = {"id": webhook_id, "url": await _checked(request, body.url),
                "events": list(dict.fromkeys(body.events)), "min_severity": body.min_severity,
                "queues": body.queues, "secret": new_secret(), "enabled": True,
                "disabled_reason": None, "failing_since": None, "created_at": time.time(),
                "created_by": principal.username}
        stored = await store.add_webhook(hook)
    request.app.state.runtime.webhooks.endpoints_changed()
    return _public(stored) | {"secret": stored["secret"]}


def _shown(url: str) -> str:
    """A URL as the audit log keeps it: without a user and password, query or fragment
    (which may hold a secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(not a URL)"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@router.get("/v1/webhooks", response_model=Webhooks)
async def list_webhooks(request: Request,
                        _: Principal = MANAGING) -> dict[str, Any]:
    return {"webhooks": [_public(h) for h in await request.app.state.store.list_webhooks()]}


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookInfo, responses=NOT_FOUND)
async def get_webhook(request: Request, webhook_id: str,
                      _: Principal = MANAGING) -> dict[str, Any]:
    return _public(await _found(request, webhook_id))


@router.patch("/v1/webhooks/{webhook_id}", response_model=WebhookInfo,
              responses={**NOT_FOUND, **REFUSED})
async def change_webhook(request: Request, webhook_id: str, change: WebhookChange,
                         principal: Principal = MANAGING
                         ) -> dict[str, Any]:
    """Change some fields (``queues: null`` means all queues again)."""
    changes = change.model_dump(exclude_unset=True)
    asked = changes | ({"url": _shown(changes["url"])} if changes.get("url") else {})
    async with audited(request, principal, "webhook.change", "webhook", webhook_id, asked):
        await _found(request, webhook_id)
        if changes.get("url") is not None:
            await _checked(request, changes["url"])
        changes = {k: v for k, v in changes.items() if v is not None or k == "queues"}
        if changes.get("enabled"):
            changes |= {"disabled_reason": None, "failing_since": None}
        hook = await request.app.state.store.update_webhook(webhook_id, changes) if changes \
            else await _found(request, webhook_id)
        if hook is None:
            await _found(request, webhook_id)  # (deleted meanwhile: 404)
    request.app.state.runtime.webhooks.endpoints_changed()
    return _public(hook)


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, response_class=Response,
               responses=NOT_FOUND)
async def delete_webhook(request: Request, webhook_id: str,
                         principal: Principal = MANAGING) -> None:
    """Stop sending to it; its deliveries go with it."""
    async with audited(request, principal, "webhook.delete", "webhook", webhook_id):
        if not await request.app.state.store.delete_webhook(webhook_id):
            await _found(request, webhook_id)


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=Deliveries,
            responses=NOT_FOUND)
async def list_deliveries(request: Request, webhook_id: str,
                          status: Literal["pending", "delivered", "failed"] | None = None,
                          cursor: int | None = Query(default=None, ge=0),
                          limit: int = Query(default=100, ge=1, le=1000),
                          _: Principal = MANAGING
                          ) -> dict[str, Any]:
    """The delivery log: each event sent (or to send), its tries and the last answer."""
    await _found(request, webhook_id)
    found = await request.app.state.store.list_deliveries(webhook_id, status, cursor, limit)
    return {"deliveries": found,
            "next_cursor": found[-1]["id"] if len(found) == limit else None}


@router.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
             status_code=202, response_model=Delivery,
             responses={404: error("unknown_webhook / unknown_delivery"),
                        409: error("delivery_in_flight: a try of it is under way; ask "
                                   "again once it has ended")})
async def redeliver(request: Request, webhook_id: str, delivery_id: int,
                    principal: Principal = MANAGING
                    ) -> dict[str, Any]:
    """Send a delivery again now (the same webhook-id), whatever its status."""
    async with audited(request, principal, "webhook.redeliver", "webhook", webhook_id,
                       {"delivery_id": delivery_id}):
        delivery = await _redeliver(request, webhook_id, delivery_id)
    request.app.state.runtime.webhooks.wake()
    return delivery


async def _redeliver(request: Request, webhook_id: str, delivery_id: int) -> dict[str, Any]:
    await _found(request, webhook_id)
    store = request.app.state.store
    delivery: dict[str, Any] | None = await store.redeliver(webhook_id, delivery_id,
                                                            time.time())
    if delivery is None:
        # (the newest delivery up to this id: this one, if there is one)
        found = await store.list_deliveries(webhook_id, None, delivery_id + 1, 1)
        if found and found[0]["id"] == delivery_id:
            raise HTTPException(409, {"type": "error", "code": "delivery_in_flight",
                                      "message": f"delivery {delivery_id} is being tried; "
                                                 "ask again once it has ended"})
        raise HTTPException(404, {"type": "error", "code": "unknown_delivery",
                                  "message": f"no delivery {delivery_id} of {webhook_id}"})
    return delivery
