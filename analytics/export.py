"""Exports (pure): what was found as flat rows, and rows as CSV that spreadsheets open
safely."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

TURN_COLUMNS = ("conversation_id", "segment_id", "seq", "role", "participant_id", "at",
                "started_at", "ended_at", "queue", "agent_id", "channel", "compound", "neg",
                "neu", "pos", "text")
CONVERSATION_COLUMNS = ("id", "channel", "queue", "agent_id", "status", "started_at",
                        "ended_at", "recording", "matched_turns")
# A cell a spreadsheet would run as a formula (CSV injection): kept as text instead.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_row(found: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """A turn (``mode`` "turns") or a conversation found, as one flat row."""
    if mode == "turns":
        scores = found["scores"]
        return {c: scores[c] if c in scores else found[c] for c in TURN_COLUMNS}
    return {c: found[c] for c in CONVERSATION_COLUMNS}


def csv_lines(rows: Iterable[Iterable[Any]]) -> str:
    """Rows as CSV (RFC 4180 quoting, CRLF ends); a text that starts like a formula gets
    a leading apostrophe, so a spreadsheet shows it rather than running it."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def flattened(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested row as one level, its keys joined by dots: ``{"first": {"mean": 1}}``
    becomes ``{"first.mean": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            flat |= flattened(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_table(rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Nested rows as a header and a row each, the header being every key seen in the
    order first seen (a key a row lacks is an empty cell)."""
    flat = [flattened(r) for r in rows]
    header = list(dict.fromkeys(k for r in flat for k in r))
    return [header, *[[r.get(k) for k in header] for r in flat]]
