"""Row-level security: the database keeps partitions apart even when a query forgets its filter."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from storage import Database
from storage.db import libpq_url
from storage.security import role_url, secure_schema, tenant_tables
from tests.support.fhir import base, put

PATIENT = {"resourceType": "Patient", "id": "same-id", "gender": "female"}


@pytest.fixture
def two_partitions(client, partition: str, other_partition: str) -> tuple[str, str]:
    """Seed Patient/same-id in two partitions through the API (which runs as the application role)."""
    for name in (partition, other_partition):
        assert put(client, f"{base(name)}/Patient/same-id", {**PATIENT}).status_code == 201
    return partition, other_partition


@pytest.fixture
def app_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """Yield a raw connection as the application role (not in autocommit: set_config is per transaction)."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        yield conn


@pytest.fixture
def admin_conn(owner_database_url: str) -> Iterator[psycopg.Connection]:
    """Yield a raw connection as the administrative role (autocommit)."""
    with psycopg.connect(libpq_url(role_url(owner_database_url, "bulkhead_admin")), autocommit=True) as conn:
        yield conn


@pytest.fixture
def owner_conn(owner_database_url: str) -> Iterator[psycopg.Connection]:
    """Yield a raw connection as the role that owns the tables."""
    with psycopg.connect(libpq_url(owner_database_url), autocommit=True) as conn:
        yield conn


def _pid(owner_conn: psycopg.Connection, name: str) -> int:
    row = owner_conn.execute("SELECT id FROM partition WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _enter(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT set_config('bulkhead.partition', %s, true)", (name,))


def test_the_application_role_owns_nothing_and_cannot_bypass_row_security(app_conn, owner_conn):
    # Given the application's connection
    # When we ask the catalogue about its role
    who, superuser, bypass = app_conn.execute(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    owned = app_conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
    ).fetchone()[0]
    # Then it is the restricted role: no superuser, no BYPASSRLS, owner of no table
    assert who == "bulkhead_app"
    assert not superuser and not bypass
    assert owned == 0


def test_every_tenant_table_has_row_security_enabled_and_forced(owner_database_url, owner_conn):
    # Given the migrated schema
    owner = Database(owner_database_url)
    with owner.engine.connect() as conn:
        tables = tenant_tables(conn)
    owner.dispose()
    # When we read the flags of every table with a partition column, and of the name-keyed tables
    names = [*tables, "partition", "partition_config", "job", "audit_event", "smart_client"]
    rows = owner_conn.execute(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relname = ANY(%s) AND relkind IN ('r', 'p')",
        (names,),
    ).fetchall()
    # Then each one has row-level security both enabled and forced
    assert "resource" in tables
    assert {r[0] for r in rows} == set(names)
    assert all(r[1] and r[2] for r in rows), rows


def test_a_query_without_a_partition_set_returns_nothing(two_partitions, app_conn, owner_conn):
    # Given resources in two partitions (the owner sees them)
    assert len(two_partitions) == 2
    assert owner_conn.execute("SELECT count(*) FROM resource").fetchone()[0] >= 2
    # When the application role queries with no partition set
    resources = app_conn.execute("SELECT count(*) FROM resource").fetchone()[0]
    partitions = app_conn.execute("SELECT count(*) FROM partition").fetchone()[0]
    # Then it sees no row at all, not even the list of partitions
    assert resources == 0
    assert partitions == 0


def test_a_transaction_in_one_partition_cannot_read_another_partitions_rows(
    two_partitions, app_conn, owner_conn
):
    # Given Patient/same-id in partitions A and B
    a, b = two_partitions
    pid_b = _pid(owner_conn, b)
    # When a transaction set to A asks for B's rows by B's partition id, and for everything
    _enter(app_conn, a)
    explicit = app_conn.execute("SELECT count(*) FROM resource WHERE partition_id = %s", (pid_b,)).fetchone()
    seen = app_conn.execute("SELECT DISTINCT partition_id FROM resource").fetchall()
    names = app_conn.execute("SELECT name FROM partition").fetchall()
    # Then B's rows do not exist for it; it sees only A's partition
    assert explicit[0] == 0
    assert seen == [(_pid(owner_conn, a),)]
    assert names == [(a,)]


def test_a_transaction_in_one_partition_cannot_insert_rows_into_another(two_partitions, app_conn, owner_conn):
    # Given a transaction set to partition A
    a, b = two_partitions
    pid_b = _pid(owner_conn, b)
    before = owner_conn.execute("SELECT count(*) FROM resource WHERE partition_id = %s", (pid_b,)).fetchone()
    _enter(app_conn, a)
    # When it inserts a resource row carrying B's partition id
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute(
            "INSERT INTO resource (partition_id, resource_type, resource_id, version, last_updated, raw) "
            "VALUES (%s, 'Patient', 'planted', 1, now(), '{}')",
            (pid_b,),
        )
    app_conn.rollback()
    # Then the policy refuses it and B is unchanged
    after = owner_conn.execute("SELECT count(*) FROM resource WHERE partition_id = %s", (pid_b,)).fetchone()
    assert after == before


def test_a_transaction_in_one_partition_cannot_update_or_delete_another_partitions_rows(
    two_partitions, app_conn, owner_conn
):
    # Given a transaction set to partition A
    a, b = two_partitions
    pid_a, pid_b = _pid(owner_conn, a), _pid(owner_conn, b)
    raw_b = owner_conn.execute("SELECT raw FROM resource WHERE partition_id = %s", (pid_b,)).fetchall()
    _enter(app_conn, a)
    # When it updates and deletes B's rows by partition id
    updated = app_conn.execute("UPDATE resource SET raw = '{}' WHERE partition_id = %s", (pid_b,)).rowcount
    deleted = app_conn.execute("DELETE FROM resource WHERE partition_id = %s", (pid_b,)).rowcount
    app_conn.commit()
    # Then nothing was touched
    assert (updated, deleted) == (0, 0)
    after = owner_conn.execute("SELECT raw FROM resource WHERE partition_id = %s", (pid_b,)).fetchall()
    assert after == raw_b
    # And moving one of A's own rows into B is refused too
    _enter(app_conn, a)
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute("UPDATE resource SET partition_id = %s WHERE partition_id = %s", (pid_b, pid_a))
    app_conn.rollback()


def test_a_transaction_in_one_partition_cannot_create_another_partition(app_conn, partition, other_partition):
    # Given a transaction set to partition A
    _enter(app_conn, partition)
    # When it creates the partition row of B
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute("INSERT INTO partition (name) VALUES (%s)", (other_partition,))
    app_conn.rollback()


def test_the_application_role_cannot_switch_row_security_off(two_partitions, app_conn):
    # Given the application role
    # When it tries to disable row-level security on the table
    with pytest.raises(errors.InsufficientPrivilege, match="owner"):
        app_conn.execute("ALTER TABLE resource DISABLE ROW LEVEL SECURITY")
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege, match="owner"):
        app_conn.execute("ALTER TABLE resource NO FORCE ROW LEVEL SECURITY")
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("DROP POLICY bulkhead_partition ON resource")
    app_conn.rollback()
    # And when it turns row_security off for its session, the query fails instead of seeing every row
    app_conn.execute("SET row_security = off")
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute("SELECT count(*) FROM resource")
    app_conn.rollback()
    # And it cannot become the owner
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("SET ROLE postgres")
    app_conn.rollback()


def test_the_admin_session_is_the_one_explicit_way_across_partitions(two_partitions, database: Database):
    # Given resources in two partitions
    a, b = two_partitions
    # When an administrative listing runs
    names = {p.name for p in database.partitions()}
    # Then it sees both, while a unit of work in A sees A only
    assert {a, b} <= names
    with database.unit_of_work(a) as uow:
        assert uow.resources.current("Patient", "same-id") is not None
    with database.unit_of_work(b) as uow:
        assert uow.resources.current("Patient", "same-id") is not None


def test_the_audit_table_is_append_only_for_the_application(app_conn):
    # Given the application role
    # When it appends an audit event, then tries to read, change or delete events
    app_conn.execute("INSERT INTO audit_event (operation, outcome) VALUES ('probe', 'success')")
    app_conn.commit()
    visible = app_conn.execute("SELECT count(*) FROM audit_event").fetchone()[0]
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("UPDATE audit_event SET outcome = 'x'")
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("DELETE FROM audit_event")
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("TRUNCATE audit_event")
    app_conn.rollback()
    # Then appending works, changing is refused, and reading is not for the application role, whatever
    # flag it sets (the old 'bulkhead.admin' one included)
    assert visible == 0
    app_conn.execute("SELECT set_config('bulkhead.admin', 'on', true)")
    assert app_conn.execute("SELECT count(*) FROM audit_event WHERE operation = 'probe'").fetchone()[0] == 0
    app_conn.rollback()


def test_only_the_administrative_role_reads_the_audit_trail_and_it_cannot_rewrite_it(app_conn, admin_conn):
    # Given an event the application appended
    app_conn.execute("INSERT INTO audit_event (operation, outcome) VALUES ('admin-probe', 'success')")
    app_conn.commit()
    # When the administrative role reads it, then tries to change and delete it
    seen = admin_conn.execute("SELECT count(*) FROM audit_event WHERE operation = 'admin-probe'").fetchone()[
        0
    ]
    with pytest.raises(errors.InsufficientPrivilege):
        admin_conn.execute("UPDATE audit_event SET outcome = 'x' WHERE operation = 'admin-probe'")
    with pytest.raises(errors.InsufficientPrivilege):
        admin_conn.execute("DELETE FROM audit_event WHERE operation = 'admin-probe'")
    # Then it sees the event and may not change it
    assert seen == 1


def test_the_administrative_role_sees_every_partition_but_cannot_write_resources(
    two_partitions, admin_conn, owner_conn
):
    # Given Patient/same-id in partitions A and B
    a, b = two_partitions
    pids = {_pid(owner_conn, a), _pid(owner_conn, b)}
    # When the administrative role reads resources and partitions with no partition set, then writes one
    seen = {r[0] for r in admin_conn.execute("SELECT DISTINCT partition_id FROM resource").fetchall()}
    names = {r[0] for r in admin_conn.execute("SELECT name FROM partition").fetchall()}
    with pytest.raises(errors.InsufficientPrivilege):
        admin_conn.execute("UPDATE resource SET raw = '{}' WHERE partition_id = %s", (min(pids),))
    # Then it sees both partitions, and changing tenant data is not among its rights
    assert pids <= seen
    assert {a, b} <= names


def test_the_application_role_can_neither_become_the_administrative_role_nor_create_objects(app_conn):
    # Given the application role
    # When it tries to SET ROLE to the administrative role, create a function that would run with other
    # rights, or add a policy of its own
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("SET ROLE bulkhead_admin")
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute(
            "CREATE FUNCTION public.bulkhead_probe() RETURNS boolean LANGUAGE sql SECURITY DEFINER "
            "AS 'SELECT true'"
        )
    app_conn.rollback()
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("CREATE POLICY probe ON job USING (true)")
    app_conn.rollback()
    # Then the catalogue agrees: no membership and no CREATE on the schema
    member, create = app_conn.execute(
        "SELECT pg_has_role(current_user, 'bulkhead_admin', 'MEMBER'), "
        "has_schema_privilege(current_user, 'public', 'CREATE')"
    ).fetchone()
    assert (member, create) == (False, False)


def test_the_old_admin_flag_grants_nothing_in_any_table(two_partitions, app_conn, owner_conn):
    # Given rows of partition B in every kind of table (the job, audit, configuration and client tables too)
    a, b = two_partitions
    owner_conn.execute(
        "INSERT INTO job (id, group_id, kind, partition, definition, definition_hash, status, max_attempts) "
        "VALUES (%s, %s, 'export', %s, '{}', repeat('0', 64), 'queued', 1)",
        (f"j{b}"[:32], f"j{b}"[:32], b),
    )
    owner_conn.execute(
        "INSERT INTO audit_event (partition, operation, outcome) VALUES (%s, 'x', 'success')", (b,)
    )
    owner_conn.execute("INSERT INTO partition_config (partition, max_concurrent_jobs) VALUES (%s, 1)", (b,))
    owner_conn.execute(
        "INSERT INTO smart_client (client_id, partition, jwks, scope) VALUES (%s, %s, '{}', 'system/*.rs')",
        (f"client-{b}", b),
    )
    pid_b = _pid(owner_conn, b)
    # When an application-role transaction in A sets the old administrative flag and asks for B's rows
    _enter(app_conn, a)
    app_conn.execute("SELECT set_config('bulkhead.admin', 'on', true)")
    counts = {
        table: app_conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", (value,)).fetchone()[0]
        for table, where, value in (
            ("resource", "partition_id = %s", pid_b),
            ("partition", "name = %s", b),
            ("job", "partition = %s", b),
            ("audit_event", "partition = %s", b),
            ("partition_config", "partition = %s", b),
        )
    }
    app_conn.rollback()
    # Then it sees none of them (and the client table is not the application's at all)
    assert counts == dict.fromkeys(counts, 0)
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("SELECT count(*) FROM smart_client")
    app_conn.rollback()


def test_an_application_session_of_one_partition_cannot_read_update_or_plant_another_partitions_jobs(
    app_conn, owner_conn, partition, other_partition
):
    # Given a job of partition A
    job_id = f"j{partition}"[:32]
    owner_conn.execute(
        "INSERT INTO job (id, group_id, kind, partition, definition, definition_hash, status, max_attempts) "
        "VALUES (%s, %s, 'export', %s, '{}', repeat('0', 64), 'running', 1)",
        (job_id, job_id, partition),
    )
    before = owner_conn.execute("SELECT * FROM job WHERE id = %s", (job_id,)).fetchone()
    # When a transaction of partition B reads it by id, updates and deletes it, and inserts a job into A
    _enter(app_conn, other_partition)
    read = app_conn.execute("SELECT count(*) FROM job WHERE id = %s", (job_id,)).fetchone()[0]
    updated = app_conn.execute("UPDATE job SET cancel_requested = true WHERE id = %s", (job_id,)).rowcount
    deleted = app_conn.execute("DELETE FROM job WHERE id = %s", (job_id,)).rowcount
    app_conn.commit()
    _enter(app_conn, other_partition)
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute(
            "INSERT INTO job (id, group_id, kind, partition, definition, definition_hash, status, "
            "max_attempts) VALUES ('planted', 'planted', 'export', %s, '{}', repeat('0', 64), 'queued', 1)",
            (partition,),
        )
    app_conn.rollback()
    # Then A's job does not exist for B, and is unchanged
    assert (read, updated, deleted) == (0, 0, 0)
    assert owner_conn.execute("SELECT * FROM job WHERE id = %s", (job_id,)).fetchone() == before


def test_migrate_refuses_an_application_role_that_could_set_role_to_the_administrative_one(
    owner_database_url,
):
    # Given fresh roles where the application one is a member of the administrative one (in a transaction
    # that is rolled back: roles are shared by the whole server)
    owner = Database(owner_database_url)
    try:
        with owner.engine.connect() as conn:
            conn.exec_driver_sql("CREATE ROLE probe_app_role LOGIN NOINHERIT")
            conn.exec_driver_sql("CREATE ROLE probe_admin_role LOGIN NOINHERIT")
            conn.exec_driver_sql("GRANT probe_admin_role TO probe_app_role")
            # When the schema is secured for them
            with pytest.raises(ValueError, match="SET ROLE"):
                secure_schema(conn, "probe_app_role", admin_role="probe_admin_role")
            conn.rollback()
            # Then nothing of it stays
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_roles WHERE rolname IN ('probe_app_role', 'probe_admin_role')"
            ).scalar()
            assert left == 0
    finally:
        owner.dispose()


def test_the_owner_cannot_rewrite_the_audit_trail_either(owner_conn):
    # Given an audit event
    owner_conn.execute("INSERT INTO audit_event (operation, outcome) VALUES ('owner-probe', 'success')")
    # When the owner tries to change it
    with pytest.raises(errors.RaiseException, match="append-only"):
        owner_conn.execute("UPDATE audit_event SET outcome = 'failure' WHERE operation = 'owner-probe'")
    # Then the trigger refuses
    assert (
        owner_conn.execute("SELECT outcome FROM audit_event WHERE operation = 'owner-probe'").fetchone()[0]
        == "success"
    )
