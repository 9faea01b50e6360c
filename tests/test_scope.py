"""Scope (monitoring/scope.py): team trees of at most five levels, and which
conversations a user's teams and queues cover, against a plain walk up the tree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitoring.scope import MAX_DEPTH, Agent, Directory, Scope, Team, TeamTree, TreeError


@st.composite
def forests(draw: st.DrawFn) -> list[Team]:
    """Teams whose parents come earlier in the list (so no cycle), any depth."""
    teams: list[Team] = []
    for i in range(draw(st.integers(0, 14))):
        parent = draw(st.sampled_from([None, *(t.id for t in teams)]))
        teams.append(Team(f"t{i}", f"Team {i}", parent))
    return teams


def tree_of(teams: list[Team]) -> TeamTree | None:
    """The tree, or None for a forest deeper than a tree may be."""
    if max((len(ancestry(teams, t.id)) for t in teams), default=0) > MAX_DEPTH:
        return None
    return TeamTree(teams)


def ancestry(teams: list[Team], team_id: str) -> list[str]:
    """The team and its ancestors, walking up the parents."""
    parent_of = {t.id: t.parent for t in teams}
    chain, at = [], team_id
    while at is not None:
        chain.append(at)
        at = parent_of[at]
    return chain


@given(forests())
def test_a_forest_is_a_tree_exactly_when_no_team_is_too_deep(teams: list[Team]) -> None:
    deepest = max((len(ancestry(teams, t.id)) for t in teams), default=0)
    if deepest > MAX_DEPTH:
        with pytest.raises(TreeError, match="levels deep"):
            TeamTree(teams)
        return
    tree = TeamTree(teams)
    assert all(tree.depth(t.id) == len(ancestry(teams, t.id)) for t in teams)


@given(forests(), st.data())
def test_below_is_every_team_with_a_chosen_ancestor(teams: list[Team],
                                                    data: st.DataObject) -> None:
    tree = tree_of(teams)
    if tree is None:
        return
    ids = [t.id for t in teams]
    chosen = data.draw(st.sets(st.sampled_from(ids))) if ids else set()
    assert tree.below(chosen | {"no-such-team"}) == {
        t for t in ids if set(ancestry(teams, t)) & chosen}


@given(forests(), st.data())
def test_a_scope_covers_its_queues_and_its_teams_agents(teams: list[Team],
                                                        data: st.DataObject) -> None:
    tree = tree_of(teams)
    if tree is None:
        return
    ids = [t.id for t in teams]
    queues = ["billing", "sales", "vip"]
    team_of = {f"agent{i}": data.draw(st.sampled_from(ids)) for i in range(4)} if ids else {}
    scope = Scope(
        teams=data.draw(st.none() | st.frozensets(st.sampled_from(ids) if ids else st.nothing())),
        queues=data.draw(st.none() | st.frozensets(st.sampled_from(queues))))
    directory = Directory(teams, [Agent(a, a, t) for a, t in team_of.items()])
    within = directory.within(scope, own_agent="me")
    for queue in [*queues, None]:
        for agent in [*team_of, "unknown-agent", "me", None]:
            team = team_of.get(agent) if agent else None
            expected = scope.everything or (queue in (scope.queues or ())) or (
                team is not None and bool(set(ancestry(teams, team)) & (scope.teams or set()))
            ) or agent == "me"
            covered = within is None or within.covers(queue, agent)
            assert covered == expected, (scope, queue, agent)


def test_a_cycle_an_unknown_parent_and_a_sixth_level_are_refused() -> None:
    tree = TeamTree([Team("a", "A"), Team("b", "B", "a"), Team("c", "C", "b")])
    with pytest.raises(TreeError, match="their own ancestors"):
        tree.with_team(Team("a", "A", "c"))
    with pytest.raises(TreeError, match="no parent team 'x'"):
        tree.with_team(Team("d", "D", "x"))
    deep = tree.with_team(Team("d", "D", "c")).with_team(Team("e", "E", "d"))
    assert deep.depth("e") == MAX_DEPTH
    with pytest.raises(TreeError, match="6 levels deep"):
        deep.with_team(Team("f", "F", "e"))


def test_a_team_with_teams_under_it_cannot_be_removed() -> None:
    tree = TeamTree([Team("a", "A"), Team("b", "B", "a")])
    with pytest.raises(TreeError, match="has teams under it"):
        tree.without("a")
    assert set(tree.without("b").without("a").teams) == set()


def test_no_scope_is_everything_and_an_empty_one_is_nothing() -> None:
    directory = Directory([Team("a", "A")], [Agent("ann", "Ann", "a")])
    assert directory.within(Scope()) is None
    nothing = directory.within(Scope(teams=frozenset(), queues=frozenset()))
    assert nothing is not None and not nothing.covers("billing", "ann")


def test_a_scope_round_trips_through_json() -> None:
    for scope in (Scope(), Scope(frozenset({"t"}), frozenset()),
                  Scope(frozenset(), frozenset({"billing", "vip"}))):
        assert Scope.from_json(scope.as_json()) == scope
