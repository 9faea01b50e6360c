"""The store implementations, side by side: SQLite (embedded) and PostgreSQL (scale-out).

Both implement `contact_center.store.Store` and pass the same tests. `open_store` picks
one from the ``--db`` / ``CC_DATABASE`` value: a ``postgresql://`` URL or a SQLite path.
"""

from __future__ import annotations

from contact_center.store import Store


def is_postgres(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def open_store(database: str, sqlite_synchronous: str = "FULL") -> Store:
    """The store for ``database`` (not opened yet)."""
    if is_postgres(database):
        from contact_center.stores.postgres import PostgresStore

        return PostgresStore(database)
    from contact_center.stores.sqlite import SQLiteStore

    return SQLiteStore(database, sqlite_synchronous)
