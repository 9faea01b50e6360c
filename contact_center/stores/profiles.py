"""Custom security profiles, in SQL both stores run (``?`` placeholders; PostgreSQL numbers
them). Creating, changing or deleting one counts in the access version, in its own
transaction (`contact_center.stores.directory`); the rules are `monitoring.profiles`'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitoring.permissions import Permission
from monitoring.profiles import SecurityProfile, decode_permissions, encode_permissions

COLUMNS = ("name", "permissions", "description", "created_at", "created_by", "updated_at")
LIST = "SELECT * FROM security_profiles ORDER BY name"
GET = "SELECT * FROM security_profiles WHERE name = ?"
# Either unique index refuses (the name, or the name case aside): nothing is inserted.
CREATE = (f"INSERT INTO security_profiles ({', '.join(COLUMNS)}) VALUES "
          f"({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING")
UPDATE = ("UPDATE security_profiles SET permissions = ?, description = ?, updated_at = ? "
          "WHERE name = ?")
DELETE = "DELETE FROM security_profiles WHERE name = ?"
USERS_PROFILES = "SELECT profiles FROM users WHERE username = ?"
SET_PROFILES = "UPDATE users SET profiles = ? WHERE username = ?"


def named(one_of: Callable[[str, int], str]) -> str:
    """The profiles whose name is one of a list (the first placeholder's)."""
    return f"SELECT * FROM security_profiles WHERE {one_of('name', 1)} ORDER BY name"


def holders(elements: str, limit: int) -> str:
    """The first ``limit`` users holding the profile named by the one placeholder, with
    how many hold it (``total``); ``elements``: the driver's table of a user's profile
    names, with a ``value`` column."""
    return (f"SELECT username, count(*) OVER () AS total FROM users u WHERE EXISTS "
            f"(SELECT 1 FROM {elements} WHERE e.value = ?) ORDER BY username LIMIT {limit}")


def values(profile: SecurityProfile, encode: Callable[[Any], Any]) -> tuple[Any, ...]:
    """A profile's row, in COLUMNS order."""
    return (profile.name, encode(encode_permissions(profile.permissions)),
            profile.description, profile.created_at, profile.created_by, profile.updated_at)


def changes(profile: SecurityProfile, encode: Callable[[Any], Any]) -> tuple[Any, ...]:
    """UPDATE's arguments: what a change may change, then the name."""
    return (encode(encode_permissions(profile.permissions)), profile.description,
            profile.updated_at, profile.name)


def as_profile(row: Any, decode: Callable[[Any], Any]) -> SecurityProfile:
    return SecurityProfile(row["name"], decode_permissions(decode(row["permissions"])),
                           row["description"], created_at=row["created_at"],
                           created_by=row["created_by"], updated_at=row["updated_at"])


def permissions_by_name(profiles: list[SecurityProfile]) -> dict[str, frozenset[Permission]]:
    return {p.name: p.permissions for p in profiles}
