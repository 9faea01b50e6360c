"""The full-text query language (analytics.fulltext): parsing, highlights and snippets;
and every store finding exactly what a plain reading of the query over the words of real
conversations finds."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.fulltext import (
    All,
    AnyOf,
    Node,
    QueryError,
    Words,
    highlights,
    parse,
    snippet,
    words_of,
)
from contact_center.stores import FullTextQuery, SegmentRow, WriteBatch
from tests.conftest import SHARED_DATA, make_store, run


def test_the_grammar() -> None:
    assert parse("refund") == Words(("refund",))
    assert parse("Refund NOW") == All((Words(("refund",)), Words(("now",))))
    assert parse("a AND b OR c") == AnyOf((All((Words(("a",)), Words(("b",)))), Words(("c",))))
    assert parse("a (b OR c)") == All((Words(("a",)), AnyOf((Words(("b",)), Words(("c",))))))
    assert parse('"not working" -fixed NOT solved') == All(
        (Words(("not", "working")),), (Words(("fixed",)), Words(("solved",))))
    assert parse("refund*") == Words(("refund",), prefix=True)
    assert parse('"my acc"*') == Words(("my", "acc"), prefix=True)
    assert parse("e-mail don't") == All((Words(("e", "mail")), Words(("don", "t"))))
    assert parse("and or not") == All((Words(("and",)), Words(("or",)), Words(("not",))))
    assert parse("ÉCOLE") == Words(("école",))
    assert parse('refund -"credit card" -(fee OR charge)') == All(
        (Words(("refund",)),),
        (Words(("credit", "card")), AnyOf((Words(("fee",)), Words(("charge",))))))


@pytest.mark.parametrize(("q", "why"), [
    ("", "empty"), ("NOT a", "only excludes"), ("-a -b", "only excludes"),
    ("a OR", "OR needs a term"), ("OR a", "OR needs a term"), ("a AND", "AND needs"),
    ("a OR -b", "ANDed"), ("a - b", "holds no word"), ("NOT NOT a", "NOT NOT"),
    ("(a", "not closed"),
    ("a)", "without its '('"), ('"a', "quote is not closed"), ("()", "empty"),
    ("a*b", "can only end"), ("x*", "at least 2"), ("...", "no word"),
    ('""', "no word"), ("NOT", "NOT needs"),
    (" ".join("w" * 33), "at most 32"), (" ".join(["w"] * 33), "at most 32"),
    ("(" * 9 + "a" + ")" * 9, "deeper than 8"),
])
def test_a_query_that_cannot_be_run_says_why(q: str, why: str) -> None:
    with pytest.raises(QueryError, match=why.replace("(", r"\(")):
        parse(q)


def test_highlights_are_the_terms_found_merged_and_sorted() -> None:
    text = "My e-mail, my EMAIL: refunds refunded; not refund"
    assert highlights(text, parse("refund*")) == [(21, 28), (29, 37), (43, 49)]
    assert highlights(text, parse("e-mail OR email")) == [(3, 9), (14, 19)]
    assert highlights(text, parse('"my em"* -refund')) == [(11, 19)]
    assert highlights(text, parse("nothing")) == []


def test_a_snippet_is_cut_where_words_end_around_the_first_highlight() -> None:
    text = " ".join(f"word{i}" for i in range(100)) + " refund " + "tail " * 50
    spans = highlights(text, parse("refund"))
    cut, inside = snippet(text, spans)
    assert cut.startswith("…") and cut.endswith("…") and len(cut) <= 162
    (start, end), = inside
    assert cut[start:end] == "refund"
    assert not cut[1].isspace() and cut[1:].split()[0].startswith("word")
    assert snippet("short refund", [(6, 12)]) == ("short refund", [(6, 12)])


@given(st.text(max_size=300), st.sampled_from(["refund", "a", "my acc*", "e-mail", "x OR y"]))
def test_highlights_always_lie_on_words_of_the_text(text: str, q: str) -> None:
    node = parse(q)
    spans = highlights(text, node)
    assert spans == sorted(spans)
    for (_, end), (following, _) in itertools.pairwise(spans):
        assert end < following
    for start, end in spans:
        assert words_of(text[start:end])
    cut, inside = snippet(text, spans, width=40)
    for start, end in inside:
        assert 0 <= start < end <= len(cut)


# -- every store against a plain reading of the query -----------------------------------

CORPUS = SHARED_DATA / "twitter-care" / "conversations.jsonl"


def holds(node: Node, words: list[str]) -> bool:
    """Whether the words of one turn hold ``node``: the reference the stores must agree
    with."""
    if isinstance(node, Words):
        n = len(node.words)
        return any(all((words[i + k].startswith(w) if node.prefix and k == n - 1
                        else words[i + k] == w) for k, w in enumerate(node.words))
                   for i in range(len(words) - n + 1))
    if isinstance(node, AnyOf):
        return any(holds(p, words) for p in node.parts)
    return all(holds(p, words) for p in node.parts) and not any(
        holds(x, words) for x in node.excluded)


def random_query(rng: random.Random, vocabulary: list[str], depth: int = 0) -> str:
    roll = rng.random()
    if depth < 2 and roll < 0.3:
        parts = [random_query(rng, vocabulary, depth + 1) for _ in range(rng.randint(2, 3))]
        joined = f" {rng.choice(['AND', 'OR', ''])} ".join(parts).replace("  ", " ")
        return f"({joined})"
    word = rng.choice(vocabulary)
    if roll < 0.45:
        return f'"{word} {rng.choice(vocabulary)}"'
    if roll < 0.6 and len(word) > 3:
        return word[: rng.randint(2, len(word) - 1)] + "*"
    return word


@pytest.mark.skipif(not CORPUS.is_file(), reason="needs ../shared/data (twitter-care)")
def test_every_store_finds_what_the_query_says_on_real_conversations(
        backend: str, tmp_path: Path) -> None:
    import json

    conversations = [json.loads(line) for line in CORPUS.open()][:300]
    turns = [(c["conversation_id"], i, t["text"]) for c in conversations
             for i, t in enumerate(c["turns"], 1)]
    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _, _, text in turns:
        for w in words_of(text):
            counts[w] = counts.get(w, 0) + 1
    vocabulary = sorted(w for w, n in counts.items() if n >= 3)
    queries = []
    while len(queries) < 120:
        q = random_query(rng, vocabulary)
        if rng.random() < 0.3:
            q += f" -{rng.choice(vocabulary)}"
        try:
            queries.append((q, parse(q)))
        except QueryError:
            continue

    async def check() -> list[tuple[str, Any, Any]]:
        store = make_store(backend, tmp_path)
        await store.open()
        try:
            await store.write(WriteBatch(
                conversations={c["conversation_id"]: (_meta(c["conversation_id"]), {})
                               for c in conversations},
                segments=[SegmentRow(cid, str(seq), seq, "customer", "p", text,
                                     {"neg": 0, "neu": 1, "pos": 0, "compound": 0},
                                     None, None, float(seq)) for cid, seq, text in turns]))
            wrong = []
            for q, node in queries:
                expected = {(cid, str(seq)) for cid, seq, text in turns
                            if holds(node, words_of(text))}
                found = await store.search_turns(FullTextQuery(query=node, limit=10_000))
                got = {(h["conversation_id"], h["segment_id"]) for h in found}
                if got != expected:
                    wrong.append((q, sorted(expected - got)[:3], sorted(got - expected)[:3]))
            return wrong
        finally:
            await store.close()

    assert run(check()) == []
    assert len(queries) == 120


def _meta(cid: str) -> dict[str, Any]:
    return {"id": cid, "channel": "chat", "queue": "q", "agent_id": "a",
            "customer": {"id": None, "name": None, "email": None}, "recording": "all",
            "attributes": {}, "status": "live", "started_at": 0.0, "ended_at": None,
            "updated_at": 0.0}
