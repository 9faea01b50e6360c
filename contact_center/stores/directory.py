"""Teams, the agent directory, users' scopes and the access version, in SQL both stores
run (``?`` placeholders; PostgreSQL numbers them).

Every change to who may see or do what (a team, an agent, a scope, a profile, a user, a
token) adds one to the access version in its own transaction. API nodes poll that one row
(`contact_center.access`): when it moves they re-read the directory and re-check their
open sockets. The checks themselves are `monitoring.scope.Directory`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitoring.scope import Agent, Directory, Scope, Team

TEAMS = "SELECT id, name, parent FROM teams ORDER BY id"
AGENTS = "SELECT id, name, team FROM agents ORDER BY id"
SCOPES = "SELECT username, scope FROM users WHERE scope IS NOT NULL"
VERSION = "SELECT version FROM access_version WHERE id = 1"
BUMP = "UPDATE access_version SET version = version + 1 WHERE id = 1"
PUT_TEAM = ("INSERT INTO teams (id, name, parent) VALUES (?, ?, ?) ON CONFLICT (id) DO "
            "UPDATE SET name = excluded.name, parent = excluded.parent")
DELETE_TEAM = "DELETE FROM teams WHERE id = ?"
PUT_AGENT = ("INSERT INTO agents (id, name, team) VALUES (?, ?, ?) ON CONFLICT (id) DO "
             "UPDATE SET name = excluded.name, team = excluded.team")
SET_SCOPE = "UPDATE users SET scope = ? WHERE username = ?"


def directory(teams: list[Any], agents: list[Any], version: int) -> Directory:
    return Directory([Team(r["id"], r["name"], r["parent"]) for r in teams],
                     [Agent(r["id"], r["name"], r["team"]) for r in agents], version)


def scopes(rows: list[Any], decode: Callable[[Any], Any]) -> dict[str, Scope]:
    return {r["username"]: Scope.from_json(decode(r["scope"])) for r in rows}
