"""Migrations: one linear history, and databases migrated under the old branched history move on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from alembic.script import ScriptDirectory

from harness.services import fresh_database, postgres_server
from storage import Database
from storage.db import libpq_url
from storage.migrate import alembic_config


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """Yield the URL of a new, empty database (dropped afterwards)."""
    with postgres_server() as server, fresh_database(server) as url:
        yield url


def _recorded(url: str) -> list[str]:
    with psycopg.connect(libpq_url(url)) as conn:
        return sorted(row[0] for row in conn.execute("SELECT version_num FROM alembic_version"))


def test_the_migration_history_has_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1


def test_a_database_that_recorded_the_old_branch_heads_upgrades_to_the_single_head(
    empty_database_url: str,
) -> None:
    # Given a database migrated when the history had four branches from 0001 (four rows recorded)
    db = Database(empty_database_url)
    db.migrate()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with psycopg.connect(libpq_url(empty_database_url), autocommit=True) as conn:
        for old in ("0002", "0003", "0004"):
            conn.execute("INSERT INTO alembic_version (version_num) VALUES (%s)", (old,))
    # When it is migrated again
    db.migrate()
    db.dispose()
    # Then only the single head is recorded
    assert _recorded(empty_database_url) == [head]


def test_plain_alembic_upgrade_head_builds_the_schema(empty_database_url: str) -> None:
    # The history is linear, so the ordinary command works (it failed with "multiple heads" before).
    code = (
        "import sys; from alembic import command; from sqlalchemy import create_engine;"
        "from storage.db import sqlalchemy_url; from storage.migrate import alembic_config;"
        "cfg = alembic_config(); eng = create_engine(sqlalchemy_url(sys.argv[1]));"
        "conn = eng.connect(); cfg.attributes['connection'] = conn;"
        "command.upgrade(cfg, 'head'); conn.commit()"
    )
    subprocess.run([sys.executable, "-c", code, empty_database_url], check=True)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _recorded(empty_database_url) == [head]


def test_a_database_secured_with_the_old_admin_flag_loses_it_when_migrated(empty_database_url: str) -> None:
    # Given a database at 0005 whose tables carry the policies that honoured 'bulkhead.admin'
    from alembic import command
    from sqlalchemy import create_engine

    from storage.db import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(empty_database_url))
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        for table, using in (
            ("resource", "partition_id = (SELECT bulkhead_partition_id()) OR (SELECT bulkhead_is_admin())"),
            (
                "partition",
                "name = current_setting('bulkhead.partition', true) OR (SELECT bulkhead_is_admin())",
            ),
            ("audit_event", "(SELECT bulkhead_is_admin())"),
        ):
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"CREATE POLICY bulkhead_partition ON {table} USING ({using})")
    engine.dispose()
    # When it is migrated to the head
    db = Database(empty_database_url)
    db.migrate()
    db.dispose()
    # Then no policy and no function of the flag is left, and every table has its two new policies
    with psycopg.connect(libpq_url(empty_database_url)) as conn:
        flag = conn.execute(
            "SELECT count(*) FROM pg_policies WHERE coalesce(qual, '') || coalesce(with_check, '') "
            "LIKE '%bulkhead_is_admin%'"
        ).fetchone()
        function = conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'bulkhead_is_admin'").fetchone()
        policies = {
            (t, p)
            for t, p in conn.execute(
                "SELECT tablename, policyname FROM pg_policies "
                "WHERE tablename IN ('resource', 'partition', 'job')"
            ).fetchall()
        }
    assert flag == (0,) and function == (0,)
    assert policies == {
        (t, p) for t in ("resource", "partition", "job") for p in ("bulkhead_partition", "bulkhead_admin")
    }
