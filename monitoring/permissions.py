"""Where permissions are checked: permissions (and what each grants), built-in security
profiles, principals.

Profiles follow Amazon Connect's built-in security profiles. A user holds one or more
profiles, built-in or custom (`monitoring.profiles`); their permissions are the union.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from monitoring.scope import Within


class Permission(StrEnum):
    INGEST = "ingest"                          # stream conversation events in
    REALTIME_METRICS = "realtime-metrics"      # live conversation and agent views
    MANAGER_MONITOR = "manager-monitor"        # silently monitor a conversation
    MANAGER_WHISPER = "manager-whisper"        # coach the agent, unheard by the customer
    MANAGER_BARGE = "manager-barge"            # join a conversation as a participant
    ALERTS_OWN = "alerts-own"                  # alerts on one's own conversations
    ALERTS_ALL = "alerts-all"                  # alerts on every conversation one may see
    ALERTS_MANAGE = "alerts-manage"            # acknowledge, assign, resolve, reopen alerts
    CONTACT_SEARCH = "contact-search"          # search recorded transcripts
    TRANSCRIPTS_READ = "transcripts-read"      # read a recorded conversation
    RULES_MANAGE = "rules-manage"              # read and change escalation rules
    USERS_MANAGE = "users-manage"              # users, tokens, teams, agents, scopes
    PROFILES_MANAGE = "profiles-manage"        # custom security profiles
    AUDIT_READ = "audit-read"                  # read and export the audit log
    WEBHOOKS_MANAGE = "webhooks-manage"        # webhooks: endpoints, deliveries
    OPERATE = "operate"                        # pipeline internals: dead letters
    # Erase a customer's conversations for good (a data subject's request): apart from
    # reading, so that whoever may read transcripts cannot also make them vanish. Admin
    # alone holds it among the built-in profiles.
    DATA_ERASE = "data-erase"
    # See on a monitor what is said as said, before PII redaction (live only: nothing
    # stored is unredacted). Admin alone holds it among the built-in profiles.
    MONITOR_UNREDACTED = "monitor-unredacted"


# What each permission grants, as GET /v1/permissions and docs/security.md tell it.
CATALOGUE: dict[Permission, str] = {
    Permission.INGEST: "stream conversation events in (the ingest socket and REST)",
    Permission.REALTIME_METRICS: "the live conversation list and views, the live board "
                                 "socket, agent metrics",
    Permission.MANAGER_MONITOR: "silently monitor a conversation (catch-up, then live)",
    Permission.MANAGER_WHISPER: "send the agent of a conversation a note the customer "
                                "never sees",
    Permission.MANAGER_BARGE: "join a conversation as a participant (role supervisor) and "
                              "write in it",
    Permission.ALERTS_OWN: "alerts (list, read, stream, acknowledge) on conversations "
                           "assigned to one's own agent_id",
    Permission.ALERTS_ALL: "every alert (list, read, stream)",
    Permission.ALERTS_MANAGE: "acknowledge, assign, resolve and reopen the alerts one may "
                              "see",
    Permission.CONTACT_SEARCH: "keyword search over recorded transcripts",
    Permission.TRANSCRIPTS_READ: "read one recorded conversation with scores, alerts, "
                                 "events",
    Permission.RULES_MANAGE: "read, create, change, delete, import, export and backtest "
                             "escalation rules",
    Permission.USERS_MANAGE: "create and list users, change their profiles, disable them, "
                             "issue and revoke tokens; teams, the agent directory, scopes",
    Permission.PROFILES_MANAGE: "create, list, read, change and delete custom security "
                                "profiles",
    Permission.AUDIT_READ: "read and export the audit log",
    Permission.WEBHOOKS_MANAGE: "webhooks: create, list, change, delete endpoints; read "
                                "their deliveries; redeliver",
    Permission.OPERATE: "pipeline internals: the scale-out dead letters, Prometheus "
                        "metrics (/metrics)",
    Permission.DATA_ERASE: "erase everything of a customer's conversations (turns, events, "
                           "alerts, webhook deliveries), by customer id or e-mail",
    Permission.MONITOR_UNREDACTED: "on a monitor socket, each turn's words also as said, "
                                   "before PII redaction (`text_unredacted`; live only)",
}

PROFILES: dict[str, frozenset[Permission]] = {
    "Admin": frozenset(Permission),
    "CallCenterManager": frozenset({
        Permission.REALTIME_METRICS, Permission.MANAGER_MONITOR, Permission.MANAGER_WHISPER,
        Permission.MANAGER_BARGE, Permission.ALERTS_ALL, Permission.ALERTS_MANAGE,
        Permission.CONTACT_SEARCH, Permission.TRANSCRIPTS_READ,
    }),
    "Agent": frozenset({Permission.ALERTS_OWN}),
    "Analyst": frozenset({Permission.CONTACT_SEARCH, Permission.TRANSCRIPTS_READ}),
    "Connector": frozenset({Permission.INGEST}),
}


def permissions_of(profiles: Iterable[str],
                   custom: Mapping[str, frozenset[Permission]] | None = None,
                   ) -> frozenset[Permission]:
    """The union of the profiles' permissions: built-in ones, then ``custom`` (the stored
    custom profiles by name). A name that is neither grants nothing (fail closed: a
    deleted profile, or one a newer version wrote)."""
    granted: set[Permission] = set()
    for name in profiles:
        found = PROFILES.get(name)
        if found is None and custom is not None:
            found = custom.get(name)
        granted |= found or frozenset()
    return frozenset(granted)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user or connector."""

    user_id: str
    username: str
    agent_id: str | None
    profiles: tuple[str, ...]
    permissions: frozenset[Permission]
    within: Within | None = None  # the user's scope resolved (monitoring.scope); None: all

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def sees(self, queue: str | None, agent_id: str | None) -> bool:
        """Whether a conversation now in ``queue`` and handled by ``agent_id`` is in this
        user's scope (what they may do with it is their permissions')."""
        return self.within is None or self.within.covers(queue, agent_id)

    def can_see_alert(self, queue: str | None, agent_id: str | None) -> bool:
        """Whether an alert on a conversation now in ``queue`` and handled by
        ``agent_id`` reaches this user: their own conversations' with `alerts-own`, those
        in their scope with `alerts-all`."""
        own = agent_id is not None and agent_id == self.agent_id
        if own and self.can(Permission.ALERTS_OWN):
            return True
        return self.can(Permission.ALERTS_ALL) and self.sees(queue, agent_id)
