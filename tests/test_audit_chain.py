"""The audit log's hash chain (monitoring.audit_chain): any change or removal of an entry
is found, and named; entries are bounded whatever a client sent (monitoring.audit)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.audit import (
    DETAIL_CHARS,
    DETAIL_ITEMS,
    TEXT_CHARS,
    AuditEntry,
    bounded,
    make_entry,
)
from monitoring.audit_chain import GENESIS, canonical, entry_hash, link, verify


def entries(count: int, after: tuple[int, str] = (0, GENESIS)) -> list[AuditEntry]:
    made = [make_entry(1_767_261_600.0 + i, f"user{i % 3}", "transcript.read", "conversation",
                       f"c-{i}", "ok", "10.0.0.1", f"r{i}", {"n": i, "terms": ["a", "b"]})
            for i in range(count)]
    return link(made, *after)


def test_a_chain_as_written_holds() -> None:
    chain = entries(5)
    assert [e.id for e in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    verdict = verify(chain)
    assert verdict.broken is None and verdict.count == 5
    assert (verdict.last_id, verdict.last_hash) == (5, chain[-1].hash)
    assert verify([]).broken is None and verify([]).count == 0


def test_appending_in_batches_makes_the_same_chain_as_at_once() -> None:
    whole = entries(6)
    first = link([replace(e, id=None, prev_hash=None, hash=None) for e in whole[:2]], 0,
                 GENESIS)
    rest = link([replace(e, id=None, prev_hash=None, hash=None) for e in whole[2:]], 2,
                first[-1].hash or "")
    assert first + rest == whole


CHANGES = [
    ("actor", "someone-else"), ("action", "transcript.search"), ("target_id", "c-99"),
    ("result", "forbidden"), ("source", "10.9.9.9"), ("request_id", "forged"),
    ("at", 1.0), ("details", {"n": 99, "terms": ["a", "b"]}), ("target_type", None),
]


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_changed_field_is_found_at_its_entry(field: str, value: object) -> None:
    chain = entries(5)
    chain[2] = replace(chain[2], **{field: value})
    broken = verify(chain).broken
    assert broken is not None and broken.id == 3 and "was changed" in broken.why


def test_a_change_with_its_hash_recomputed_is_found_at_the_next_entry() -> None:
    chain = entries(5)
    changed = replace(chain[2], actor="someone-else")
    chain[2] = replace(changed, hash=entry_hash(changed.prev_hash or "", changed))
    broken = verify(chain).broken
    assert broken is not None and broken.id == 4 and "prev_hash" in broken.why


@pytest.mark.parametrize(("removed", "first_missing", "words"), [
    ([1], 1, "entry 1 is missing"), ([2], 2, "entry 2 is missing"),
    ([2, 3, 4], 2, "entries 2 to 4 are missing")])
def test_removed_entries_are_found_by_their_ids(removed: list[int], first_missing: int,
                                                words: str) -> None:
    chain = [e for e in entries(6) if e.id not in removed]
    broken = verify(chain).broken
    assert broken is not None and broken.id == first_missing and words in broken.why


def test_a_removal_with_the_rest_renumbered_is_found_by_its_link() -> None:
    chain = entries(5)
    del chain[1]
    renumbered = [replace(e, id=n) for n, e in enumerate(chain, 1)]
    renumbered = [replace(e, hash=entry_hash(e.prev_hash or "", e)) for e in renumbered]
    broken = verify(renumbered).broken
    assert broken is not None and broken.id == 2 and "prev_hash" in broken.why


def test_a_duplicated_entry_is_found() -> None:
    chain = entries(3)
    broken = verify([*chain[:2], chain[1], chain[2]]).broken
    assert broken is not None and broken.id == 2 and "out of order" in broken.why


def test_a_cut_off_tail_is_found_only_against_a_saved_head() -> None:
    chain = entries(6)
    head = (6, chain[-1].hash or "")
    assert verify(chain[:4]).broken is None  # (nothing in the chain itself says so)
    broken = verify(chain[:4], head).broken
    assert broken is not None and broken.id == 5 and "before the saved head 6" in broken.why
    assert verify(chain, head).broken is None
    assert verify(entries(8)[:8], (6, chain[-1].hash or "")).broken is None  # grew since


def test_a_chain_rewritten_whole_is_found_against_a_saved_head() -> None:
    chain = entries(4)
    forged = link([replace(e, id=None, actor="x") for e in chain], 0, GENESIS)
    assert verify(forged).broken is None
    broken = verify(forged, (4, chain[-1].hash or "")).broken
    assert broken is not None and broken.id == 4 and "saved head" in broken.why


@given(st.integers(1, 12), st.data())
@settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
def test_any_single_change_or_removal_is_found_where_it_was(count: int,
                                                            data: st.DataObject) -> None:
    chain = entries(count)
    index = data.draw(st.integers(0, count - 1))
    if data.draw(st.booleans()):
        text = data.draw(st.text(max_size=20))
        chain[index] = replace(chain[index], actor=(chain[index].actor or "") + text + "!")
        expected = index + 1
    else:
        del chain[index]
        if index == count - 1:  # the tail: only a saved head tells (above)
            assert verify(chain).broken is None
            return
        expected = index + 1
    broken = verify(chain).broken
    assert broken is not None and broken.id == expected


def test_the_canonical_form_is_stable_and_ascii() -> None:
    entry = entries(1)[0]
    text = canonical(entry)
    assert text == canonical(replace(entry, details=dict(reversed(entry.details.items()))))
    assert json.loads(text)["id"] == 1 and text.isascii()
    assert "hash" not in json.loads(text) and "prev_hash" not in json.loads(text)
    unicode = replace(entry, actor="zoë")
    assert canonical(unicode).isascii() and entry_hash(GENESIS, unicode) != entry.hash


def test_entries_are_bounded_and_storable_whatever_was_sent() -> None:
    entry = make_entry(1.0, "a\x00b", "x" * 1000, None, "\ud800id", "ok", None, None, {
        "long": "y" * 10_000, "many": list(range(1000)), "deep": {"a": {"b": {"c": {"d": 1}}}},
        "odd": float("nan"), "big": 2**80, "set": {"b", "a"}, 3: "key"})
    assert entry.actor == "a\ufffdb" and entry.target_id == "?id"
    assert len(entry.action) == TEXT_CHARS
    assert len(entry.details["long"]) == DETAIL_CHARS
    assert len(entry.details["many"]) == DETAIL_ITEMS
    assert entry.details["deep"] == {"a": {"b": {"c": "(nested too deep)"}}}
    assert entry.details["odd"] is None and entry.details["big"] == str(2**80)
    assert entry.details["set"] == ["a", "b"] and entry.details["3"] == "key"
    canonical(link([entry], 0, GENESIS)[0])  # (hashable: JSON, no NaN)
    assert bounded({"k": "v" * 5}) == {"k": "vvvvv"}
