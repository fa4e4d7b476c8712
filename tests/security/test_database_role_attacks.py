"""An attacker who runs SQL as the application role (an injection in partition B's transaction) goes after A.

The attacker's statements run on a raw connection as the application role, in a transaction of partition B,
as an injected statement would. They set every flag that once opened the administrative policies, try to
become the administrative role, and read and change A's jobs, resources and audit events. Nothing of A is
visible and nothing of A changes; only a connection as the administrative role crosses partitions.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from core.jobs import JobCaller
from core.settings import Settings
from orchestrator import service
from storage import Database
from storage.db import libpq_url
from storage.security import role_url
from tests.support.arena import Arena
from tests.support.jobinproc import RecordingSender

#: What an injected statement would try, to make the session an administrative one.
ESCALATIONS = [
    "SELECT set_config('bulkhead.admin', 'on', true)",
    "SELECT set_config('bulkhead.admin', 'on', false)",
    "SET bulkhead.admin = 'on'",
    "SET LOCAL bulkhead.admin = 'on'",
]


@pytest.fixture
def attacker(database_url: str) -> Iterator[psycopg.Connection]:
    """Yield a raw connection as the application role: the attacker's."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        yield conn


@pytest.fixture
def victim_job(arena: Arena, database: Database, settings: Settings) -> str:
    """Store an export job of client X in the victim's partition A; return its id."""
    job = service.submit(
        database,
        arena.victim,
        "export",
        {"spec": {}},
        caller=JobCaller("client-x"),
        settings=settings,
        sender=RecordingSender(),
    )
    return job.id


def _enter(conn: psycopg.Connection, partition: str) -> None:
    conn.execute("SELECT set_config('bulkhead.partition', %s, true)", (partition,))


def _owner_view(owner_database_url: str, job_id: str) -> tuple[object, ...]:
    with psycopg.connect(libpq_url(owner_database_url)) as conn:
        row = conn.execute("SELECT * FROM job WHERE id = %s", (job_id,)).fetchone()
        assert row is not None
        return tuple(row)


@pytest.mark.parametrize("escalation", ESCALATIONS)
def test_setting_the_old_admin_flag_reads_nothing_of_another_partitions_jobs_resources_or_audit(
    arena: Arena, victim_job: str, attacker: psycopg.Connection, owner_database_url: str, escalation: str
):
    # Given A's resources, A's job and A's audit events (the owner sees them)
    with psycopg.connect(libpq_url(owner_database_url)) as owner:
        audit_a = owner.execute(
            "SELECT count(*) FROM audit_event WHERE partition = %s", (arena.victim,)
        ).fetchone()
        resources_a = owner.execute(
            "SELECT count(*) FROM resource r JOIN partition p ON p.id = r.partition_id WHERE p.name = %s",
            (arena.victim,),
        ).fetchone()
    assert audit_a is not None and audit_a[0] > 0
    assert resources_a is not None and resources_a[0] > 0
    # When the attacker, in a transaction of B, sets the flag and reads A's rows every way it can
    _enter(attacker, arena.attacker)
    attacker.execute(escalation)
    jobs = attacker.execute(
        "SELECT count(*) FROM job WHERE partition = %s OR id = %s", (arena.victim, victim_job)
    )
    job_count = jobs.fetchone()
    resources = attacker.execute(
        "SELECT count(*) FROM resource WHERE raw::text LIKE %s", ("%SECRET-OF-A%",)
    ).fetchone()
    audit = attacker.execute(
        "SELECT count(*) FROM audit_event WHERE partition = %s", (arena.victim,)
    ).fetchone()
    partitions = attacker.execute("SELECT name FROM partition").fetchall()
    attacker.rollback()
    # Then none of A's rows exists for it: it sees its own partition only
    assert (job_count, resources, audit) == ((0,), (0,), (0,))
    assert partitions == [(arena.attacker,)]


def test_an_injected_statement_of_another_partition_cannot_cancel_or_take_over_a_job(
    arena: Arena, victim_job: str, attacker: psycopg.Connection, owner_database_url: str
):
    # Given A's queued job
    before = _owner_view(owner_database_url, victim_job)
    # When the attacker, in B's transaction with the old flag set, cancels it, retargets it and deletes it
    _enter(attacker, arena.attacker)
    attacker.execute("SELECT set_config('bulkhead.admin', 'on', true)")
    cancelled = attacker.execute(
        "UPDATE job SET cancel_requested = true, status = 'cancelled' WHERE id = %s", (victim_job,)
    ).rowcount
    moved = attacker.execute(
        "UPDATE job SET partition = %s WHERE id = %s", (arena.attacker, victim_job)
    ).rowcount
    deleted = attacker.execute("DELETE FROM job WHERE partition = %s", (arena.victim,)).rowcount
    attacker.commit()
    # Then nothing matched and the job is exactly as it was
    assert (cancelled, moved, deleted) == (0, 0, 0)
    assert _owner_view(owner_database_url, victim_job) == before


def test_an_injected_statement_cannot_become_the_administrative_role(
    arena: Arena, victim_job: str, attacker: psycopg.Connection
):
    # Given the attacker's application-role connection in B
    _enter(attacker, arena.attacker)
    # When it tries to switch to the administrative role, or to plant a function that would run as another
    with pytest.raises(errors.InsufficientPrivilege):
        attacker.execute("SET ROLE bulkhead_admin")
    attacker.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        attacker.execute("SET SESSION AUTHORIZATION bulkhead_admin")
    attacker.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        attacker.execute(
            "CREATE FUNCTION public.bulkhead_is_admin() RETURNS boolean LANGUAGE sql AS 'SELECT true'"
        )
    attacker.rollback()
    # Then it is still the application role, and A's job is still invisible to it
    _enter(attacker, arena.attacker)
    who = attacker.execute("SELECT current_user").fetchone()
    seen = attacker.execute("SELECT count(*) FROM job WHERE id = %s", (victim_job,)).fetchone()
    attacker.rollback()
    assert who == ("bulkhead_app",) and seen == (0,)


def test_only_a_connection_as_the_administrative_role_sees_another_partitions_job(
    arena: Arena, victim_job: str, owner_database_url: str
):
    # Given A's job
    # When the administrative role, with no partition set, looks for it
    admin_url = role_url(owner_database_url, "bulkhead_admin")
    with psycopg.connect(libpq_url(admin_url)) as admin:
        row = admin.execute("SELECT partition, client_id FROM job WHERE id = %s", (victim_job,)).fetchone()
    # Then it sees it, with its partition and owner: this connection, not a flag, is the way across
    assert row == (arena.victim, "client-x")
