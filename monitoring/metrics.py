"""Live metrics computed from the conversations in progress (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple


class AgentLoad(NamedTuple):
    """What agent metrics read of one live conversation."""

    agent_id: str | None
    alerts: int  # raised on it so far
    open_alert: bool  # its newest alert is unresolved
    sentiment: float | None  # rolling customer sentiment


def load_of(summary: dict[str, Any]) -> AgentLoad:
    alert = summary["alert"]
    return AgentLoad(summary["agent_id"], summary["alerts"],
                     alert is not None and alert["status"] != "resolved",
                     summary["sentiment"]["window"])


def agent_metrics(conversations: Iterable[AgentLoad],
                  known_agents: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per agent: live conversations, their mean customer sentiment, unresolved alerts,
    conversations with alerts.
    ``known_agents`` (agent users) are listed even while they handle nothing."""

    def row(agent_id: str | None) -> dict[str, Any]:
        return {"agent_id": agent_id, "conversations": 0, "open_alerts": 0,
                "escalated_conversations": 0, "_sentiments": []}

    agents: dict[str, dict[str, Any]] = {a: row(a) for a in known_agents}
    for conv in conversations:
        a = agents.setdefault(conv.agent_id or "(unassigned)", row(conv.agent_id))
        a["conversations"] += 1
        a["open_alerts"] += conv.open_alert
        a["escalated_conversations"] += conv.alerts > 0
        if conv.sentiment is not None:
            a["_sentiments"].append(conv.sentiment)
    rows = []
    for a in agents.values():
        values = a.pop("_sentiments")
        a["average_customer_sentiment"] = sum(values) / len(values) if values else None
        rows.append(a)
    return sorted(rows, key=lambda r: (r["agent_id"] is None, r["agent_id"] or ""))
