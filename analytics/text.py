"""What every text the service keeps must be, checked where it comes in: the wire
protocol's events and the rules' phrases."""

from __future__ import annotations

from typing import Any


def has_nul(value: Any) -> bool:
    """Whether a string (or one inside a dict or list) holds a NUL character, which no
    store can keep (PostgreSQL text refuses it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False
