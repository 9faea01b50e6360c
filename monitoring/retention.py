"""Retention (docs/security.md#retention-and-erasure): how long the words of an ended
conversation are kept, per queue, and which conversations are due. Pure: the retention
job (`contact_center.retention`) asks the store for what `due` selects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days the words of a conversation are kept after it ended: its queue's, else
    ``default_days`` (None: for ever)."""

    default_days: float | None = None
    by_queue: Mapping[str, float] = field(default_factory=dict)

    def days(self, queue: str) -> float | None:
        return self.by_queue.get(queue, self.default_days)

    @property
    def keeps_everything(self) -> bool:
        return self.default_days is None and not self.by_queue


@dataclass(frozen=True, slots=True)
class Due:
    """Ended conversations whose words are due: those ended before ``ended_before`` in one
    of ``queues`` or, with ``others``, in any queue but these."""

    ended_before: float
    queues: tuple[str, ...]
    others: bool = False

    def covers(self, queue: str, ended_at: float) -> bool:
        return ended_at < self.ended_before and (queue in self.queues) != self.others


def due(policy: RetentionPolicy, now: float) -> list[Due]:
    """What selects the conversations due at ``now`` (a conversation's queue is where it
    ended up, after any transfer): one selection per retention in days (queues that keep
    words as long share it), then the rest of the queues under the default. Together they
    select exactly what `is_due` says, each conversation once."""
    queues_by_days: dict[float, list[str]] = {}
    for queue, days in policy.by_queue.items():
        queues_by_days.setdefault(days, []).append(queue)
    selections = [Due(now - days * DAY, tuple(sorted(queues)))
                  for days, queues in sorted(queues_by_days.items())]
    if policy.default_days is not None:
        selections.append(Due(now - policy.default_days * DAY, tuple(sorted(policy.by_queue)),
                              others=True))
    return selections


def is_due(policy: RetentionPolicy, queue: str, ended_at: float, now: float) -> bool:
    """Whether the words of a conversation in ``queue`` that ended at ``ended_at`` are
    due to be removed at ``now``."""
    days = policy.days(queue)
    return days is not None and ended_at < now - days * DAY
