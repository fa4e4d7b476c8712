"""Apply Alembic migrations programmatically (``bulkhead migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

_HERE = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x42554C4B  # "BULK": one migrator at a time across processes


def alembic_config() -> Config:
    """Return an Alembic config pointing at Bulkhead's migration scripts."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database schema to the newest revision (every branch head)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")
