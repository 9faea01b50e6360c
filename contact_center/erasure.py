"""Erasure (docs/security.md#retention-and-erasure): everything of a customer's
conversations deleted for good, a bounded transaction at a time; refused, with nothing
erased, while any of them is live (the pipeline still writes to it)."""

from __future__ import annotations

import hashlib

from contact_center.stores import CustomerKey, Removed, Store
from contact_center.stores.forgetting import folded_email

BATCH = 100  # conversations per transaction


class ConversationsLive(Exception):
    """The customer has live conversations: end them first."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"live conversations: {', '.join(ids)}")
        self.ids = ids


def identifier_digest(customer: CustomerKey) -> str:
    """The hex SHA-256 of the identifier erased by (an e-mail as it is matched): what the
    audit log keeps instead of the identifier, which would otherwise outlive the erasure
    there (the log is append-only) while whoever holds the identifier can still find the
    entry."""
    identifier = customer.id if customer.id is not None else folded_email(customer.email or "")
    return hashlib.sha256(identifier.encode()).hexdigest()


async def erase(store: Store, customer: CustomerKey, batch: int = BATCH) -> Removed:
    """Erase the customer's conversations; `ConversationsLive` (nothing erased) while any
    is live. A conversation of theirs that starts meanwhile is not erased (it is live)."""
    found = await store.customer_conversations(customer)
    live = [cid for cid, status in found if status == "live"]
    if live:
        raise ConversationsLive(live)
    erased = Removed()
    ids = [cid for cid, _ in found]
    for start in range(0, len(ids), batch):
        erased.add(await store.erase_conversations(ids[start : start + batch]))
    return erased
