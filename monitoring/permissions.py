"""Where permissions are checked: permissions, built-in security profiles, principals.

Profiles follow Amazon Connect's built-in security profiles. A user holds one or more
profiles; their permissions are the union.
"""

from __future__ import annotations

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


def permissions_of(profiles: list[str]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for name in profiles:
        granted |= PROFILES.get(name, frozenset())
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
