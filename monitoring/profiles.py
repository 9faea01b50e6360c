"""Custom security profiles: their names, and who may grant what (pure).

A custom profile is a named set of permissions, held by users as the built-in ones are
(`monitoring.permissions.PROFILES`). The rules, checked here and applied by the routes,
the CLI and the stores (inside the transaction that writes):

- a name matches `NAME_PATTERN` and is not a built-in's, case aside (``admin`` cannot
  pass for ``Admin``); two custom profiles' names differ case aside too;
- built-in profiles cannot be changed or deleted; a profile a user holds cannot be
  deleted;
- nobody grants a permission they lack: a profile created or changed with permissions
  its author does not hold, or a user given profiles with such permissions, is refused
  (`CannotGrant`). Taking permissions away needs nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from monitoring.permissions import PROFILES, Permission

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
MAX_DESCRIPTION = 500
MAX_HOLDERS_NAMED = 10  # a refused deletion names at most this many holders

BUILTIN_DESCRIPTIONS = {
    "Admin": "Every permission.",
    "CallCenterManager": "Supervisors: the live views, monitoring, whisper and barge, "
                         "every alert and managing them, search and transcripts.",
    "Agent": "Alerts on the agent's own conversations (set the user's agent_id).",
    "Analyst": "Search recorded transcripts and read them.",
    "Connector": "Stream conversation events in.",
}
_RESERVED = {name.lower(): name for name in PROFILES}


class ProfileError(ValueError):
    """A profile change the rules refuse."""


class InvalidProfileName(ProfileError):
    """A name outside `NAME_PATTERN`."""


class ProfileExists(ProfileError):
    """The name is taken, by a built-in or another custom profile (case aside)."""


class BuiltinProfile(ProfileError):
    """Built-in profiles cannot be changed or deleted."""


class UnknownProfile(ProfileError):
    """Profile names that are neither built-in nor stored."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(f"unknown profile(s): {', '.join(self.names)}; built-in: "
                         f"{', '.join(PROFILES)}, or a custom one "
                         "(GET /v1/security-profiles, contact-center profiles list)")


class ProfileInUse(ProfileError):
    """A profile some users hold cannot be deleted."""

    def __init__(self, name: str, holders: Sequence[str], count: int) -> None:
        self.name, self.holders, self.count = name, list(holders), count
        more = f" and {count - len(holders)} more" if count > len(holders) else ""
        super().__init__(f"profile {name!r} is held by {count} user(s): "
                         f"{', '.join(holders)}{more}; take it from them first")


class CannotGrant(ProfileError):
    """Granting permissions one does not hold."""

    def __init__(self, missing: Iterable[Permission]) -> None:
        self.missing = sorted(set(missing))
        super().__init__("you cannot grant permissions you do not hold: "
                         f"{', '.join(self.missing)}")


@dataclass(frozen=True, slots=True)
class SecurityProfile:
    name: str
    permissions: frozenset[Permission]
    description: str = ""
    builtin: bool = False
    created_at: float | None = None  # None: built-in
    created_by: str | None = None  # a username; None: built-in, or made with the CLI
    updated_at: float | None = None


BUILTIN: dict[str, SecurityProfile] = {
    name: SecurityProfile(name, permissions, BUILTIN_DESCRIPTIONS[name], builtin=True)
    for name, permissions in PROFILES.items()}

ProfileCheck = Callable[[Sequence[str], Mapping[str, frozenset[Permission]]], None]
"""Checks a change of a user's profiles inside the transaction that makes it: given the
profiles the user held (none for a new user) and the permissions of the stored custom
profiles the new list names; raises to refuse (`assignment_check`)."""


def is_builtin(name: str) -> bool:
    return name in PROFILES


def check_name(name: str) -> None:
    """Raise unless ``name`` may name a new custom profile (taken names aside)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidProfileName(f"a profile name is a letter then up to 63 letters, "
                                 f"digits, '_', '.' or '-' ({NAME_PATTERN}), not {name!r}")
    builtin = _RESERVED.get(name.lower())
    if builtin is not None:
        raise ProfileExists(f"{name!r} is the built-in profile {builtin!r}'s name")


def decode_permissions(values: Iterable[str]) -> frozenset[Permission]:
    """Stored permission names as permissions; one this version does not know grants
    nothing (fail closed)."""
    known = {p.value for p in Permission}
    return frozenset(Permission(v) for v in values if v in known)


def encode_permissions(permissions: Iterable[Permission]) -> list[str]:
    return sorted(p.value for p in permissions)


def custom_names(profiles: Iterable[str]) -> list[str]:
    """The names among ``profiles`` that are not built-in (to look up in the store)."""
    return sorted({name for name in profiles if not is_builtin(name)})


def check_known(profiles: Iterable[str], stored: Iterable[str]) -> None:
    """Raise `UnknownProfile` for names neither built-in nor in ``stored``."""
    unknown = set(custom_names(profiles)) - set(stored)
    if unknown:
        raise UnknownProfile(unknown)


def check_grant(actor: frozenset[Permission], granted: Iterable[Permission]) -> None:
    """Raise `CannotGrant` for the permissions in ``granted`` that ``actor`` lacks."""
    missing = set(granted) - actor
    if missing:
        raise CannotGrant(missing)


def new_profile(name: str, permissions: Iterable[Permission], description: str,
                actor: frozenset[Permission], by: str | None, now: float) -> SecurityProfile:
    """A custom profile ``by`` creates (checked: its name, and what it grants)."""
    check_name(name)
    granted = frozenset(permissions)
    check_grant(actor, granted)
    return SecurityProfile(name, granted, description, created_at=now, created_by=by,
                           updated_at=now)


def profile_change(actor: frozenset[Permission], permissions: Iterable[Permission] | None,
                   description: str | None,
                   now: float) -> Callable[[SecurityProfile], SecurityProfile]:
    """The change of a stored profile (None: left as it is), for the store to apply to the
    profile as it is in its transaction: the permissions it gains must be ``actor``'s."""
    def change(profile: SecurityProfile) -> SecurityProfile:
        if profile.builtin:
            raise BuiltinProfile(f"{profile.name!r} is built-in: it cannot be changed")
        granted = profile.permissions if permissions is None else frozenset(permissions)
        check_grant(actor, granted - profile.permissions)
        return replace(profile, permissions=granted, updated_at=now,
                       description=profile.description if description is None
                       else description)

    return change


def assignment_check(actor: frozenset[Permission], profiles: Sequence[str]) -> ProfileCheck:
    """A `ProfileCheck` for giving a user ``profiles``: every permission of the profiles
    they gain (those they did not hold) must be ``actor``'s."""
    def check(held: Sequence[str], custom: Mapping[str, frozenset[Permission]]) -> None:
        check_grant(actor, granted_by(profiles, held, custom))

    return check


def granted_by(profiles: Sequence[str], held: Sequence[str],
               custom: Mapping[str, frozenset[Permission]]) -> frozenset[Permission]:
    """The permissions of the profiles in ``profiles`` but not in ``held``."""
    granted: set[Permission] = set()
    for name in set(profiles) - set(held):
        granted |= PROFILES.get(name) or custom.get(name) or frozenset()
    return frozenset(granted)
