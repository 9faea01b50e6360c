"""Full-text search queries (pure): the query language, and where a query's words are in
a text (for highlighting).

A query is words, "quoted phrases" and ``prefix*`` terms joined by ``AND`` (also implied
by a space), ``OR`` and ``NOT`` (or a leading ``-``), grouped with parentheses. Words are
what lies between characters that are neither letters nor digits, compared without case:
``e-mail`` is the phrase "e mail", ``doesn't`` the phrase "doesn t". No stemming and no
stop words, so every store finds the same turns (``refund*`` finds "refunded").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

MAX_QUERY_TERMS = 32  # words, phrases and prefixes in one query
MAX_DEPTH = 8  # nested groups
MIN_PREFIX = 2  # letters before a `*`: a shorter prefix matches most of the index
SNIPPET_CHARS = 160

WORD = re.compile(r"[^\W_]+")
# A "-" right before a quote or a parenthesis excludes that phrase or group: it is NOT.
_TOKEN = re.compile(r'\s+|\(|\)|(?P<not>-)(?=["(])|"[^"]*"?|[^\s()"]+')


@dataclass(frozen=True, slots=True)
class Words:
    """A word or a phrase (its words in a row); ``prefix``: the last word is a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class All:
    """Every part holds; ``excluded``: none of these does."""

    parts: tuple[Node, ...]
    excluded: tuple[Node, ...] = ()


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Union[Words, All, AnyOf]  # noqa: UP007 - a runtime alias used by the dataclasses


class QueryError(ValueError):
    """A query that cannot be run; the message says why and where."""


def words_of(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def parse(q: str) -> Node:
    """The query ``q`` as a tree, or `QueryError`."""
    parser = _Parser(["NOT" if m["not"] else m.group() for m in _TOKEN.finditer(q)
                      if not m.group().isspace()])
    node = parser.any_of(0)
    if parser.more():
        raise QueryError(f"unexpected {parser.peek()!r}: a ')' without its '('")
    if isinstance(node, _Not):
        raise QueryError("the query only excludes; give at least one word to find")
    if parser.terms > MAX_QUERY_TERMS:
        raise QueryError(f"the query has {parser.terms} terms; give at most "
                         f"{MAX_QUERY_TERMS} (words, phrases and prefixes)")
    return node


def terms(node: Node) -> list[Words]:
    """Every word, phrase and prefix the query looks for (excluded ones not)."""
    if isinstance(node, Words):
        return [node]
    return [t for part in node.parts for t in terms(part)]


@dataclass(frozen=True, slots=True)
class _Not:
    part: Node


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.at, self.terms = tokens, 0, 0

    def more(self) -> bool:
        return self.at < len(self.tokens)

    def peek(self) -> str:
        return self.tokens[self.at]

    def take(self) -> str:
        self.at += 1
        return self.tokens[self.at - 1]

    def any_of(self, depth: int) -> Node | _Not:
        parts = [self.all_of(depth)]
        while self.more() and self.peek() == "OR":
            self.take()
            if not self.more() or self.peek() in ("OR", ")"):
                raise QueryError("OR needs a term on both sides")
            parts.append(self.all_of(depth))
        if len(parts) == 1:
            return parts[0]
        if any(isinstance(p, _Not) for p in parts):
            raise QueryError("OR joins what to find; an excluded term (NOT, -) must be "
                             "ANDed with something found")
        return AnyOf(tuple(p for p in parts if not isinstance(p, _Not)))

    def all_of(self, depth: int) -> Node | _Not:
        found: list[Node] = []
        excluded: list[Node] = []
        while self.more() and self.peek() not in ("OR", ")"):
            if self.peek() == "AND":
                self.take()
                if not self.more() or self.peek() in ("OR", ")", "AND"):
                    raise QueryError("AND needs a term on both sides")
                continue
            part = self.unary(depth)
            if isinstance(part, _Not):
                excluded.append(part.part)
            else:
                found.append(part)
        if not found and not excluded:
            raise QueryError("OR needs a term on both sides" if self.more() and
                             self.peek() == "OR" else "the query or a ( ) is empty: give "
                             "a word to find")
        if not found:
            if len(excluded) > 1:
                raise QueryError("the query only excludes; give at least one word to find")
            return _Not(excluded[0])
        if len(found) == 1 and not excluded:
            return found[0]
        return All(tuple(found), tuple(excluded))

    def unary(self, depth: int) -> Node | _Not:
        token = self.peek()
        if token == "NOT" or (token.startswith("-") and len(token) > 1):
            if token == "NOT":
                self.take()
                if not self.more() or self.peek() in ("AND", "OR", ")"):
                    raise QueryError("NOT needs a term after it")
            else:
                self.tokens[self.at] = token[1:]
            part = self.unary(depth)
            if isinstance(part, _Not):
                raise QueryError("NOT NOT: say what to find instead")
            return _Not(part)
        return self.atom(depth)

    def atom(self, depth: int) -> Node | _Not:
        token = self.take()
        if token == "(":
            if depth + 1 > MAX_DEPTH:
                raise QueryError(f"groups nest deeper than {MAX_DEPTH}")
            node = self.any_of(depth + 1)
            if not self.more() or self.take() != ")":
                raise QueryError("a '(' is not closed")
            return node
        if token == ")":
            raise QueryError("a ')' without its '('")
        if token.startswith('"'):
            if len(token) < 2 or not token.endswith('"'):
                raise QueryError(f"a quote is not closed: {token}")
            body, prefix = token[1:-1], False
            if self.more() and self.peek() == "*":
                self.take()
                prefix = True
        else:
            body, prefix = token.removesuffix("*"), token.endswith("*")
            if "*" in body:
                raise QueryError(f"{token!r}: a '*' can only end a word (a prefix)")
        words = tuple(words_of(body))
        if not words:
            raise QueryError(f"{token!r} holds no word (letters or digits) to find")
        if prefix and len(words[-1]) < MIN_PREFIX:
            raise QueryError(f"{token!r}: a prefix needs at least {MIN_PREFIX} letters")
        self.terms += 1
        return Words(words, prefix)


def highlights(text: str, node: Node) -> list[tuple[int, int]]:
    """Where the query's terms (not the excluded ones) are in ``text``: sorted, merged
    ``(start, end)`` character offsets."""
    spans = [(m.start(), m.end(), m.group().lower()) for m in WORD.finditer(text)]
    found: list[tuple[int, int]] = []
    for term in terms(node):
        n = len(term.words)
        for i in range(len(spans) - n + 1):
            if all(_matches(spans[i + k][2], word, term.prefix and k == n - 1)
                   for k, word in enumerate(term.words)):
                found.append((spans[i][0], spans[i + n - 1][1]))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _matches(token: str, word: str, prefix: bool) -> bool:
    return token.startswith(word) if prefix else token == word


def snippet(text: str, spans: list[tuple[int, int]],
            width: int = SNIPPET_CHARS) -> tuple[str, list[tuple[int, int]]]:
    """At most about ``width`` characters of ``text`` around its first highlight, cut
    where words end and marked with "…" where cut; the highlights inside it, moved."""
    if len(text) <= width:
        return text, spans
    first = spans[0][0] if spans else 0
    start = max(0, first - width // 3)
    end = min(len(text), start + width)
    start = max(0, min(start, end - width))
    while 0 < start < first and not text[start - 1].isspace():
        start += 1
    while end < len(text) and end > start and not text[end].isspace():
        end -= 1
    if end <= start:
        end = min(len(text), start + width)
    head, tail = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
    shift = len(head) - start
    inside = [(max(s, start) + shift, min(e, end) + shift) for s, e in spans
              if s < end and e > start]
    return head + text[start:end] + tail, inside
