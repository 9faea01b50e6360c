"""Users' passwords: hashed with Argon2id (pwdlib), checked in about the same time
whether or not the user exists or has a password.

Hashing takes a fraction of a second of CPU on purpose: it runs on a worker thread
(`asyncio.to_thread`), never on the event loop. Neither a password nor its hash is ever
logged or answered.
"""

from __future__ import annotations

import asyncio
import functools

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 12  # characters: a passphrase, not a PIN
MAX_LENGTH = 1024  # characters: hashing cost must not grow with what a client sends

HASHER = PasswordHash((Argon2Hasher(),))  # argon2-cffi's defaults (RFC 9106's second choice)


class WeakPassword(ValueError):
    """A password refused before it is hashed (too short or too long)."""


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")


async def hash_password(password: str) -> str:
    """The hash to store; raises `WeakPassword`."""
    check_strength(password)
    return await asyncio.to_thread(HASHER.hash, password)


@functools.cache
def _dummy(hasher: PasswordHash) -> str:
    return hasher.hash("not anyone's password, compared to take the time a real one takes")


async def verify(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the ``stored`` hash. Without one (no such user, or no
    password) a dummy hash is checked, so the answer takes as long, and is False."""

    def check() -> bool:
        if stored is None or len(password) > MAX_LENGTH:
            HASHER.verify(password[:MAX_LENGTH], _dummy(HASHER))
            return False
        try:
            return bool(HASHER.verify(password, stored))
        except Exception:  # a hash this version cannot read: as good as none
            return False

    return await asyncio.to_thread(check)
