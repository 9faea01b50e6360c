"""Recording policy: which participants' words may be kept."""

from __future__ import annotations

from typing import Literal

RecordingPolicy = Literal["none", "agent", "customer", "all"]

# The agent side of a conversation includes its bot: "agent" recording covers both.
_RECORDED_ROLES: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "agent": frozenset({"agent", "bot"}),
    "customer": frozenset({"customer"}),
    "all": frozenset({"customer", "agent", "bot"}),
}


def records(policy: str, role: str) -> bool:
    """True if a segment by ``role`` may be stored under ``policy``."""
    return role in _RECORDED_ROLES[policy]
