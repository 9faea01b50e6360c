"""Where sentiment is scored: vaderSentiment, one text at a time or a batch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

_analyzer = SentimentIntensityAnalyzer()


@dataclass(frozen=True, slots=True)
class Scores:
    neg: float
    neu: float
    pos: float
    compound: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(text: str) -> Scores:
    s = _analyzer.polarity_scores(text)
    return Scores(neg=s["neg"], neu=s["neu"], pos=s["pos"], compound=s["compound"])


def score_many(texts: Iterable[str]) -> list[Scores]:
    """Score a batch; the pipeline runs this off the event loop."""
    return [score(t) for t in texts]
