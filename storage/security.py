"""Row-level security and database roles: the database itself keeps partitions apart.

Three roles. The owner (the role that runs migrations) owns every table. The application role owns nothing,
cannot bypass row-level security, and sees only the rows of the partition its transaction names
(``bulkhead.partition``, set by the unit of work); with no partition set it sees nothing. The administrative
role owns nothing and cannot bypass row-level security either; policies written for it alone let it see
every partition. The application role is not a member of the administrative role (no ``SET ROLE``), cannot
create objects in the schema (no function or policy of its own), and no setting it can change widens what
its policies show: the only way across partitions is a connection as the administrative role
(``Database.admin_session()``).

``secure_schema`` runs after every migration, in the same transaction; it is idempotent and covers every
tenant table, including ones a later migration adds: a table with a ``partition_id`` column is a tenant table.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit, urlunsplit

from psycopg import sql
from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
DEFAULT_ADMIN_ROLE = "bulkhead_admin"
#: The tenant policy: rows of the partition the session names (every role; none is set → no rows).
POLICY = "bulkhead_partition"
#: The administrative policy: every row, for the administrative role only.
ADMIN_POLICY = "bulkhead_admin"
#: Appending to the audit trail, for every role.
APPEND_POLICY = "bulkhead_append"
_PARTITION_ID_USING = "partition_id = (SELECT bulkhead_partition_id())"
_NAME_USING = "{col} = current_setting('bulkhead.partition', true)"

# Tables keyed by partition name rather than id, and the column that holds it.
_BY_NAME = {"partition": "name", "partition_config": "partition", "job": "partition"}
# Tables that only administrative work may read; rows may be appended from any transaction.
_ADMIN_READ_APPEND = {"audit_event"}
# Tables that only administrative work may touch.
_ADMIN_ONLY = {"smart_client"}
# Tables the application may read and append to but never change.
_APPEND_ONLY = {"audit_event"}
# Tables the application may read (its own partition's rows) but only administrative work changes.
_READ_ONLY = {"partition_config"}
# Tables the application has no business with.
_NO_ACCESS = {"alembic_version", *_ADMIN_ONLY}
# Tables the administrative role changes (it reads every table but ``alembic_version``, and appends to
# ``audit_event``: the job trigger writes there when the release window or the sweeper changes a job).
_ADMIN_WRITES = {"job", "partition_config", "smart_client"}


# Installed by storage.security.secure_schema once a ``job`` table exists. Reads the row as JSON so that it
# does not depend on the job table's exact column set (id, kind, partition, status, worker_id, attempts).
JOB_AUDIT_SQL = """
CREATE OR REPLACE FUNCTION bulkhead_audit_job() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n jsonb := to_jsonb(NEW);
    o jsonb := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) ELSE NULL END;
BEGIN
    IF TG_OP = 'UPDATE' AND (o->>'status') IS NOT DISTINCT FROM (n->>'status') THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_event (partition, actor, operation, job_id, outcome, detail)
    VALUES (
        left(coalesce(n->>'partition', n->>'partition_name'), 64),
        left(coalesce(n->>'worker_id', n->>'worker', 'system'), 256),
        left('job.' || coalesce(n->>'status', 'unknown'), 64),
        left(n->>'id', 64),
        CASE WHEN lower(coalesce(n->>'status', '')) IN ('failed', 'error') THEN 'failure' ELSE 'success' END,
        jsonb_build_object(
            'kind', n->>'kind', 'group_id', n->>'group_id', 'from', o->>'status', 'to', n->>'status',
            'attempts', n->>'attempts'
        )::text
    );
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER job_audit AFTER INSERT OR UPDATE ON job
    FOR EACH ROW EXECUTE FUNCTION bulkhead_audit_job();
"""


def validate_role_name(role: str) -> str:
    """Return ``role`` if it is a plain lower-case SQL identifier, else raise ValueError."""
    if not _ROLE.fullmatch(role):
        raise ValueError(f"Invalid database role name {role!r}: use lower-case letters, digits and '_'")
    return role


def role_url(url: str, role: str, password: str | None = None) -> str:
    """Return ``url`` with its user replaced by ``role`` (and ``password``, when given)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(role, safe="")
    if password:
        user += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def tenant_tables(conn: Connection) -> list[str]:
    """Return the tables of the public schema that carry a ``partition_id`` column."""
    rows = conn.execute(
        text(
            """
            SELECT c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'partition_id' AND NOT a.attisdropped
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            ORDER BY c.relname
            """
        )
    ).scalars()
    return list(rows)


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _secure_table(conn: Connection, table: str, admin_role: str, tenant: str | None) -> None:
    """Force RLS on ``table``: the tenant policy ``tenant`` (if any) and the administrative role's."""
    ident = _ident(table)
    conn.exec_driver_sql(f"ALTER TABLE {ident} ENABLE ROW LEVEL SECURITY")
    conn.exec_driver_sql(f"ALTER TABLE {ident} FORCE ROW LEVEL SECURITY")
    for name in (POLICY, ADMIN_POLICY, APPEND_POLICY):
        conn.exec_driver_sql(f"DROP POLICY IF EXISTS {_ident(name)} ON {ident}")
    if tenant is not None:
        conn.exec_driver_sql(f"CREATE POLICY {POLICY} ON {ident} USING ({tenant}) WITH CHECK ({tenant})")
    conn.exec_driver_sql(
        f"CREATE POLICY {ADMIN_POLICY} ON {ident} TO {_ident(admin_role)} USING (true) WITH CHECK (true)"
    )


def _ensure_role(conn: Connection, role: str, password: str | None, what: str) -> None:
    owner = conn.execute(text("SELECT current_user")).scalar_one()
    if owner == role:
        raise ValueError(
            f"The {what} role {role!r} must not be the role that runs migrations and owns the tables"
        )
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    ident = _ident(role)
    if exists is None:
        # Roles are shared by every database of the server: another migrator may create it at the same time.
        conn.exec_driver_sql(
            "DO $$ BEGIN "
            f"CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
        log.info("created database role %s for the %s", role, what)
    bypass = conn.execute(
        text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).scalar_one()
    if bypass:
        raise ValueError(f"The {what} role {role!r} is a superuser or bypasses row-level security")
    if password:
        literal = sql.Literal(password).as_string(None)
        conn.exec_driver_sql(f"ALTER ROLE {ident} PASSWORD {literal}")


def _check_separation(conn: Connection, app_role: str, admin_role: str) -> None:
    """Refuse roles that could become one another (or the owner), and take CREATE on the schema from them."""
    if app_role == admin_role:
        raise ValueError(f"The application and administrative roles must differ (both are {app_role!r})")
    owner = conn.execute(text("SELECT current_user")).scalar_one()
    for member, of in (
        (app_role, admin_role),
        (app_role, owner),
        (admin_role, owner),
        (admin_role, app_role),
    ):
        if conn.execute(text("SELECT pg_has_role(:m, :o, 'MEMBER')"), {"m": member, "o": of}).scalar_one():
            raise ValueError(
                f"The role {member!r} is a member of {of!r} (it could SET ROLE to it): "
                f"REVOKE {of} FROM {member}"
            )
    for role in (app_role, admin_role):
        conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA public FROM {_ident(role)}")
        if conn.execute(
            text("SELECT has_schema_privilege(:r, 'public', 'CREATE')"), {"r": role}
        ).scalar_one():
            raise ValueError(
                f"The role {role!r} may create objects in schema public (through PUBLIC): "
                "run REVOKE CREATE ON SCHEMA public FROM PUBLIC as the schema's owner"
            )


def _grant_app(conn: Connection, role: str, existing: set[str]) -> None:
    ident = _ident(role)
    conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {ident}")
    for table in sorted(_APPEND_ONLY & existing):
        conn.exec_driver_sql(f"REVOKE UPDATE, DELETE ON {_ident(table)} FROM {ident}")
    for table in sorted(_READ_ONLY & existing):
        conn.exec_driver_sql(f"REVOKE INSERT, UPDATE, DELETE ON {_ident(table)} FROM {ident}")
    for table in sorted(_NO_ACCESS & existing):
        conn.exec_driver_sql(f"REVOKE ALL ON {_ident(table)} FROM {ident}")


def _grant_admin(conn: Connection, role: str, existing: set[str]) -> None:
    ident = _ident(role)
    conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ident}")
    conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
    for table in sorted(_ADMIN_WRITES & existing):
        conn.exec_driver_sql(f"GRANT INSERT, UPDATE, DELETE ON {_ident(table)} TO {ident}")
    for table in sorted(_APPEND_ONLY & existing):
        conn.exec_driver_sql(f"GRANT INSERT ON {_ident(table)} TO {ident}")
    if "alembic_version" in existing:
        conn.exec_driver_sql(f"REVOKE ALL ON alembic_version FROM {ident}")


def secure_schema(
    conn: Connection,
    role: str,
    password: str | None = None,
    *,
    admin_role: str = DEFAULT_ADMIN_ROLE,
    admin_password: str | None = None,
) -> list[str]:
    """Create the application and administrative roles if needed, grant each what it needs, and force RLS
    on every tenant table with a tenant policy and an administrative one.

    Return the tables now under row-level security.
    """
    validate_role_name(role)
    validate_role_name(admin_role)
    _ensure_role(conn, role, password, "application")
    _ensure_role(conn, admin_role, admin_password, "administrative")
    _check_separation(conn, role, admin_role)
    database = _ident(conn.execute(text("SELECT current_database()")).scalar_one())
    for who in (role, admin_role):
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {_ident(who)}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {_ident(who)}")
    existing = set(
        conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
    )
    _grant_app(conn, role, existing)
    _grant_admin(conn, admin_role, existing)

    secured = tenant_tables(conn)
    for table in secured:
        _secure_table(conn, table, admin_role, _PARTITION_ID_USING)
    for table, column in _BY_NAME.items():
        if table in existing:
            _secure_table(conn, table, admin_role, _NAME_USING.format(col=_ident(column)))
            secured.append(table)
    for table in sorted(_ADMIN_READ_APPEND & existing):
        _secure_table(conn, table, admin_role, None)
        conn.exec_driver_sql(f"CREATE POLICY {APPEND_POLICY} ON {_ident(table)} FOR INSERT WITH CHECK (true)")
        secured.append(table)
    for table in sorted(_ADMIN_ONLY & existing):
        _secure_table(conn, table, admin_role, None)
        secured.append(table)
    if "job" in existing:
        conn.exec_driver_sql(JOB_AUDIT_SQL)
    log.info(
        "row-level security forced on %s for roles %s (one partition) and %s (every partition)",
        ", ".join(sorted(secured)),
        role,
        admin_role,
    )
    return sorted(secured)
