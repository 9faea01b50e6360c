"""JSON on the hot path (stored state, live messages, stream entries): orjson, several
times faster than the standard library's encoder and decoder, with the same documents.

Output is compact text. The standard library stays the fallback for what orjson refuses
(integers beyond 64 bits, lone surrogates; NaN and Infinity, which earlier versions
wrote, when decoding): never a new failure. (orjson writes a NaN as null; no value the
service stores can be one: scores are finite and inputs are validated.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # as json.dumps: {1: x} is written {"1": x}


def dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Decode one document (keys it repeats become one string: orjson caches keys)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
