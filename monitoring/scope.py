"""What part of the contact center a user may see: teams in a hierarchy, queues, or all.

Teams form a tree of at most MAX_DEPTH levels (like Amazon Connect's agent hierarchy
L1-L5); each agent belongs to one team. A conversation is in a user's scope when its
current agent is in one of the user's teams or below, or its current queue is one of
the user's queues; a user with no scope sees everything. Pure: the stores keep the teams
and the directory; `Directory.within` resolves a scope, and reads ask `Within.covers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_DEPTH = 5


class TreeError(ValueError):
    """A team set that is not a tree of at most MAX_DEPTH levels."""


class TeamExists(ValueError):
    """A new team whose id is taken."""


class UnknownTeam(LookupError):
    """A team named (by an agent or a scope) that does not exist."""


class TeamInUse(ValueError):
    """A team that agents belong to or users are scoped to cannot be deleted."""


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    parent: str | None = None


class TeamTree:
    """Teams as a checked tree: every parent known, no cycle, at most MAX_DEPTH levels."""

    def __init__(self, teams: Iterable[Team]) -> None:
        self.teams = {team.id: team for team in teams}
        self._children: dict[str | None, list[str]] = {}
        for team in self.teams.values():
            if team.parent is not None and team.parent not in self.teams:
                raise TreeError(f"team {team.id!r}: no parent team {team.parent!r}")
            self._children.setdefault(team.parent, []).append(team.id)
        self._depth: dict[str, int] = {}
        level, depth = list(self._children.get(None, [])), 1
        while level:
            if depth > MAX_DEPTH:
                raise TreeError(f"team {level[0]!r} is {depth} levels deep; at most "
                                f"{MAX_DEPTH} are allowed")
            for team_id in level:
                self._depth[team_id] = depth
            level = [c for team_id in level for c in self._children.get(team_id, [])]
            depth += 1
        if len(self._depth) != len(self.teams):  # unreachable from a root: a cycle
            cycle = sorted(set(self.teams) - set(self._depth))
            raise TreeError(f"teams {', '.join(map(repr, cycle))} are their own ancestors")

    def depth(self, team_id: str) -> int:
        """1 for a team without a parent."""
        return self._depth[team_id]

    def below(self, team_ids: Iterable[str]) -> frozenset[str]:
        """These teams and every team under them (unknown ids are left out)."""
        found: set[str] = set()
        level = [t for t in team_ids if t in self.teams]
        while level:
            found.update(level)
            level = [c for t in level for c in self._children.get(t, []) if c not in found]
        return frozenset(found)

    def with_team(self, team: Team) -> TeamTree:
        """The tree with ``team`` added or changed (raises TreeError if that breaks it)."""
        return TeamTree([*(t for t in self.teams.values() if t.id != team.id), team])

    def without(self, team_id: str) -> TeamTree:
        """The tree without a team that has no team under it."""
        if self._children.get(team_id):
            raise TreeError(f"team {team_id!r} has teams under it; move or delete them first")
        return TeamTree(t for t in self.teams.values() if t.id != team_id)


@dataclass(frozen=True, slots=True)
class Agent:
    """An entry of the agent directory: the id connectors put in ``agent_id``."""

    id: str
    name: str
    team: str


@dataclass(frozen=True, slots=True)
class Scope:
    """A user's part of the contact center: teams (and below) and queues; None for both
    means everything."""

    teams: frozenset[str] | None = None
    queues: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.teams is None and self.queues is None

    def as_json(self) -> dict[str, list[str]] | None:
        if self.everything:
            return None
        return {"teams": sorted(self.teams or ()), "queues": sorted(self.queues or ())}

    @classmethod
    def from_json(cls, value: dict[str, list[str]] | None) -> Scope:
        if value is None:
            return cls()
        return cls(frozenset(value.get("teams") or ()), frozenset(value.get("queues") or ()))


@dataclass(frozen=True, slots=True)
class Within:
    """Conversations now in one of ``queues`` or handled by one of ``agents``: what a
    scope covers, resolved against the directory (the stores filter on it too)."""

    queues: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()

    def covers(self, queue: str | None, agent_id: str | None) -> bool:
        return (queue is not None and queue in self.queues) or (
            agent_id is not None and agent_id in self.agents)

    def includes(self, other: Within | None) -> bool:
        """Whether everything ``other`` covers (None: everything) this covers too."""
        return other is not None and other.queues <= self.queues and \
            other.agents <= self.agents


class Directory:
    """Teams and the agent directory, as of one access version (the stores count every
    change to who may see what; a newer version means re-read)."""

    def __init__(self, teams: Iterable[Team] = (), agents: Iterable[Agent] = (),
                 version: int = 0) -> None:
        self.tree = TeamTree(teams)
        self.agents = {agent.id: agent for agent in agents}
        self.version = version
        self._within: dict[tuple[Scope, str | None], Within | None] = {}

    def within(self, scope: Scope, own_agent: str | None = None) -> Within | None:
        """What ``scope`` covers (None: everything): its queues, and the agents of its
        teams and below, with the user's own agent id."""
        key = (scope, own_agent)
        if key not in self._within:
            if len(self._within) >= MAX_CACHED_SCOPES:
                self._within.clear()
            self._within[key] = None if scope.everything else self._resolve(scope, own_agent)
        return self._within[key]

    def check_team(self, team: Team, create: bool) -> bool:
        """Whether ``team`` may be saved (False: updating a team that does not exist);
        raises TeamExists or TreeError."""
        if (team.id in self.tree.teams) == create:
            if create:
                raise TeamExists(f"team {team.id!r} exists")
            return False
        self.tree.with_team(team)
        return True

    def check_removal(self, team_id: str, scopes: dict[str, Scope]) -> bool:
        """Whether the team exists to be deleted (``scopes``: the users' with one);
        raises TreeError (teams under it) or TeamInUse (its agents, its users)."""
        if team_id not in self.tree.teams:
            return False
        self.tree.without(team_id)
        agents = sorted(a.id for a in self.agents.values() if a.team == team_id)
        users = sorted(u for u, scope in scopes.items() if team_id in (scope.teams or ()))
        if agents or users:
            held = [f"agents {', '.join(agents[:10])}" if agents else "",
                    f"the scope of {', '.join(users[:10])}" if users else ""]
            raise TeamInUse(f"team {team_id!r} is in use by {' and '.join(filter(None, held))}"
                            "; move them first")
        return True

    def check_teams_exist(self, team_ids: Iterable[str]) -> None:
        unknown = sorted(set(team_ids) - set(self.tree.teams))
        if unknown:
            raise UnknownTeam(f"no team {', '.join(map(repr, unknown))}")

    def _resolve(self, scope: Scope, own_agent: str | None) -> Within:
        teams = self.tree.below(scope.teams or ())
        agents = {a.id for a in self.agents.values() if a.team in teams}
        if own_agent is not None:
            agents.add(own_agent)
        return Within(scope.queues or frozenset(), frozenset(agents))


MAX_CACHED_SCOPES = 1000  # distinct (scope, agent) pairs resolved per directory version
