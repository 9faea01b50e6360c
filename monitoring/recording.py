"""Recording policy: which participants' words may be kept."""

from __future__ import annotations

from typing import Literal

RecordingPolicy = Literal["none", "agent", "customer", "all"]

# The agent side of a conversation includes its bot and a supervisor who barged in:
# "agent" recording covers all three (and a whisper, the supervisor's note to the agent).
_RECORDED_ROLES: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "agent": frozenset({"agent", "bot", "supervisor"}),
    "customer": frozenset({"customer"}),
    "all": frozenset({"customer", "agent", "bot", "supervisor"}),
}


def records(policy: str, role: str) -> bool:
    """True if a segment by ``role`` may be stored under ``policy``."""
    return role in _RECORDED_ROLES[policy]
