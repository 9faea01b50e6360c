"""Transcript search: how a query's text becomes terms (pure)."""

from __future__ import annotations

import re

_QUOTED_OR_WORD = re.compile(r'"([^"]+)"|(\S+)')
MAX_TERMS = 32  # in one query: more is answered 422 (SQLite passes each to one function)


def parse_terms(q: str) -> list[str]:
    """Split a query into terms at whitespace; "quoted phrases" stay whole."""
    return [phrase or word for phrase, word in _QUOTED_OR_WORD.findall(q)]
