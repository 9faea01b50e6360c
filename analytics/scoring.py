"""Where sentiment is scored: vaderSentiment, optionally with a domain lexicon overlay.

With no overlay the scores are exactly ``vaderSentiment``'s. An overlay file adjusts word
valences on top of VADER's lexicon, for vocabulary a general lexicon misreads in support
conversations ("blocked", "error", "problem" are routine there, not anger).

Two engines give the same numbers: "fast" (the default, ``analytics.fast_vader``: a
re-implementation several times faster, with a cache of short texts) and "reference"
(vaderSentiment's own ``SentimentIntensityAnalyzer``), kept selectable to compare with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from analytics.fast_vader import FastAnalyzer

MAX_VALENCE = 4.0  # VADER's lexicon runs from -4 to +4

Engine = Literal["fast", "reference"]
ENGINES: tuple[Engine, ...] = ("fast", "reference")

# The overlay the service applies unless told not to (CC_SUPPORT_LEXICON=false).
SUPPORT_LEXICON = Path(__file__).parent / "lexicons" / "support.txt"


@dataclass(frozen=True, slots=True)
class Scores:
    neg: float
    neu: float
    pos: float
    compound: float

    def as_dict(self) -> dict[str, float]:
        return {"neg": self.neg, "neu": self.neu, "pos": self.pos, "compound": self.compound}


class OverlayError(ValueError):
    """A lexicon overlay file is malformed; the message names the line."""


def load_overlay(path: Path) -> dict[str, float]:
    """Parse an overlay: one ``word<whitespace>valence`` per line, valence in -4..4;
    blank lines, lines starting with ``#`` and `` # comments`` after a value are ignored.
    Words are matched lower-cased."""
    overlay: dict[str, float] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if not line or line.startswith("#"):
            continue
        word, _, value = line.rpartition("\t") if "\t" in line else line.rpartition(" ")
        word = word.strip().lower()
        try:
            valence = float(value)
        except ValueError:
            valence = math.nan
        if not word or not math.isfinite(valence) or abs(valence) > MAX_VALENCE:
            raise OverlayError(f"{path}:{number}: expected 'word valence' with a valence "
                               f"from -4 to 4, got {raw!r}")
        overlay[word] = valence
    return overlay


class Scorer:
    """Scores texts; thread-safe."""

    def __init__(self, overlay: Mapping[str, float] | None = None,
                 engine: Engine = "fast") -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown scoring engine {engine!r}; expected one of {ENGINES}")
        self.engine = engine
        self.overlay = dict(overlay or {})
        self._fast: FastAnalyzer | None = None
        self._reference: SentimentIntensityAnalyzer | None = None
        if engine == "fast":
            self._fast = FastAnalyzer()
            self._fast.update_lexicon(self.overlay)
        else:
            self._reference = SentimentIntensityAnalyzer()
            self._reference.lexicon.update(self.overlay)

    def score(self, text: str) -> Scores:
        if self._fast is not None:
            neg, neu, pos, compound = self._fast.polarity_tuple(text)
            return Scores(neg=neg, neu=neu, pos=pos, compound=compound)
        assert self._reference is not None
        s = self._reference.polarity_scores(text)
        return Scores(neg=s["neg"], neu=s["neu"], pos=s["pos"], compound=s["compound"])

    def score_many(self, texts: Iterable[str]) -> list[Scores]:
        return [self.score(t) for t in texts]


_default = Scorer()


def support_scorer() -> Scorer:
    """Scores as the service does by default: VADER with the support overlay."""
    return Scorer(load_overlay(SUPPORT_LEXICON))


def score(text: str) -> Scores:
    return _default.score(text)


def score_many(texts: Iterable[str]) -> list[Scores]:
    """Score a batch with plain VADER."""
    return _default.score_many(texts)
