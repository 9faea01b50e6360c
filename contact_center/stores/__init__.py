"""The store implementations, side by side: SQLite (embedded) and PostgreSQL (scale-out).

Both implement `contact_center.store.Store` and pass the same tests. `open_store` picks
one from the ``--db`` / ``CC_DATABASE`` value: a ``postgresql://`` URL or a SQLite path.
"""

from __future__ import annotations

from contact_center.store import Store


def is_postgres(database: str) -> bool:
    return database.lower().startswith(("postgresql://", "postgres://"))


def open_store(database: str, sqlite_synchronous: str = "FULL") -> Store:
    """The store for ``database`` (not opened yet); ValueError for a URL of another kind."""
    if "://" in database and not is_postgres(database):
        raise ValueError(f"unsupported database URL scheme in {database.split('://')[0]!r}"
                         "://…; give a SQLite file path or a postgresql:// URL")
    if is_postgres(database):
        from contact_center.stores.postgres import PostgresStore

        return PostgresStore(database)
    from contact_center.stores.sqlite import SQLiteStore

    return SQLiteStore(database, sqlite_synchronous)
