"""The hot-path JSON codec writes what the standard library reads, and takes over what
orjson refuses instead of failing."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from monitoring import codec

documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(documents)
def test_round_trips_and_reads_like_the_standard_library(document: object) -> None:
    text = codec.dumps(document)
    assert codec.loads(text) == document
    assert json.loads(text) == document
    assert codec.loads(json.dumps(document)) == document


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    huge = {"n": 2**70, 1: "integer key"}
    assert json.loads(codec.dumps(huge)) == {"n": 2**70, "1": "integer key"}
    lone = {"text": "a\ud800b"}  # a lone surrogate: not UTF-8, escaped as JSON allows
    assert codec.loads(codec.dumps(lone)) == lone
    assert math.isnan(codec.loads('{"x": NaN}')["x"])  # as earlier versions wrote it
