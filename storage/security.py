"""Row-level security and database roles: the database itself keeps partitions apart.

The owner (the role that runs migrations) owns every table. The application connects as a separate login
role that owns nothing, cannot bypass row-level security, and sees only the rows of the partition its
transaction names (``bulkhead.partition``, set by the unit of work). Administrative work that must cross
partitions sets ``bulkhead.admin`` through ``Database.admin_session()``.

``secure_schema`` runs after every migration; it is idempotent and covers every tenant table, including
ones a later migration adds: a table with a ``partition_id`` column is a tenant table.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit, urlunsplit

from psycopg import sql
from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
POLICY = "bulkhead_partition"
_PARTITION_ID_USING = "partition_id = (SELECT bulkhead_partition_id()) OR (SELECT bulkhead_is_admin())"
_NAME_USING = "{col} = current_setting('bulkhead.partition', true) OR (SELECT bulkhead_is_admin())"
_ADMIN_USING = "(SELECT bulkhead_is_admin())"

# Tables keyed by partition name rather than id, and the column that holds it.
_BY_NAME = {"partition": "name", "partition_config": "partition"}
# Tables that only administrative work may read; rows may be appended from any transaction.
_ADMIN_READ_APPEND = {"audit_event"}
# Tables that only administrative work may touch.
_ADMIN_ONLY = {"smart_client"}
# Tables the application may read and append to but never change.
_APPEND_ONLY = {"audit_event"}
# Tables the application has no business with.
_NO_ACCESS = {"alembic_version"}


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


def _policy(conn: Connection, table: str, using: str, check: str | None = None) -> None:
    ident = sql.Identifier(table).as_string(None)
    conn.exec_driver_sql(f"ALTER TABLE {ident} ENABLE ROW LEVEL SECURITY")
    conn.exec_driver_sql(f"ALTER TABLE {ident} FORCE ROW LEVEL SECURITY")
    conn.exec_driver_sql(f"DROP POLICY IF EXISTS {POLICY} ON {ident}")
    conn.exec_driver_sql(f"CREATE POLICY {POLICY} ON {ident} USING ({using}) WITH CHECK ({check or using})")


def _ensure_role(conn: Connection, role: str, password: str | None) -> None:
    owner = conn.execute(text("SELECT current_user")).scalar_one()
    if owner == role:
        raise ValueError(
            f"The application role {role!r} must not be the role that runs migrations and owns the tables"
        )
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    ident = sql.Identifier(role).as_string(None)
    if exists is None:
        # Roles are shared by every database of the server: another migrator may create it at the same time.
        conn.exec_driver_sql(
            "DO $$ BEGIN "
            f"CREATE ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
        log.info("created database role %s for the application", role)
    bypass = conn.execute(
        text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).scalar_one()
    if bypass:
        raise ValueError(f"The application role {role!r} is a superuser or bypasses row-level security")
    if password:
        literal = sql.Literal(password).as_string(None)
        conn.exec_driver_sql(f"ALTER ROLE {ident} PASSWORD {literal}")


def secure_schema(conn: Connection, role: str, password: str | None = None) -> list[str]:
    """Create the application role if needed, grant it what it needs, and force RLS on tenant tables.

    Return the tenant tables now under a partition policy.
    """
    validate_role_name(role)
    _ensure_role(conn, role, password)
    ident = sql.Identifier(role).as_string(None)
    database = sql.Identifier(conn.execute(text("SELECT current_database()")).scalar_one()).as_string(None)
    conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {ident}")
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
    conn.exec_driver_sql(f"REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM {ident}")
    existing = set(
        conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
    )
    for table in sorted(_APPEND_ONLY & existing):
        conn.exec_driver_sql(f"REVOKE UPDATE, DELETE ON {sql.Identifier(table).as_string(None)} FROM {ident}")
    for table in sorted(_NO_ACCESS & existing):
        conn.exec_driver_sql(f"REVOKE ALL ON {sql.Identifier(table).as_string(None)} FROM {ident}")

    secured = tenant_tables(conn)
    for table in secured:
        _policy(conn, table, _PARTITION_ID_USING)
    for table, column in _BY_NAME.items():
        if table in existing:
            _policy(conn, table, _NAME_USING.format(col=sql.Identifier(column).as_string(None)))
            secured.append(table)
    for table in sorted(_ADMIN_READ_APPEND & existing):
        _policy(conn, table, _ADMIN_USING, "true")
        secured.append(table)
    for table in sorted(_ADMIN_ONLY & existing):
        _policy(conn, table, _ADMIN_USING)
        secured.append(table)
    if "job" in existing:
        from storage.audit import JOB_AUDIT_SQL

        conn.exec_driver_sql(JOB_AUDIT_SQL)
    log.info("row-level security forced on %s for role %s", ", ".join(sorted(secured)), role)
    return sorted(secured)
