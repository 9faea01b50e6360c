"""The live board's logic: which live conversations a supervisor asked to see, and in
what order (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """What a supervisor asked to see of the live conversations (all when empty)."""

    queue: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    escalated: bool | None = None
    sentiment_below: float | None = None

    def matches(self, summary: dict[str, Any]) -> bool:
        for key in ("queue", "agent_id", "channel", "escalated"):
            wanted = getattr(self, key)
            if wanted is not None and summary[key] != wanted:
                return False
        if self.sentiment_below is not None:
            mean = summary["sentiment"]["window"]
            return mean is not None and mean < self.sentiment_below
        return True


def board_filter(wanted: LiveFilter, sees: Callable[[dict[str, Any]], bool] = lambda s: True
                 ) -> Callable[[dict[str, Any]], bool]:
    """For the live board: updates of matching conversations (that the user ``sees``),
    plus one last update of a conversation that stops matching, so the client can drop
    it."""
    shown: set[str] = set()

    def keep(message: dict[str, Any]) -> bool:
        summary = message.get("conversation")
        if summary is None:  # about a conversation: only one on the board
            about = message.get("conversation_id")
            return about is None or about in shown
        was_shown = summary["id"] in shown
        shown.discard(summary["id"])
        if wanted.matches(summary) and sees(summary):
            if summary["status"] != "ended":  # an ended one never comes back
                shown.add(summary["id"])
            return True
        return was_shown

    return keep


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live conversations, worst rolling customer sentiment first."""
    rows.sort(key=lambda s: (s["sentiment"]["window"] is None, s["sentiment"]["window"] or 0.0))
    return rows
