"""Recording policy: which participants' words may be kept, and whether their partial
(interim) hypotheses are kept too; a queue's, unless the conversation says otherwise
when it starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Policies:
    """Which recording policy a conversation that names none gets: its queue's, else
    ``default``."""

    default: RecordingPolicy = "all"
    by_queue: Mapping[str, RecordingPolicy] = field(default_factory=dict)
    partials: bool = False
    partials_by_queue: Mapping[str, bool] = field(default_factory=dict)

    def of(self, queue: str, asked: RecordingPolicy | None) -> RecordingPolicy:
        return asked or self.by_queue.get(queue, self.default)

    def keeps_partials(self, queue: str, asked: bool | None) -> bool:
        """Whether partials are kept (as ``segment.partial`` events), where the words of
        their role are."""
        return self.partials_by_queue.get(queue, self.partials) if asked is None else asked
