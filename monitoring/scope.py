"""What part of the contact center a user may see: teams in a hierarchy, queues, or all.

Teams form a tree of at most MAX_DEPTH levels (like Amazon Connect's agent hierarchy
L1-L5); each agent belongs to one team. A conversation is in a user's scope when its
current agent is in one of the user's teams or below, or its current queue is one of
the user's queues; a user with no scope sees everything. Pure: the stores keep the teams
and the directory, the routes and sockets ask `Scope.covers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_DEPTH = 5


class TreeError(ValueError):
    """A team set that is not a tree of at most MAX_DEPTH levels."""


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
class Scope:
    """A user's part of the contact center: teams (and below) and queues; None for both
    means everything."""

    teams: frozenset[str] | None = None
    queues: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.teams is None and self.queues is None

    def resolve(self, tree: TeamTree) -> ResolvedScope:
        """The scope with its teams expanded to every team under them, for `covers`."""
        return ResolvedScope(self.everything, tree.below(self.teams or ()),
                             self.queues or frozenset())


@dataclass(frozen=True, slots=True)
class ResolvedScope:
    everything: bool
    teams: frozenset[str]
    queues: frozenset[str]

    def covers(self, queue: str | None, agent_id: str | None,
               team_of: Mapping[str, str]) -> bool:
        """Whether a conversation now in ``queue`` and handled by ``agent_id`` (whose team
        ``team_of`` gives) is in scope."""
        if self.everything:
            return True
        if queue is not None and queue in self.queues:
            return True
        team = team_of.get(agent_id) if agent_id is not None else None
        return team is not None and team in self.teams
