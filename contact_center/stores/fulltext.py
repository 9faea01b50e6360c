"""Full-text search SQL, shared by the stores: a parsed query (`analytics.fulltext`) as
SQLite FTS5 MATCH text or a PostgreSQL tsquery, and the conversation filters and page
cursors both stores apply.

SQLite indexes recorded turns in the FTS5 table ``segments_fts`` (kept by triggers);
PostgreSQL in the ``segments.text_search`` tsvector column. Both read the same words:
the text with every run of characters that are neither letters nor digits made a space,
case folded, no stemming, no stop words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analytics.fulltext import AnyOf, Node, Words, terms
from contact_center.stores import FullTextFilters, FullTextQuery
from contact_center.stores.rows import OneOf, as_turn, within_clause

Mark = Callable[[int], str]
"""The driver's nth placeholder: ``?`` or ``$n``."""


def fts5_match(node: Node) -> str:
    """``node`` as an FTS5 query (its words hold letters and digits only)."""
    if isinstance(node, Words):
        return '"' + " ".join(node.words) + '"' + ("*" if node.prefix else "")
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(fts5_match(p) for p in node.parts) + ")"
    found = "(" + " AND ".join(fts5_match(p) for p in node.parts) + ")"
    for excluded in node.excluded:
        found = f"({found} NOT {fts5_match(excluded)})"
    return found


def tsquery(node: Node, args: list[Any], mark: Mark) -> str:
    """``node`` as a PostgreSQL tsquery expression; its values appended to ``args``."""
    def value(v: str) -> str:
        args.append(v)
        return mark(len(args))

    if isinstance(node, Words):
        if not node.prefix:
            return f"phraseto_tsquery('simple', {value(' '.join(node.words))})"
        last = f"to_tsquery('simple', {value(node.words[-1] + ':*')})"
        if len(node.words) == 1:
            return last
        head = f"phraseto_tsquery('simple', {value(' '.join(node.words[:-1]))})"
        return f"tsquery_phrase({head}, {last})"
    if isinstance(node, AnyOf):
        return "(" + " || ".join(tsquery(p, args, mark) for p in node.parts) + ")"
    return "(" + " && ".join([*(tsquery(p, args, mark) for p in node.parts),
                              *(f"!!{tsquery(x, args, mark)}" for x in node.excluded)]) + ")"


def conversations_matching(node: Node, leaf: Callable[[Words], str]) -> str:
    """A SELECT of the ids of conversations whose turns, together, satisfy ``node``
    (each term may be in another turn); ``leaf(words)``: the SELECT of the ids of the
    conversations with a turn holding those words, as column ``id``."""
    if isinstance(node, Words):
        return leaf(node)
    if isinstance(node, AnyOf):
        return " UNION ".join(_wrapped(conversations_matching(p, leaf)) for p in node.parts)
    found = " INTERSECT ".join(_wrapped(conversations_matching(p, leaf)) for p in node.parts)
    for excluded in node.excluded:
        found = (f"{_wrapped(found)} EXCEPT "
                 f"{_wrapped(conversations_matching(excluded, leaf))}")
    return found


def _wrapped(select: str) -> str:
    """A derived table, so that the set operators group as written on both databases."""
    return f"SELECT id FROM ({select}) AS t"


# The customer's sentiment in a conversation, from its recorded scores.
CUSTOMER_TURNS = "FROM segments x WHERE x.conversation_id = c.id AND x.role = 'customer'"
SENTIMENT = {
    "mean": f"(SELECT avg(x.compound) {CUSTOMER_TURNS})",
    # first and last as the aggregates take them: by when received, then seq
    "start": f"(SELECT x.compound {CUSTOMER_TURNS} ORDER BY x.received_at, x.seq LIMIT 1)",
    "end": f"(SELECT x.compound {CUSTOMER_TURNS} "
           "ORDER BY x.received_at DESC, x.seq DESC LIMIT 1)",
}
SENTIMENT["change"] = f"({SENTIMENT['end']} - {SENTIMENT['start']})"
HANDLE_SECONDS = "(c.ended_at - c.started_at)"


def conversation_filters(f: FullTextFilters, args: list[Any], mark: Mark, one_of: OneOf,
                         position: str) -> list[str]:
    """Conditions on the conversation ``c`` (its values appended to ``args``);
    ``position``: the driver's function finding a string in another."""
    where: list[str] = []

    def condition(sql: str, value: Any) -> None:
        if value is not None:
            args.append(value)
            where.append(sql.format(mark(len(args))))

    condition("c.queue = {}", f.queue)
    condition("c.agent_id = {}", f.agent_id)
    condition("c.channel = {}", f.channel)
    for name, expression in SENTIMENT.items():
        low, high = f.sentiment.get(name, (None, None))
        condition(f"{expression} >= {{}}", low)
        condition(f"{expression} <= {{}}", high)
    low, high = f.handle_seconds
    if low is not None or high is not None:
        where.append("c.ended_at IS NOT NULL")
    condition(f"{HANDLE_SECONDS} >= {{}}", low)
    condition(f"{HANDLE_SECONDS} <= {{}}", high)
    alerts = "SELECT 1 FROM alerts a WHERE a.conversation_id = c.id"
    if f.escalated is not None:
        where.append(f"{'' if f.escalated else 'NOT '}EXISTS ({alerts})")
    condition(f"EXISTS ({alerts} AND a.status = {{}})", f.alert_status)
    # (rows from before the alert workflow have no rule_ids: their one rule is rule_id)
    condition(f"EXISTS ({alerts} AND {position}(coalesce(a.rule_ids, ',' || a.rule_id || ','), "
              "{}) > 0)", None if f.rule_id is None else f",{f.rule_id},")
    for within in (f.within, f.team):
        if within is not None:
            sql, more = within_clause(within, "c.queue", "c.agent_id", one_of, len(args) + 1)
            where.append(sql)
            args += more
    return where


def after(keys: Sequence[tuple[str, bool]], values: Sequence[Any], args: list[Any],
          mark: Mark) -> str:
    """The condition that a row comes after the one whose sort key was ``values``, in the
    order ``keys`` (``(expression, descending)``), for keyset pages."""
    (expression, descending), *rest = keys
    args.append(values[0])
    beyond = f"{expression} {'<' if descending else '>'} {mark(len(args))}"
    if not rest:
        return beyond
    args.append(values[0])
    tie = f"{expression} = {mark(len(args))}"
    return f"({beyond} OR ({tie} AND {after(rest, values[1:], args, mark)}))"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the stores' SQL."""

    mark: Mark
    one_of: OneOf
    position: str  # the function finding a string in another
    collate: str  # after a text column sorted in code point order
    # (node, args) -> (FROM of turns ``s`` holding the index, condition, rank expression)
    matching: Callable[[Node, list[Any]], tuple[str, str, str]]


TURN_COLUMNS = ", ".join(f"s.{c}" for c in (
    "conversation_id", "segment_id", "seq", "role", "participant_id", "text", "neg", "neu",
    "pos", "compound", "started_at", "ended_at", "received_at", "late"))
MATCHES_SHOWN = 3  # matching turns shown with each conversation found
EXPORT_PAGE = 1000  # rows an export reads (and sends) at a time


def turn_keys(sort: str, d: Dialect) -> list[tuple[str, bool]]:
    """The order of turns found: best first (``relevance``) or ``newest``, then a total
    order (code points) so pages neither repeat nor skip."""
    first = [("rank", True), ("received_at", True)] if sort == "relevance" else [
        ("received_at", True), ("seq", True)]
    return [*first, (f"conversation_id{d.collate}", False), (f"segment_id{d.collate}", False)]


def turn_key(row: Any, sort: str) -> list[Any]:
    first = ["rank", "received_at"] if sort == "relevance" else ["received_at", "seq"]
    return [row[k] for k in (*first, "conversation_id", "segment_id")]


def turns(q: FullTextQuery, d: Dialect, shape: str = "page") -> tuple[str, list[Any]]:
    """The SELECT of the turns found: one page, ``all`` of them in order, or their
    ``count``."""
    args: list[Any] = []
    source, match, rank = d.matching(q.query, args)
    where = [match, "s.text IS NOT NULL", *_turn_filters(q, args, d.mark),
             *conversation_filters(q.filters, args, d.mark, d.one_of, d.position)]
    keys = turn_keys(q.sort, d)
    page = after(keys, q.after, args, d.mark) if q.after else "1 = 1"
    return _shaped(f"SELECT * FROM (SELECT {TURN_COLUMNS}, c.queue, c.agent_id, c.channel, "
                   f"{rank} AS rank FROM {source} JOIN conversations c ON "
                   f"c.id = s.conversation_id WHERE {' AND '.join(where)}) AS hits "
                   f"WHERE {page}", keys, q.limit, args, d, shape)


def conversations(q: FullTextQuery, d: Dialect, shape: str = "page") -> tuple[str, list[Any]]:
    """The SELECT of the conversations found (newest first), shaped as `turns`."""
    args: list[Any] = []

    def leaf(words: Words) -> str:
        source, match, _ = d.matching(words, args)
        more = []  # the turns that count: of this role, received before until
        for sql, value in (("s.role = {}", q.role), ("s.received_at < {}", q.until)):
            if value is not None:
                args.append(value)
                more.append(sql.format(d.mark(len(args))))
        return (f"SELECT DISTINCT s.conversation_id AS id FROM {source} "
                f"WHERE {' AND '.join([match, *more])}")

    found = conversations_matching(q.query, leaf)
    where: list[str] = []
    for sql, value in (("c.started_at >= {}", q.since), ("c.started_at < {}", q.until)):
        if value is not None:
            args.append(value)
            where.append(sql.format(d.mark(len(args))))
    where += conversation_filters(q.filters, args, d.mark, d.one_of, d.position)
    keys = [("c.started_at", True), (f"c.id{d.collate}", False)]
    if q.after:
        where.append(after(keys, q.after, args, d.mark))
    return _shaped(f"SELECT c.* FROM conversations c JOIN ({found}) AS m ON m.id = c.id "
                   f"WHERE {' AND '.join(where or ['1 = 1'])}", keys, q.limit, args, d, shape)


def found(q: FullTextQuery, d: Dialect, mode: str, shape: str) -> tuple[str, list[Any]]:
    """`turns` (``mode`` "turns") or `conversations`, shaped."""
    return (turns if mode == "turns" else conversations)(q, d, shape)


def _shaped(select: str, keys: Sequence[tuple[str, bool]], limit: int, args: list[Any],
            d: Dialect, shape: str) -> tuple[str, list[Any]]:
    if shape == "count":
        return f"SELECT count(*) AS n FROM ({select}) AS found", args
    order = f"{select} ORDER BY {', '.join(k + (' DESC' if desc else '') for k, desc in keys)}"
    if shape == "all":
        return order, args
    args.append(limit)
    return f"{order} LIMIT {d.mark(len(args))}", args


def matches(q: FullTextQuery, ids: list[str], d: Dialect) -> tuple[str, list[Any]]:
    """The SELECT of the first `MATCHES_SHOWN` turns of each of ``ids`` holding any term
    of the query, with how many do (``matched_turns``)."""
    args: list[Any] = []
    source, match, _ = d.matching(AnyOf(tuple(terms(q.query))), args)
    args.append(ids)
    where = [match, d.one_of("s.conversation_id", len(args))]
    if q.role is not None:
        args.append(q.role)
        where.append(f"s.role = {d.mark(len(args))}")
    args.append(MATCHES_SHOWN)
    return (f"SELECT * FROM (SELECT {TURN_COLUMNS}, row_number() OVER ("
            "PARTITION BY s.conversation_id ORDER BY s.seq) AS n, count(*) OVER ("
            f"PARTITION BY s.conversation_id) AS matched_turns FROM {source} "
            f"WHERE {' AND '.join(where)}) AS m WHERE n <= {d.mark(len(args))} "
            "ORDER BY conversation_id, seq"), args


def _turn_filters(q: FullTextQuery, args: list[Any], mark: Mark) -> list[str]:
    where = []
    for sql, value in (("s.received_at >= {}", q.since), ("s.received_at < {}", q.until),
                       ("s.role = {}", q.role)):
        if value is not None:
            args.append(value)
            where.append(sql.format(mark(len(args))))
    return where


def attach_matches(found: list[dict[str, Any]], rows: Sequence[Any]) -> None:
    """Give each conversation ``found`` its ``matches`` and ``matched_turns``."""
    for c in found:
        c.update(matches=[], matched_turns=0)
    index = {c["id"]: c for c in found}
    for r in rows:
        conversation = index[r["conversation_id"]]
        conversation["matches"].append(as_turn(r))
        conversation["matched_turns"] = r["matched_turns"]
