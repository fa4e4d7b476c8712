"""Apply Alembic migrations programmatically (``bulkhead migrate``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

_HERE = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x42554C4B  # "BULK": one migrator at a time across processes


def alembic_config() -> Config:
    """Return an Alembic config pointing at Bulkhead's migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def collapse_old_heads(conn: Connection, script: ScriptDirectory) -> None:
    """Forget recorded revisions that are ancestors of another recorded one.

    The history was once four branches from ``0001``; a database migrated then records all four heads.
    The history is linear now, so only the newest of them is kept and ``upgrade head`` goes on from it.
    """
    if not inspect(conn).has_table("alembic_version"):
        return
    recorded = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    if len(recorded) < 2:
        return
    ancestors: set[str] = set()
    for rev in recorded:
        ancestors.update(r.revision for r in script.iterate_revisions(rev, "base") if r.revision != rev)
    for rev in recorded:
        if rev in ancestors:
            conn.execute(text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": rev})


def upgrade(engine: Engine, *, then: Callable[[Connection], None] | None = None) -> None:
    """Bring the database schema to the newest revision; run ``then`` in the same transaction.

    ``then`` (the row-level security set-up) commits with the migrations or not at all: a migration that
    replaces policies never leaves the schema committed without them.
    """
    cfg = alembic_config()
    with engine.begin() as conn:
        # A migration may rewrite or index a large table: the application's statement limits do not apply.
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        collapse_old_heads(conn, ScriptDirectory.from_config(cfg))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        if then is not None:
            then(conn)
