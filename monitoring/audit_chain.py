"""The audit log's hash chain (docs/audit.md#the-chain): each entry's hash covers the
previous entry's hash and its own fields in a canonical form, so changing an entry, or
removing one, breaks the chain there; `verify` walks it in id order and names the first
entry that does not hold, and why."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from monitoring.audit import AuditEntry

GENESIS = "0" * 64  # the previous hash of entry 1
# What an entry's hash covers: every field but the two hashes.
HASHED = ("id", "at", "actor", "action", "target_type", "target_id", "result", "source",
          "request_id", "details")


def canonical(entry: AuditEntry) -> bytes:
    """The hashed fields as one JSON text: keys sorted, no spaces, ASCII only (the same
    bytes whichever store kept the entry)."""
    fields = {name: getattr(entry, name) for name in HASHED}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """sha256 over the previous entry's hash, a newline, and the entry's canonical form
    (hex)."""
    prefix = prev_hash.encode("utf-8", "replace") + b"\n"
    return hashlib.sha256(prefix + canonical(entry)).hexdigest()


def link(entries: Sequence[AuditEntry], last_id: int, last_hash: str) -> list[AuditEntry]:
    """``entries`` numbered and chained after the entry ``last_id`` whose hash is
    ``last_hash`` (0 and GENESIS: none yet)."""
    linked = []
    for number, entry in enumerate(entries, last_id + 1):
        chained = replace(entry, id=number, prev_hash=last_hash)
        chained.hash = last_hash = entry_hash(last_hash, chained)
        linked.append(chained)
    return linked


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain does not hold: the first entry concerned (for removed entries,
    the first missing id), and why."""

    id: int
    why: str


@dataclass(frozen=True, slots=True)
class Verdict:
    count: int  # entries checked
    last_id: int  # 0: none
    last_hash: str  # GENESIS: none
    broken: Break | None  # None: intact


class ChainCheck:
    """Checks a chain fed in id order, one entry at a time (constant memory, whatever its
    length). ``head``: a (id, hash) saved earlier; the chain must still hold it, which
    also catches entries cut off its end."""

    def __init__(self, head: tuple[int, str] | None = None) -> None:
        self.head = head
        self.count, self.last_id, self.last_hash = 0, 0, GENESIS
        self.broken: Break | None = None

    def feed(self, entry: AuditEntry) -> Break | None:
        if self.broken is None:
            self.broken = self._check(entry)
            self.count += 1
            self.last_id, self.last_hash = entry.id or 0, entry.hash or ""
        return self.broken

    def _check(self, entry: AuditEntry) -> Break | None:
        expected = self.last_id + 1
        number = entry.id or 0
        if number > expected:
            missing = f"entry {expected} is" if number == expected + 1 else \
                f"entries {expected} to {number - 1} are"
            return Break(expected, f"{missing} missing: removed")
        if number < expected:
            return Break(number, f"entry {number} comes after entry {self.last_id}: "
                                 "duplicated or out of order")
        if entry.hash != entry_hash(entry.prev_hash or "", entry):
            return Break(number, "its fields do not match its hash: the entry was changed")
        if entry.prev_hash != self.last_hash:
            before = "the chain's start" if number == 1 else f"entry {self.last_id}'s hash"
            return Break(number, f"its prev_hash is not {before}: an entry before it was "
                                 "changed (its hash recomputed), or entries were removed "
                                 "and the rest renumbered")
        if self.head is not None and number == self.head[0] and entry.hash != self.head[1]:
            return Break(number, "its hash is not the saved head's: the chain was rewritten "
                                 "up to here")
        return None

    def verdict(self) -> Verdict:
        """The outcome once every entry was fed."""
        broken = self.broken
        if broken is None and self.head is not None and self.last_id < self.head[0]:
            broken = Break(self.last_id + 1, f"the chain ends at entry {self.last_id}, before "
                                             f"the saved head {self.head[0]}: entries at its "
                                             "end were removed")
        return Verdict(self.count, self.last_id, self.last_hash, broken)


def verify(entries: Iterable[AuditEntry], head: tuple[int, str] | None = None) -> Verdict:
    """Check a whole chain, given in id order (see `ChainCheck`)."""
    check = ChainCheck(head)
    for entry in entries:
        if check.feed(entry) is not None:
            break
    return check.verdict()
