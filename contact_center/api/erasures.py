"""Erasure: a customer's conversations deleted for good (a data subject's request).
docs/security.md#retention-and-erasure."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import Field, model_validator

from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Error
from contact_center.api.views import Erasure
from contact_center.erasure import ConversationsLive, erase, identifier_digest
from contact_center.protocol import Id, Model
from contact_center.stores import CustomerKey
from monitoring.permissions import Permission, Principal

router = APIRouter(tags=["compliance"], responses=COMMON)


class ErasureRequest(Model):
    """Exactly one of the two."""

    customer_id: Id | None = Field(default=None, description="As conversations name the "
                                                             "customer (customer.id).")
    customer_email: str | None = Field(default=None, min_length=1, max_length=320,
                                       description="As conversations name the customer "
                                                   "(customer.email), ASCII letters' case "
                                                   "aside.")

    @model_validator(mode="after")
    def _one(self) -> ErasureRequest:
        if (self.customer_id is None) == (self.customer_email is None):
            raise ValueError("give exactly one of customer_id and customer_email")
        return self


class LiveConversations(Error):
    conversations: list[str] = Field(description="The customer's live conversations.")


@router.post("/v1/erasures", response_model=Erasure, responses={409: {
    "model": LiveConversations, "description": "conversation_live: the customer has live "
                                               "conversations (listed); nothing was erased; "
                                               "retry once they end"}})
async def erase_customer(request: Request, body: ErasureRequest,
                         principal: Principal = require(Permission.DATA_ERASE, unscoped=True),
                         ) -> dict[str, Any]:
    """Delete everything of the customer's conversations (matched on the customer's id,
    or e-mail): turns, events, alerts and their events, webhook deliveries, the
    conversations themselves, from every store, in bounded transactions. An unknown
    customer erases nothing (200, zero counts). Recorded in the audit log (``erasure``)
    with the counts and a SHA-256 of the identifier, never the identifier."""
    customer = CustomerKey(id=body.customer_id, email=body.customer_email)
    details: dict[str, Any] = {
        "by": "customer_id" if customer.id is not None else "customer_email",
        "identifier_sha256": identifier_digest(customer)}
    async with audited(request, principal, "erasure", "customer", None, details) as outcome:
        try:
            erased = await erase(request.app.state.store, customer)
        except ConversationsLive as exc:
            outcome.details["live"] = exc.ids
            raise HTTPException(409, {
                "type": "error", "code": "conversation_live", "message": (
                    f"the customer has {len(exc.ids)} live conversation(s); nothing was "
                    "erased: retry once they end"), "conversations": exc.ids}) from None
        outcome.details |= erased.counts() | {"conversation_ids": erased.conversations}
    return {"conversations": erased.conversations, "turns": erased.turns,
            "alerts": erased.alerts, "alert_events": erased.alert_events,
            "events": erased.events, "webhook_deliveries": erased.webhook_deliveries}
