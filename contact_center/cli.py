"""The command line: serve, manage users and tokens, verify and export the audit log,
simulate traffic."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import signal
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from pydantic import ValidationError

from analytics.rules import RuleSet
from analytics.scoring import OverlayError, load_overlay
from contact_center import __version__, logs, service_metrics, stopping
from contact_center.settings import (
    ConfigError,
    Settings,
    config_file_in_use,
    effective,
    load_settings,
    masked,
    read_config_file,
    source_of,
)
from contact_center.stores import Store, is_postgres, open_store
from monitoring import codec
from monitoring.audit import OK, entry_fields, make_entry
from monitoring.audit_chain import ChainCheck, Verdict
from monitoring.credentials import Token, User, create_user, issue_token
from monitoring.passwords import WeakPassword, check_strength, hash_password
from monitoring.permissions import Permission
from monitoring.profiles import (
    BUILTIN,
    ProfileError,
    SecurityProfile,
    new_profile,
    profile_change,
)
from monitoring.scope import Agent, Scope, Team, TeamExists, TeamInUse, TreeError, UnknownTeam

T = TypeVar("T")

def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta["config_file"] = value


config_option = click.option(
    "--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
    expose_value=False, is_eager=True, callback=_remember_config,
    help="TOML settings file (see docs/operations.md#configuration) [default: $CC_CONFIG]")


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """--db, and --config (which may name the database, among others)."""
    command = click.option(
        "--db", "database", default=None,
        help="SQLite database file, or a postgresql:// URL [default: $CC_DATABASE or "
             "./contact-center.db]")(command)
    return config_option(command)


redis_option = click.option(
    "--redis", default=None,
    help="redis:// URL: run scale-out, events through Redis Streams [default: $CC_REDIS; "
         "without it everything runs in one process]")


def partition_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--partitions and --namespace: the same on every process of a deployment."""
    command = click.option("--namespace", default=None,
                           help="Prefix of this deployment's Redis keys "
                                "[default: $CC_REDIS_NAMESPACE or cc]")(command)
    return click.option("--partitions", type=click.IntRange(1, 1024), default=None,
                        help="Event stream partitions, fixed for the deployment's life "
                             "[default: $CC_PARTITIONS or 16]")(command)


def _settings(database: str | None, **options: Any) -> Settings:
    """The effective settings: these options over $CC_* over --config's file."""
    context = click.get_current_context(silent=True)
    config_file = context.meta.get("config_file") if context is not None else None
    try:
        return load_settings(config_file, database=database, **options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _with_store(database: str, work: Callable[[Store], Awaitable[T]],
                create: bool = False) -> T:
    if not create and not is_postgres(database) and not Path(database).exists():
        raise click.ClickException(
            f"no database at {database}; start the service with 'contact-center serve' "
            "first, or point --db (or CC_DATABASE) at its database")

    async def run() -> T:
        try:
            store = open_store(database)
            await store.open()
        except (OSError, ValueError, RuntimeError, asyncpg.PostgresError,
                sqlite3.DatabaseError) as exc:
            hint = ""
            if isinstance(exc, OSError | sqlite3.OperationalError) and \
                    not is_postgres(database):
                hint = ("; check that its directory exists (or can be created) and that "
                        "this user may write there, and that the disk is not full")
            raise click.ClickException(f"cannot open the database {masked(database)}: "
                                       f"{exc}{hint}") from None
        try:
            return await work(store)
        finally:
            await stopping.step("closing the database", store.close(),
                                stopping.CLOSE_DATABASE_SECONDS)

    return run_on_event_loop(run())


def run_on_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop where it is installed (as `serve` runs,
    through uvicorn), else on asyncio's own loop. On asyncio's loop a third of a
    scale-out worker's samples were its polling and socket writes in Python."""
    try:
        import uvloop
    except ImportError:  # (not on every platform: uvicorn[standard] leaves it out there)
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


CLI_ACTOR = "cli"  # who the audit log says made a change from the command line
CLI_SOURCE = "local"
AUDIT_PAGE = 1000  # entries read at a time by audit verify and export


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # (no name for this uid, e.g. in a container)
        return None


async def _audit(store: Store, action: str, target_type: str, target_id: str | None,
                 details: dict[str, Any] | None = None) -> None:
    """Record a change the command line made (docs/audit.md), with the system user who
    ran it."""
    details = (details or {}) | {"os_user": _os_user()}
    await store.append_audit([make_entry(time.time(), CLI_ACTOR, action, target_type,
                                         target_id, OK, CLI_SOURCE, None, details)])


async def _create_user(store: Store, username: str, profiles: list[str],
                       agent_id: str | None = None) -> User:
    user = await create_user(store, username, profiles, agent_id)
    await _audit(store, "user.create", "user", username,
                 {"profiles": profiles, "agent_id": agent_id})
    return user


async def _issue_token(store: Store, user: User, label: str) -> tuple[Token, str]:
    token, secret = await issue_token(store, user, label)
    await _audit(store, "token.issue", "token", token.id,
                 {"username": user.username, "label": label})
    return token, secret


async def _revoke_token(store: Store, token_id: str) -> bool:
    revoked = bool(await store.revoke_token(token_id))
    if revoked:
        await _audit(store, "token.revoke", "token", token_id)
    return revoked


async def _user_or_fail(store: Store, username: str) -> User:
    user = await store.get_user(username=username)
    if user is None:
        raise click.ClickException(f"no user {username!r}; create it with "
                                   f"'contact-center users create {username} --profile ...'")
    return user


@click.group()
@click.version_option(__version__)
def main() -> None:
    """contact-center: live monitoring and analytics for contact centers."""


@main.command()
@click.option("--host", default=None, help="Address to bind [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port [default: 8000]")
@db_option
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path),
              default=None, help="JSON rules file to load (replaces the stored rules)")
@click.option("--lexicon", "lexicon_overlay", type=click.Path(exists=True, dir_okay=False,
                                                              path_type=Path),
              default=None, help="Lexicon overlay: word valences applied on top of VADER's "
                                 "(see docs/rules.md) [default: $CC_LEXICON_OVERLAY, none]")
@redis_option
@click.option("--worker/--no-worker", "worker", default=None,
              help="With --redis: also run a pipeline worker in this process "
                   "[default: $CC_WORKER or no]")
@partition_options
def serve(host: str | None, port: int | None, database: str | None,
          rules_file: Path | None, lexicon_overlay: Path | None, redis: str | None,
          worker: bool | None, partitions: int | None, namespace: str | None) -> None:
    """Run the service: one process, on SQLite (a file) or PostgreSQL (a URL); or, with
    --redis, an API node of the scale-out deployment (see docs/deployment.md)."""
    import uvicorn

    from contact_center.app import create_app
    from contact_center.connections import Server, server_options

    settings = _settings(database, host=host, port=port, rules_file=rules_file,
                         lexicon_overlay=lexicon_overlay, redis=redis, worker=worker,
                         partitions=partitions, redis_namespace=namespace)
    _check_files(settings)
    _check_scale_out(settings)

    async def bootstrap(store: Store) -> bool:
        if await store.list_users():
            return False
        await _create_user(store, "admin", ["Admin"])
        return True

    created = _with_store(settings.database, bootstrap, create=True)
    base = f"http://{settings.host}:{settings.port}"
    role = "" if not settings.redis else (
        f", API node{' and worker' if settings.worker else ''} on {masked(settings.redis)}")
    click.echo(f"contact-center {__version__}: {base}  "
               f"(database {masked(settings.database)}{role})")
    click.echo(f"API docs:        {base}/docs   protocol: docs/protocol.md")
    click.echo(f"Console:         {base}/console   (a password first: contact-center users "
               f"password admin --db {masked(settings.database)})")
    if created:
        click.echo("First start: created user 'admin' with the Admin profile.")
    click.echo("Get an admin API token with:  contact-center tokens create admin "
               f"--db {masked(settings.database)}")
    click.echo(f"Send demo traffic with:       contact-center simulate --url {base} "
               f"--db {masked(settings.database)}")
    logs.configure(settings.log_format, settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(_refusals_are_not_errors)
    # uvicorn's own access log is off: ours (contact_center.logs) has the request id and
    # masks token-like query parameters.
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port,
        ws="websockets-sansio", ws_max_size=settings.ws_max_frame_bytes,
        ws_per_message_deflate=False,
        # never DEBUG: see logs.configure (the WebSocket library's frame lines)
        log_level=max(logging.INFO, logging.getLevelName(settings.log_level)),
        access_log=False, log_config=None,
        **server_options(settings.header_timeout_seconds, settings.max_connections))
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):  # (Ctrl-C: stopped as asked, as uvicorn.run)
        Server(config).run()


@main.command()
@db_option
@click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="The backup file to create")
def backup(database: str | None, target: Path) -> None:
    """Back up the embedded SQLite database while the service runs (SQLite's online
    backup: a consistent copy). For PostgreSQL use pg_dump; see docs/operations.md."""
    from contact_center.stores.sqlite import backup as sqlite_backup

    settings = _settings(database)
    if is_postgres(settings.database):
        raise click.ClickException("the database is PostgreSQL: back it up with pg_dump "
                                   "(see docs/operations.md#backups)")
    source = Path(settings.database)
    if not source.exists():
        raise click.ClickException(f"no database at {source}")
    try:
        sqlite_backup(source, target)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backed up {source} to {target} ({target.stat().st_size} bytes)")


@main.command()
@db_option
@click.option("--vacuum", is_flag=True,
              help="then VACUUM: give the freed pages back to the file system")
@click.option("--always", is_flag=True,
              help="rebuild an index without a copy too (a repair, from the stored words)")
def reindex(database: str | None, vacuum: bool, always: bool) -> None:
    """Rebuild a SQLite database's full-text index without its own copy of the words, as
    databases made since 2026-12-07 have it: a third smaller, faster searches. Stop the
    service first. One way: versions before 2026-12-07 cannot search the database after
    (docs/analytics.md#cost-and-limits)."""
    from contact_center.stores.sqlite import reindex_text

    settings = _settings(database)
    if is_postgres(settings.database):
        raise click.ClickException("the database is PostgreSQL: its index keeps no copy")
    path = Path(settings.database)
    if not path.exists():
        raise click.ClickException(f"no database at {path}")
    started = time.monotonic()
    try:
        rebuilt = reindex_text(path, vacuum, always)
    except (RuntimeError, sqlite3.DatabaseError) as exc:
        raise click.ClickException(str(exc)) from None
    done = ("rebuilt without a copy of the words" if rebuilt
            else "already without a copy (--always rebuilds it anyway)")
    click.echo(f"full-text index of {path}: {done} ({time.monotonic() - started:.1f} s"
               f"{', vacuumed' if vacuum else ''})")


@main.command("config")
@db_option
@redis_option
def show_config(database: str | None, redis: str | None) -> None:
    """Print the effective settings and where each comes from (options, then $CC_*, then
    --config's file, then defaults), passwords masked. The output is TOML: a starting
    point for a --config file."""
    settings = _settings(database, redis=redis)
    config_file = config_file_in_use(click.get_current_context().meta.get("config_file"))
    from_file = read_config_file(config_file) if config_file is not None else {}
    given = {k: v for k, v in {"database": database, "redis": redis}.items() if v is not None}
    for name, value in effective(settings).items():
        line = f"# {name} (not set)" if value is None else f"{name} = {json.dumps(value)}"
        click.echo(f"{line:<44} # {source_of(name, given, from_file, config_file)}")


@main.command()
@db_option
def migrate(database: str | None) -> None:
    """Create or upgrade the database schema (never destructive); serve runs it too."""
    settings = _settings(database)

    async def work(store: Store) -> None:  # opening a store migrates it
        return None

    _with_store(settings.database, work, create=True)
    click.echo(f"schema of {masked(settings.database)} is up to date")


@main.command()
@db_option
@redis_option
@partition_options
@click.option("--lexicon", "lexicon_overlay", type=click.Path(exists=True, dir_okay=False,
                                                              path_type=Path),
              default=None, help="Lexicon overlay, as serve's (the same on every worker)")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on this port (on $CC_METRICS_HOST, default "
                   "127.0.0.1) [default: $CC_METRICS_PORT, none]")
def worker(database: str | None, redis: str | None, partitions: int | None,
           namespace: str | None, lexicon_overlay: Path | None,
           metrics_port: int | None) -> None:
    """Run a pipeline worker of the scale-out deployment: it takes a share of the
    partitions and applies their events; stop it with Ctrl-C or SIGTERM (its partitions
    move to the other workers at once)."""
    from contact_center.runtime import CLOSE_SECONDS, start_worker
    from contact_center.streams import connect
    from contact_center.worker import WORKER_STOP_SECONDS

    settings = _settings(database, redis=redis, partitions=partitions,
                         redis_namespace=namespace, lexicon_overlay=lexicon_overlay,
                         metrics_port=metrics_port)
    if not settings.redis:
        raise click.ClickException("a worker takes its events from Redis: give --redis "
                                   "redis://HOST:PORT/N (or set CC_REDIS)")
    _check_files(settings)
    _check_scale_out(settings)
    logs.configure(settings.log_format, settings.log_level)
    if settings.metrics_port is not None:
        try:
            service_metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {settings.metrics_host}:"
                                       f"{settings.metrics_port}: {exc}") from None

    async def work(store: Store) -> None:
        client = connect(settings.redis or "")
        try:
            running, task = await start_worker(settings, store, client)
        except (OSError, RuntimeError) as exc:
            raise click.ClickException(f"cannot start the worker: {exc}") from None
        click.echo(f"worker {running.id}: {settings.partitions} partitions on "
                   f"{masked(settings.redis or '')}, database {masked(settings.database)}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        asked = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, asked], return_when=asyncio.FIRST_COMPLETED)
            # Within a deadline, whatever hangs (contact_center.stopping).
            stopping.exit_if_still_running()
            if stop.is_set():
                running.stop()
                await stopping.step("the pipeline worker", task, WORKER_STOP_SECONDS)
                click.echo(f"worker {running.id} stopped; its partitions are free")
            else:
                await task  # it ended by itself (its partitions handed back): say why
        finally:
            asked.cancel()
            await stopping.step("closing Redis connections", client.aclose(), CLOSE_SECONDS)

    _with_store(settings.database, work, create=True)


def _check_scale_out(settings: Settings) -> None:
    if settings.redis is None:
        if settings.worker:
            raise click.ClickException("--worker runs a scale-out worker: give --redis too")
        return
    if not settings.redis.startswith(("redis://", "rediss://", "unix://")):
        raise click.ClickException(f"--redis takes a redis:// URL, not {masked(settings.redis)}")
    if not is_postgres(settings.database):
        raise click.ClickException("the scale-out deployment (--redis) keeps its data in "
                                   "PostgreSQL: give --db postgresql://…")


def _check_files(settings: Settings) -> None:
    """Refuse to start on a bad rules or overlay file, saying what is wrong where."""
    if settings.rules_file is not None:
        _read_rules(settings.rules_file)
    if settings.lexicon_overlay is not None:
        try:
            load_overlay(settings.lexicon_overlay)
        except OverlayError as exc:
            raise click.ClickException(str(exc)) from None


def _read_rules(path: Path) -> RuleSet:
    try:
        rules = RuleSet.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
            for e in exc.errors(include_url=False))
        raise click.ClickException(f"{path} is not a valid rules document:\n{problems}"
                                   ) from None
    why = rules.over_budget()
    if why is not None:
        raise click.ClickException(f"{path} is not a valid rules document:\n  {why}")
    return rules


def _refusals_are_not_errors(record: logging.LogRecord) -> bool:
    # uvicorn's websockets-sansio backend logs this after every socket we refuse with an
    # HTTP denial response (401/403/404/410), although the refusal is delivered intact.
    return record.getMessage() != "ASGI callable returned without completing handshake."


@main.group()
def users() -> None:
    """Users and their security profiles."""


@users.command("create")
@click.argument("username")
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Security profile, built-in or custom (repeatable; 'contact-center "
                   "profiles list' shows them)")
@click.option("--agent-id", default=None, help="The agent id conversations name (agents)")
@db_option
def users_create(username: str, profiles: tuple[str, ...], agent_id: str | None,
                 database: str | None) -> None:
    """Create a user holding one or more security profiles."""
    settings = _settings(database)
    try:
        user = _with_store(settings.database,
                           lambda s: _create_user(s, username, list(profiles), agent_id))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.username} ({', '.join(user.profiles)})")


@users.command("set-profiles")
@click.argument("username")
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Security profile, built-in or custom (repeatable): replaces the user's")
@db_option
def users_set_profiles(username: str, profiles: tuple[str, ...], database: str | None) -> None:
    """Give a user these security profiles (from their next request on)."""
    held = list(dict.fromkeys(profiles))
    if not _profile_work(lambda s: s.set_profiles(username, held), database):
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"{username}: {', '.join(held)}")


@users.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Re-enable instead")
@db_option
def users_disable(username: str, enable: bool, database: str | None) -> None:
    """Disable a user: all of their tokens stop working at once."""

    async def work(store: Store) -> bool:
        changed = bool(await store.set_disabled(username, not enable))
        if changed:
            await _audit(store, "user.enable" if enable else "user.disable", "user", username)
        return changed

    if not _with_store(_settings(database).database, work):
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"{username} {'enabled' if enable else 'disabled'}")


def _read_password() -> str:
    """The new password from standard input (never an argument: the process list and
    the shell's history would show it): asked twice, unechoed, at a terminal; else its
    first line."""
    if sys.stdin.isatty():
        return str(click.prompt("New password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


@users.command("password")
@click.argument("username")
@db_option
def users_password(username: str, database: str | None) -> None:
    """Set a user's password (read from standard input, at least 12 characters: see
    monitoring/passwords.py), for signing in from a browser. Every session of theirs
    ends."""
    password = _read_password()
    try:
        check_strength(password)
    except WeakPassword as exc:
        raise click.ClickException(str(exc)) from None

    async def work(store: Store) -> bool:
        await _user_or_fail(store, username)
        if not await store.set_password(username, await hash_password(password)):
            return False
        await _audit(store, "user.password", "user", username)
        return True

    if not _with_store(_settings(database).database, work):
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"password set for {username}")


@users.command("scope")
@click.argument("username")
@click.option("--team", "teams", multiple=True, help="A team (and those under it) to see")
@click.option("--queue", "queues", multiple=True, help="A queue to see")
@click.option("--all", "everything", is_flag=True, help="See everything (no scope)")
@db_option
def users_scope(username: str, teams: tuple[str, ...], queues: tuple[str, ...],
                everything: bool, database: str | None) -> None:
    """Set what a user may see: teams and queues, or --all. Open sockets follow."""
    if everything == bool(teams or queues):
        raise click.UsageError("give --team and/or --queue, or --all")
    scope = Scope() if everything else Scope(frozenset(teams), frozenset(queues))
    try:
        found = _with_store(_settings(database).database, lambda s: s.set_scope(username, scope))
    except UnknownTeam as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no user {username!r}")
    click.echo(f"{username} sees {_scope_text(scope)}")


def _scope_text(scope: Scope) -> str:
    if scope.everything:
        return "everything"
    return (f"teams {','.join(sorted(scope.teams or ())) or '-'} and "
            f"queues {','.join(sorted(scope.queues or ())) or '-'}")


@users.command("list")
@db_option
def users_list(database: str | None) -> None:
    """List users and their profiles."""
    for user in _with_store(_settings(database).database, lambda s: s.list_users()):
        agent = f" agent_id={user.agent_id}" if user.agent_id else ""
        disabled = " (disabled)" if user.disabled else ""
        scope = "" if user.scope.everything else f" scope: {_scope_text(user.scope)}"
        click.echo(f"{user.username}\t{','.join(user.profiles)}{agent}{disabled}{scope}")


@main.group()
def teams() -> None:
    """Teams: a hierarchy of at most five levels that users' scopes name."""


@teams.command("add")
@click.argument("team_id")
@click.option("--name", required=True)
@click.option("--parent", default=None, help="The team above (none: top level)")
@db_option
def teams_add(team_id: str, name: str, parent: str | None, database: str | None) -> None:
    """Add a team."""
    try:
        _with_store(_settings(database).database,
                    lambda s: s.save_team(Team(team_id, name, parent), create=True))
    except (TeamExists, TreeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added team {team_id}")


@teams.command("delete")
@click.argument("team_id")
@db_option
def teams_delete(team_id: str, database: str | None) -> None:
    """Delete a team nothing is in or under."""
    try:
        found = _with_store(_settings(database).database, lambda s: s.delete_team(team_id))
    except (TeamInUse, TreeError) as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no team {team_id!r}")
    click.echo(f"deleted team {team_id}")


@teams.command("list")
@db_option
def teams_list(database: str | None) -> None:
    """List teams: id, parent, name."""
    directory = _with_store(_settings(database).database, lambda s: s.load_directory())
    for team in sorted(directory.tree.teams.values(), key=lambda t: t.id):
        click.echo(f"{team.id}\t{team.parent or '-'}\t{team.name}")


@main.group()
def agents() -> None:
    """The agent directory: which team each agent id belongs to."""


@agents.command("set")
@click.argument("agent_id")
@click.option("--name", required=True)
@click.option("--team", required=True)
@db_option
def agents_set(agent_id: str, name: str, team: str, database: str | None) -> None:
    """Add an agent to the directory, or change their name or team."""
    try:
        added = _with_store(_settings(database).database,
                            lambda s: s.put_agent(Agent(agent_id, name, team)))
    except UnknownTeam as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'added' if added else 'changed'} agent {agent_id} (team {team})")


@agents.command("list")
@db_option
def agents_list(database: str | None) -> None:
    """List the directory: agent id, team, name."""
    directory = _with_store(_settings(database).database, lambda s: s.load_directory())
    for agent in sorted(directory.agents.values(), key=lambda a: a.id):
        click.echo(f"{agent.id}\t{agent.team}\t{agent.name}")


@main.group()
def profiles() -> None:
    """Security profiles: the built-in ones and custom ones (named sets of permissions).

    The command line acts as the operator: it may grant any permission."""


OPERATOR = frozenset(Permission)  # what the command line may grant: everything
permission_option = click.option(
    "--permission", "permissions", multiple=True,
    type=click.Choice([p.value for p in Permission]),
    help="A permission it grants (repeatable; see docs/security.md)")
description_option = click.option("--description", default=None,
                                  help="What it is for")


def _show(profile: SecurityProfile) -> str:
    kind = "built-in" if profile.builtin else "custom"
    return (f"{profile.name}\t{kind}\t{','.join(sorted(profile.permissions)) or '-'}\t"
            f"{profile.description or '-'}")


def _profile_work(work: Callable[[Store], Awaitable[T]], database: str | None) -> T:
    """Run ``work``; a refusal of the profile rules is the command's error."""
    try:
        return _with_store(_settings(database).database, work)
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None


@profiles.command("list")
@db_option
def profiles_list(database: str | None) -> None:
    """List profiles: name, built-in or custom, permissions, description."""
    custom = _with_store(_settings(database).database, lambda s: s.list_profiles())
    for profile in [*BUILTIN.values(), *custom]:
        click.echo(_show(profile))


@profiles.command("show")
@click.argument("name")
@db_option
def profiles_show(name: str, database: str | None) -> None:
    """Show one profile, and who holds it."""

    async def work(store: Store) -> tuple[SecurityProfile | None, list[str]]:
        profile = BUILTIN.get(name) or await store.get_profile(name)
        holders = [u.username for u in await store.list_users() if name in u.profiles]
        return profile, holders

    profile, holders = _with_store(_settings(database).database, work)
    if profile is None:
        raise click.ClickException(f"no security profile {name!r}")
    click.echo(_show(profile))
    click.echo(f"held by: {', '.join(holders) or 'nobody'}")


@profiles.command("create")
@click.argument("name")
@permission_option
@description_option
@db_option
def profiles_create(name: str, permissions: tuple[str, ...], description: str | None,
                    database: str | None) -> None:
    """Create a custom profile NAME granting the --permission ones."""
    profile = _checked(lambda: new_profile(name, map(Permission, permissions),
                                           description or "", OPERATOR, None, time.time()))
    _profile_work(lambda s: s.create_profile(profile), database)
    click.echo(f"created {_show(profile)}")


@profiles.command("update")
@click.argument("name")
@permission_option
@description_option
@db_option
def profiles_update(name: str, permissions: tuple[str, ...], description: str | None,
                    database: str | None) -> None:
    """Change a custom profile: --permission replaces its permissions (its holders have
    them from their next request), --description its description."""
    if not permissions and description is None:
        raise click.UsageError("give --permission (one or more) or --description")
    if name in BUILTIN:
        raise click.ClickException(f"{name!r} is built-in: it cannot be changed")
    change = profile_change(OPERATOR, map(Permission, permissions) if permissions else None,
                            description, time.time())
    changed = _profile_work(lambda s: s.update_profile(name, change), database)
    if changed is None:
        raise click.ClickException(f"no security profile {name!r}")
    click.echo(f"updated {_show(changed)}")


@profiles.command("delete")
@click.argument("name")
@db_option
def profiles_delete(name: str, database: str | None) -> None:
    """Delete a custom profile no user holds."""
    if name in BUILTIN:
        raise click.ClickException(f"{name!r} is built-in: it cannot be deleted")
    if not _profile_work(lambda s: s.delete_profile(name), database):
        raise click.ClickException(f"no security profile {name!r}")
    click.echo(f"deleted {name}")


def _checked(make: Callable[[], T]) -> T:
    try:
        return make()
    except ProfileError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def tokens() -> None:
    """API tokens (shown once, stored hashed)."""


@tokens.command("create")
@click.argument("username")
@click.option("--label", default="", help="What the token is for")
@db_option
def tokens_create(username: str, label: str, database: str | None) -> None:
    """Issue an API token for USERNAME and print it (only this once)."""

    async def work(store: Store) -> str:
        _, secret = await _issue_token(store, await _user_or_fail(store, username), label)
        return secret

    click.echo(_with_store(_settings(database).database, work))


@tokens.command("list")
@click.argument("username")
@db_option
def tokens_list(username: str, database: str | None) -> None:
    """List USERNAME's tokens: id, label, created, state (never the token itself)."""

    async def work(store: Store) -> list[Token]:
        return await store.list_tokens((await _user_or_fail(store, username)).id)

    for token in _with_store(_settings(database).database, work):
        created = datetime.fromtimestamp(token.created_at, UTC).isoformat(timespec="seconds")
        state = "revoked" if token.revoked else "active"
        click.echo(f"{token.id}\t{token.label or '-'}\t{created}\t{state}")


@tokens.command("revoke")
@click.argument("token_id")
@db_option
def tokens_revoke(token_id: str, database: str | None) -> None:
    """Revoke a token by its id."""
    if not _with_store(_settings(database).database, lambda s: _revoke_token(s, token_id)):
        raise click.ClickException("no such active token")
    click.echo("revoked")


@main.group()
def audit() -> None:
    """The audit log (docs/audit.md): verify its hash chain, export it."""


def _head(ctx: click.Context, param: click.Parameter, value: str | None
          ) -> tuple[int, str] | None:
    if value is None:
        return None
    number, _, digest = value.partition(":")
    if not number.isdigit() or len(digest) != 64:
        raise click.BadParameter("give ID:HASH, as a verify printed it")
    return int(number), digest


@audit.command("verify")
@click.option("--head", callback=_head, default=None, metavar="ID:HASH",
              help="A head an earlier verify printed (keep it apart): the chain must still "
                   "hold it, which also catches entries cut off its end")
@db_option
def audit_verify(head: tuple[int, str] | None, database: str | None) -> None:
    """Check the audit log's hash chain, entry by entry: exit 0 when it holds (and print
    its head), 1 and the first entry that does not (and why) otherwise."""

    async def work(store: Store) -> Verdict:
        check, after = ChainCheck(head), 0
        while True:
            page = await store.audit_chain(after, AUDIT_PAGE)
            for entry in page:
                if check.feed(entry) is not None:
                    return check.verdict()
            if len(page) < AUDIT_PAGE:
                return check.verdict()
            after = page[-1].id or 0

    verdict = _with_store(_settings(database).database, work)
    if verdict.broken is not None:
        raise click.ClickException(
            f"the audit log does not hold at entry {verdict.broken.id}: {verdict.broken.why} "
            f"({verdict.count} entries checked)")
    click.echo(f"audit log intact: {verdict.count} entries; head "
               f"{verdict.last_id}:{verdict.last_hash}")


@audit.command("export")
@click.option("--after", type=click.IntRange(0), default=0, show_default=True,
              help="Only the entries after this id")
@db_option
def audit_export(after: int, database: str | None) -> None:
    """Write the audit log to standard output as JSON Lines, oldest first (the chain's
    order: what verify checks), a page at a time."""

    async def work(store: Store) -> None:
        cursor = after
        while True:
            page = await store.audit_chain(cursor, AUDIT_PAGE)
            sys.stdout.write("".join(codec.dumps(entry_fields(e)) + "\n" for e in page))
            if len(page) < AUDIT_PAGE:
                return
            cursor = page[-1].id or 0

    _with_store(_settings(database).database, work)
    sys.stdout.flush()


@main.group()
def retention() -> None:
    """Retention (docs/security.md#retention-and-erasure): remove the words of ended
    conversations past their queue's retention (CC_RETENTION_DAYS,
    CC_RETENTION_BY_QUEUE)."""


@retention.command("run")
@db_option
def retention_run(database: str | None) -> None:
    """Run the retention job once, now (the service runs it every
    retention_interval_seconds), and print what it removed."""
    from contact_center.retention import run_once

    settings = _settings(database)
    if settings.retention.keeps_everything:
        raise click.ClickException("no retention is set (CC_RETENTION_DAYS, "
                                   "CC_RETENTION_BY_QUEUE): words are kept for ever")
    removed = _with_store(settings.database, lambda store: run_once(
        store, settings.retention, actor=CLI_ACTOR, source=CLI_SOURCE))
    for name, count in removed.counts().items():
        click.echo(f"{name}: {count}")


@main.group()
def rules() -> None:
    """Escalation rules as a file under version control: check, export, import.

    export and import talk to the running service with a token that has the
    rules-manage permission (an Admin's): --token or $CC_TOKEN."""


url_option = click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                          help="The running service")
token_option = click.option("--token", envvar="CC_TOKEN", required=True,
                            help="API token with rules-manage [default: $CC_TOKEN]")


def _call(method: str, url: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise click.ClickException(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None


@rules.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rules_check(file: Path) -> None:
    """Validate a rules file without a running service (exit 1 if it is invalid)."""
    checked = _read_rules(file)
    kinds = ", ".join(sorted({r.kind for r in checked.rules})) or "none"
    click.echo(f"{file}: {len(checked.rules)} rules, valid (kinds: {kinds})")


@rules.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="File to write [default: standard output]")
@url_option
@token_option
def rules_export(output: Path | None, url: str, token: str) -> None:
    """Write the rule set in force as a JSON document (import takes it back unchanged)."""
    document = json.dumps(_call("GET", f"{url}/v1/rules", token), indent=2) + "\n"
    if output is None:
        click.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")
        click.echo(f"wrote {len(json.loads(document)['rules'])} rules to {output}", err=True)


@rules.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@url_option
@token_option
def rules_import(file: Path, url: str, token: str) -> None:
    """Replace the rule set with FILE's; it applies from the next event on."""
    document = _read_rules(file).model_dump(mode="json")
    before = {r["id"]: r for r in _call("GET", f"{url}/v1/rules", token)["rules"]}
    after = {r["id"]: r for r in _call("PUT", f"{url}/v1/rules", token, document)["rules"]}
    for rule_id, rule in after.items():
        old = before.get(rule_id)
        if old is None:
            click.echo(f"added     {rule_id} (version {rule['version']})")
        elif old["version"] != rule["version"]:
            click.echo(f"changed   {rule_id} (version {old['version']} -> {rule['version']})")
        else:
            click.echo(f"unchanged {rule_id} (version {rule['version']})")
    for rule_id in before.keys() - after.keys():
        click.echo(f"removed   {rule_id}")


@main.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The running service")
@click.option("--file", "source", type=click.Path(exists=True, dir_okay=False,
                                                  path_type=Path),
              default=None, help="JSONL conversations [default: the shared twitter-care "
                                 "corpus when present, else the packaged sample]")
@click.option("--rate", type=float, default=20.0, show_default=True,
              help="Segments per second, overall (0: as fast as possible)")
@click.option("--concurrency", type=int, default=8, show_default=True,
              help="Conversations streamed at once")
@click.option("--limit", type=int, default=None, help="Replay at most this many conversations")
@click.option("--recording", type=click.Choice(["none", "agent", "customer", "all"]),
              default="all", show_default=True)
@click.option("--token", default=None, help="Connector token [default: minted via --db]")
@db_option
def simulate(url: str, source: Path | None, rate: float, concurrency: int, limit: int | None,
             recording: str, token: str | None, database: str | None) -> None:
    """Replay real conversations as live traffic and print the alerts they raise."""
    from contact_center.simulate import default_source
    from contact_center.simulate import simulate as run

    watch_token, minted = None, []
    db = _settings(database).database
    if token is None:
        async def mint(store: Store) -> list[tuple[str, str]]:
            issued = []
            for name, profile in (("simulator", "Connector"), ("simulator-watch",
                                                               "CallCenterManager")):
                user = await store.get_user(username=name) or await _create_user(
                    store, name, [profile])
                record, secret = await _issue_token(store, user, "simulate (revoked after)")
                issued.append((record.id, secret))
            return issued

        minted = _with_store(db, mint)
        token, watch_token = minted[0][1], minted[1][1]
    source = source or default_source()
    click.echo(f"replaying {source} at {rate:g} segments/s, {concurrency} at once")

    def show(alert: dict[str, Any]) -> None:
        click.echo(f"ALERT [{alert['severity']}] {alert['rule_id']} on "
                   f"{alert['conversation_id']} (agent {alert['agent_id']}): {alert['reason']}")

    async def revoke(store: Store) -> None:
        for token_id, _ in minted:
            await _revoke_token(store, token_id)

    try:
        report = asyncio.run(run(url, token, source, rate=rate, concurrency=concurrency,
                                 limit=limit, recording=recording, watch_token=watch_token,
                                 on_alert=show))
    finally:
        if minted:
            _with_store(db, revoke)
    click.echo(report.summary())
