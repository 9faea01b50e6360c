"""Rolling customer sentiment: a moving window mean and an EWMA over compound scores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RollingConfig:
    window: int = 5
    ewma_alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError("ewma_alpha must be in (0, 1]")


@dataclass(slots=True)
class RollingSentiment:
    config: RollingConfig
    # A list, not a deque: one per live conversation, and an empty deque alone takes
    # over 600 bytes; the window is a handful of values.
    values: list[float] = field(default_factory=list)
    ewma: float | None = None

    def add(self, compound: float) -> None:
        self.values.append(compound)
        if len(self.values) > self.config.window:
            del self.values[: len(self.values) - self.config.window]
        a = self.config.ewma_alpha
        self.ewma = compound if self.ewma is None else a * compound + (1 - a) * self.ewma

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None

    def value(self, metric: str) -> float | None:
        """The metric a rule reads: ``window`` (moving mean), ``ewma`` or ``turn`` (the
        latest customer turn alone)."""
        if metric == "turn":
            return self.last
        return self.ewma if metric == "ewma" else self.mean

    def snapshot(self) -> dict[str, Any]:
        return {"values": list(self.values), "ewma": self.ewma}

    @classmethod
    def restore(cls, config: RollingConfig, data: dict[str, Any]) -> RollingSentiment:
        return cls(config, list(data.get("values", [])[-config.window :]), data.get("ewma"))


def timeline(turns: Iterable[Mapping[str, Any]], config: RollingConfig) -> list[dict[str, Any]]:
    """The customer's sentiment turn by turn, in arrival order (``seq``): each customer
    turn's compound score with the moving mean and EWMA the rules read after it."""
    rolling = RollingSentiment(config)
    points = []
    for turn in sorted(turns, key=lambda t: t["seq"]):
        if turn["role"] != "customer":
            continue
        compound = turn["scores"]["compound"]
        rolling.add(compound)
        points.append({"seq": turn["seq"], "at": turn["at"], "compound": compound,
                       "window": rolling.mean, "ewma": rolling.ewma})
    return points
