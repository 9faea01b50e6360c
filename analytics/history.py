"""Recorded conversations as columns: what a backtest reads (the stores build it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class History:
    """Recorded conversations as columns: one entry per final segment, grouped by
    conversation, each group in arrival (seq) order."""

    conversations: list[dict[str, Any]]  # id, queue, channel, agent_id, recording, ended_at
    group: list[int]  # per segment: index into conversations
    segment_ids: list[str]
    roles: list[str]
    participants: list[str]
    scores: list[tuple[float, float, float, float]]  # neg, neu, pos, compound
    at: list[float]  # received_at
    texts: list[str | None] | None  # None unless asked for; a None entry: not recorded
    truncated: bool  # more conversations matched than the limit
    # Per conversation, unless not asked for: since when a human agent was assigned
    # (-inf: from the start; None: never), from conversation.started, bot.handover and
    # conversation.transferred events.
    agents_from: list[float | None] | None = None


def agent_assignments(conversations: list[dict[str, Any]], index: dict[str, int],
                      events: Iterable[tuple[str, str, dict[str, Any], float]],
                      ) -> list[float | None]:
    """Since when each conversation had a human agent, from its stored events
    (conversation id, type, payload, at), in order."""
    since: list[float | None] = [None] * len(conversations)
    for cid, kind, payload, at in events:
        i = index[cid]
        if since[i] is not None:
            continue
        if kind == "conversation.started" and payload.get("agent_id"):
            since[i] = float("-inf")
        elif kind == "bot.handover" or (kind == "conversation.transferred"
                                        and payload.get("to_agent_id")):
            since[i] = at
    return since
