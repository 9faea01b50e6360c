"""Keyword phrases: one automaton for every phrase of a rule set, linear in the text.

A regular-expression alternation of many long phrases costs phrases times text length on
every turn; an Aho-Corasick automaton (pyahocorasick) reads a text once whatever the
phrases. Phrases match as whole words, in any case, with any white space between their
words: the text and the phrases are lower-cased, white space runs become one space and
every word (letters, digits, ``_``, ``*``) is wrapped in two marker characters, so a
phrase can only match where words start and end.

What a set may hold is bounded (`budget`): the characters of its distinct phrases, and
how many phrases can end on the same word (each is a whole-word suffix of a longer one,
"manager" of "your manager"), which bounds the matches a turn can yield.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from analytics import signals

MAX_CHARACTERS = 200_000  # of a set's distinct phrases
MAX_ENDING_TOGETHER = 10  # phrases of a set that can end on one word

_START, _END = "\x01", "\x02"  # a word's first and last character, once marked
_FROM_TEXT = str.maketrans(signals.QUOTES | {ord(_START): " ", ord(_END): " "})
_WORD = re.compile(r"[\w*]+")
_SPACES = re.compile(r"\s+")
_NEGATION_LOOKBACK = 3 * signals.NEGATION_CHARS  # marked text: markers take room too


def normalized(phrase: str) -> str:
    """A phrase as it matches and as rules report it: lower case, one space between
    words, straight apostrophes."""
    return " ".join(phrase.translate(signals.QUOTES).lower().split())


def _marked(text: str) -> str:
    return _WORD.sub(_START + r"\g<0>" + _END, text)


@dataclass(frozen=True, slots=True)
class _Entry:
    phrase: str  # normalized
    length: int  # of its marked form
    edge_before: bool  # starts with a mark (not a letter): the text's must not be in a word
    edge_after: bool  # ... ends with one


class PhraseIndex:
    """Every phrase of a rule set in one automaton; `find` reads a text once."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = frozenset(normalized(p) for p in phrases)
        # A first look for each phrase's longest word anywhere: most turns hold none, and
        # are done without marking their words.
        self._words = ahocorasick.Automaton()
        for phrase in self.phrases:
            word = max(phrase.split(), key=len)
            self._words.add_word(word, word)
        self._automaton = ahocorasick.Automaton()
        for phrase in self.phrases:
            marked = _marked(phrase)
            self._automaton.add_word(marked, _Entry(
                phrase, len(marked), not marked.startswith(_START),
                not marked.endswith(_END)))
        if self.phrases:
            self._words.make_automaton()
            self._automaton.make_automaton()

    def find(self, text: str) -> dict[str, bool]:
        """The phrases in ``text``, first seen first, each with whether one of its
        occurrences is not negated ("I do not want to cancel" negates "cancel")."""
        if not self.phrases:
            return {}
        lowered = signals.translated(text, _FROM_TEXT).lower()
        if next(self._words.iter(lowered), None) is None:
            return {}
        # One character per white space run, a line break where the run had one (it ends
        # a clause for negation); phrases match across either.
        marked = _marked(_SPACES.sub(lambda m: "\n" if "\n" in m.group() else " ", lowered))
        found: dict[str, bool] = {}
        starts: dict[str, int] = {}
        for end, entry in self._automaton.iter(marked.replace("\n", " ")):
            start = end - entry.length + 1
            if entry.edge_before and start and marked[start - 1] == _END:
                continue  # right after a word: not where a phrase may start
            if entry.edge_after and end + 1 < len(marked) and marked[end + 1] == _START:
                continue
            if found.get(entry.phrase):
                continue  # already found, not negated
            before = marked[max(0, start - _NEGATION_LOOKBACK):start]
            before = before.replace(_START, "").replace(_END, "")
            found[entry.phrase] = not signals.negated(before, len(before))
            starts.setdefault(entry.phrase, start)
        return dict(sorted(found.items(), key=lambda item: starts[item[0]]))

    def ending_together(self) -> tuple[int, str]:
        """The most phrases that can end on one word, and the longest of them."""
        most, longest = 0, ""
        for phrase in self.phrases:
            marked = _marked(phrase)
            ending = sum(1 for end, _ in self._automaton.iter(marked) if end == len(marked) - 1)
            if ending > most:
                most, longest = ending, phrase
        return most, longest


def budget(index: PhraseIndex) -> str | None:
    """Why ``index`` is over the budget a rule set's phrases have, or None."""
    characters = sum(len(p) for p in index.phrases)
    if characters > MAX_CHARACTERS:
        return (f"the rules' distinct phrases hold {characters:,} characters; at most "
                f"{MAX_CHARACTERS:,} are allowed")
    ending, phrase = index.ending_together()
    if ending > MAX_ENDING_TOGETHER:
        return (f"{ending} phrases can end on the same word (each ends {phrase!r}); at "
                f"most {MAX_ENDING_TOGETHER} may, so a turn's matches stay few")
    return None
