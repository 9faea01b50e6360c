"""Passwords, browser sessions and socket tickets, in SQL both stores run (``?``
placeholders; PostgreSQL numbers them). What they mean is `monitoring.sessions`'.

A session's end, and a new password (which ends the user's sessions), count in the access
version (`contact_center.stores.directory`): sockets opened with their tickets close.
"""

from __future__ import annotations

from typing import Any

from monitoring.sessions import Session

PASSWORD = "SELECT password_hash FROM users WHERE id = ?"
SET_PASSWORD = "UPDATE users SET password_hash = ? WHERE username = ?"
END_USERS_SESSIONS = ("DELETE FROM sessions WHERE user_id = "
                      "(SELECT id FROM users WHERE username = ?)")
ADD = "INSERT INTO sessions (digest, user_id, created_at, seen_at) VALUES (?, ?, ?, ?)"
FIND = "SELECT * FROM sessions WHERE digest = ?"
TOUCH = "UPDATE sessions SET seen_at = ? WHERE digest = ? AND seen_at < ?"
END = "DELETE FROM sessions WHERE digest = ?"
PRUNE = "DELETE FROM sessions WHERE seen_at < ? OR created_at < ?"
ADD_TICKET = "INSERT INTO socket_tickets (digest, session_digest, expires_at) VALUES (?, ?, ?)"
PRUNE_TICKETS = "DELETE FROM socket_tickets WHERE expires_at <= ?"
# Used up as it is read: of two sockets offering one ticket at once, one gets it.
TAKE_TICKET = ("DELETE FROM socket_tickets WHERE digest = ? AND expires_at > ? "
               "RETURNING session_digest")


def as_session(row: Any) -> Session:
    return Session(row["digest"], row["user_id"], row["created_at"], row["seen_at"])
