"""Teams (a hierarchy of at most five levels) and the agent directory: what users'
scopes are made of. Permission `users-manage`; only a user without a scope may change
them (a scoped one could otherwise widen their own)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from contact_center.api.audited import audited
from contact_center.api.auth import require
from contact_center.api.openapi import COMMON, Closed, error
from contact_center.protocol import Model
from monitoring.permissions import Permission, Principal
from monitoring.scope import Agent, Team, TeamExists, TeamInUse, TreeError, UnknownTeam

router = APIRouter(tags=["admin"], responses=COMMON)

ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
UNSCOPED_ONLY = error("cannot_grant: only a user without a scope may change teams, agents "
                      "and scopes")


class TeamInfo(Closed):
    id: str
    name: str
    parent: str | None = Field(description="The team above; null for a top-level team.")


class Teams(Closed):
    teams: list[TeamInfo]


class NewTeam(Model):
    id: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    parent: str | None = Field(default=None, max_length=64)


class TeamChange(Model):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    parent: str | None = Field(default=None, max_length=64, description=(
        "Move the team under another; null makes it top-level; absent leaves it."))


class AgentEntry(Model):
    name: str = Field(min_length=1, max_length=200)
    team: str = Field(min_length=1, max_length=64)


class AgentInfo(Closed):
    id: str = Field(description="The id connectors put in a conversation's agent_id.")
    name: str
    team: str


class Agents(Closed):
    agents: list[AgentInfo]


def unscoped(principal: Principal) -> None:
    if principal.within is not None:
        raise HTTPException(403, {"type": "error", "code": "cannot_grant",
                                  "message": "only a user without a scope may change teams, "
                                             "agents and scopes"})


def _refused(exc: Exception) -> HTTPException:
    code, status = {TeamExists: ("team_exists", 409), TeamInUse: ("team_in_use", 409),
                    UnknownTeam: ("unknown_team", 422)}.get(type(exc), ("invalid_team", 422))
    return HTTPException(status, {"type": "error", "code": code, "message": str(exc)})


def _unknown(team_id: str) -> HTTPException:
    return HTTPException(404, {"type": "error", "code": "unknown_team",
                               "message": f"no team {team_id}"})


def _team(team: Team) -> dict[str, Any]:
    return {"id": team.id, "name": team.name, "parent": team.parent}


async def _save(request: Request, principal: Principal, team: Team, create: bool) -> bool:
    async with audited(request, principal, "team.create" if create else "team.change",
                       "team", team.id, {"name": team.name, "parent": team.parent}):
        unscoped(principal)
        try:
            saved: bool = await request.app.state.store.save_team(team, create)
        except (TeamExists, TreeError) as exc:
            raise _refused(exc) from None
        if not saved:
            raise _unknown(team.id)
    request.app.state.access.changed()
    return saved


@router.post("/v1/teams", status_code=201, response_model=TeamInfo, responses={
    403: UNSCOPED_ONLY, 409: error("team_exists: the id is taken"),
    422: error("invalid_team: no such parent, a cycle, or more than five levels")})
async def add_team(request: Request, body: NewTeam,
                   principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    team = Team(body.id, body.name, body.parent)
    await _save(request, principal, team, create=True)
    return _team(team)


@router.get("/v1/teams", response_model=Teams)
async def list_teams(request: Request,
                     _: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    teams = (await request.app.state.store.load_directory()).tree.teams.values()
    return {"teams": [_team(t) for t in sorted(teams, key=lambda t: t.id)]}


@router.get("/v1/teams/{team_id}", response_model=TeamInfo,
            responses={404: error("unknown_team: no such team")})
async def get_team(request: Request, team_id: str,
                   _: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    team = (await request.app.state.store.load_directory()).tree.teams.get(team_id)
    if team is None:
        raise _unknown(team_id)
    return _team(team)


@router.patch("/v1/teams/{team_id}", response_model=TeamInfo, responses={
    403: UNSCOPED_ONLY, 404: error("unknown_team: no such team"),
    422: error("invalid_team: no such parent, a cycle, or more than five levels")})
async def change_team(request: Request, team_id: str, change: TeamChange,
                      principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    """Rename a team or move it (with the teams under it)."""
    team = (await request.app.state.store.load_directory()).tree.teams.get(team_id)
    if team is None:
        raise _unknown(team_id)
    changed = Team(team_id, change.name or team.name,
                   change.parent if "parent" in change.model_fields_set else team.parent)
    await _save(request, principal, changed, create=False)  # (404 if deleted meanwhile)
    return _team(changed)


@router.delete("/v1/teams/{team_id}", status_code=204, response_class=Response, responses={
    403: UNSCOPED_ONLY, 404: error("unknown_team: no such team"),
    409: error("team_in_use: teams are under it, agents in it, or users scoped to it")})
async def delete_team(request: Request, team_id: str,
                      principal: Principal = require(Permission.USERS_MANAGE)) -> None:
    async with audited(request, principal, "team.delete", "team", team_id):
        unscoped(principal)
        try:
            deleted = await request.app.state.store.delete_team(team_id)
        except (TeamInUse, TreeError) as exc:
            raise HTTPException(409, {"type": "error", "code": "team_in_use",
                                      "message": str(exc)}) from None
        if not deleted:
            raise _unknown(team_id)
    request.app.state.access.changed()


@router.put("/v1/agents/{agent_id}", response_model=AgentInfo, responses={
    201: {"model": AgentInfo, "description": "Added to the directory."},
    403: UNSCOPED_ONLY, 422: error("unknown_team: no such team")})
async def put_agent(request: Request, agent_id: str, entry: AgentEntry, response: Response,
                    principal: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    """Add an agent to the directory, or change their name or team: the conversations
    they handle then count in the new team's scope."""
    if len(agent_id) > 128:
        raise HTTPException(422, {"type": "error", "code": "validation_error",
                                  "message": "an agent id is at most 128 characters"})
    async with audited(request, principal, "agent.put", "agent", agent_id,
                       {"name": entry.name, "team": entry.team}):
        unscoped(principal)
        try:
            added = await request.app.state.store.put_agent(
                Agent(agent_id, entry.name, entry.team))
        except UnknownTeam as exc:
            raise _refused(exc) from None
    request.app.state.access.changed()
    response.status_code = 201 if added else 200
    return {"id": agent_id, "name": entry.name, "team": entry.team}


@router.get("/v1/agents", response_model=Agents)
async def list_agents(request: Request,
                      _: Principal = require(Permission.USERS_MANAGE)) -> dict[str, Any]:
    """The agent directory (live agent metrics are `GET /v1/live/agents`)."""
    agents = (await request.app.state.store.load_directory()).agents.values()
    return {"agents": [{"id": a.id, "name": a.name, "team": a.team}
                       for a in sorted(agents, key=lambda a: a.id)]}
