"""Teams, the agent directory and users' scopes in both stores: the tree's rules checked
where they are saved, every change counted in the access version, and the scope filter
the stores apply to searches, alert lists and backtest history."""

from __future__ import annotations

from pathlib import Path

import pytest

from contact_center.stores import AlertQuery, HistoryQuery, SearchQuery, Store, WriteBatch
from monitoring.credentials import create_user, issue_token
from monitoring.scope import (
    Agent,
    Scope,
    Team,
    TeamExists,
    TeamInUse,
    TreeError,
    UnknownTeam,
    Within,
)
from tests.test_audit_store import on_store
from tests.test_search_semantics import meta, turn


def test_teams_keep_their_tree_and_every_change_counts(backend: str, tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        version = await store.access_version()
        assert await store.save_team(Team("emea", "EMEA"), create=True)
        assert await store.save_team(Team("billing", "Billing", "emea"), create=True)
        assert await store.access_version() == version + 2
        with pytest.raises(TeamExists):
            await store.save_team(Team("emea", "again"), create=True)
        with pytest.raises(TreeError, match="own ancestors"):
            await store.save_team(Team("emea", "EMEA", "billing"), create=False)
        with pytest.raises(TreeError, match="no parent"):
            await store.save_team(Team("x", "X", "nowhere"), create=True)
        assert not await store.save_team(Team("nowhere", "N"), create=False)
        assert await store.save_team(Team("billing", "Billing desk", "emea"), create=False)
        assert await store.access_version() == version + 3  # refusals count nothing

        assert await store.put_agent(Agent("ann", "Ann", "billing"))
        assert not await store.put_agent(Agent("ann", "Ann B.", "billing"))  # changed
        with pytest.raises(UnknownTeam):
            await store.put_agent(Agent("bob", "Bob", "nowhere"))
        directory = await store.load_directory()
        assert directory.version == await store.access_version() == version + 5
        assert directory.agents == {"ann": Agent("ann", "Ann B.", "billing")}
        assert directory.tree.teams["billing"] == Team("billing", "Billing desk", "emea")

        with pytest.raises(TreeError, match="teams under it"):
            await store.delete_team("emea")
        with pytest.raises(TeamInUse, match="agents ann"):
            await store.delete_team("billing")
        await store.save_team(Team("apac", "APAC"), create=True)
        user = await create_user(store, "sup", ["CallCenterManager"])
        assert await store.set_scope("sup", Scope(frozenset({"apac"}), frozenset({"vip"})))
        with pytest.raises(TeamInUse, match="the scope of sup"):
            await store.delete_team("apac")
        with pytest.raises(UnknownTeam):
            await store.set_scope("sup", Scope(frozenset({"nowhere"}), frozenset()))
        assert not await store.set_scope("nobody", Scope())
        stored = await store.get_user(username="sup")
        assert stored is not None and stored.scope == Scope(frozenset({"apac"}),
                                                            frozenset({"vip"}))
        assert await store.set_scope("sup", Scope())
        assert (await store.get_user(user_id=user.id)).scope == Scope()  # type: ignore[union-attr]
        assert await store.delete_team("apac")
        assert not await store.delete_team("apac")

        before = await store.access_version()
        token, _ = await issue_token(store, user)
        assert await store.set_disabled("sup", True)
        assert await store.revoke_token(token.id)
        assert await store.access_version() == before + 2  # (a new token changes nothing)

    on_store(backend, tmp_path, work)


def test_the_stores_filter_on_a_scope(backend: str, tmp_path: Path) -> None:
    async def work(store: Store) -> None:
        await store.write(WriteBatch(conversations={
            "a": (meta("a", "billing", "ann"), {}), "b": (meta("b", "sales", "bob"), {}),
            "c": (meta("c", "vip", "cat"), {})},
            segments=[turn(c, "1", 1, "my invoice", 100.0) for c in "abc"]))

        async def searched(within: Within | None) -> list[str]:
            found = await store.search(SearchQuery(terms=["invoice"], within=within))
            return sorted(h["conversation_id"] for h in found)

        async def history(within: Within | None) -> list[str]:
            found = await store.load_history(HistoryQuery(within=within, with_text=True))
            return sorted(c["id"] for c in found.conversations)

        for read in (searched, history):
            assert await read(None) == ["a", "b", "c"]
            assert await read(Within(frozenset({"vip"}), frozenset({"bob"}))) == ["b", "c"]
            assert await read(Within()) == []
        assert await store.list_alerts(AlertQuery(within=Within())) == []

    on_store(backend, tmp_path, work)
