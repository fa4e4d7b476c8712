"""Engines and connection URLs.

Every application connection carries two server-side limits (``make_engine``): ``statement_timeout``
cancels a statement that runs longer (``BULKHEAD_DATABASE_STATEMENT_TIMEOUT_SECONDS``, 5 minutes), and
``idle_in_transaction_session_timeout`` ends a session that keeps a transaction open without sending
anything (``BULKHEAD_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``, 60 s), so that no request or job can
hold locks, a snapshot and a pooled connection for longer. A bulk path whose statements legitimately run
longer (an export range's COPY, planning over a large partition, migrations) widens them for its own
transaction with ``allow_long_statements``. Either error reaches the client as 503 (``storage/uow.py``).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session

DEFAULT_STATEMENT_TIMEOUT_SECONDS = 300.0
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60.0
#: The limits a bulk path's transaction sets for itself (``allow_long_statements``).
LONG_STATEMENT_TIMEOUT_SECONDS = 6 * 3600
LONG_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 600


def sqlalchemy_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver named, whatever form it was given in."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """Return ``url`` in the plain libpq form that psycopg.connect accepts."""
    return sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


#: A pooled connection idle this long is pinged before it is handed out (a busy pool pings none: a ping on
#: every checkout was one round trip in six of a read).
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a connection on checkout only when it sat idle in the pool; a dead one is replaced."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi.execute("SELECT 1")
            dbapi.rollback()
        except psycopg.Error as exc:
            # The pool discards this connection and checks out another (SQLAlchemy's pessimistic recipe).
            raise DisconnectionError(str(exc)) from exc


def begin_in_partition(dbapi: Any, partition: str) -> bool:
    """Begin the transaction and set its partition in one round trip; False when the caller must do it.

    psycopg sends ``BEGIN`` on its own before a transaction's first statement, a round trip of its own
    before the partition setting's. When the connection has no transaction open and starts its
    transactions with a plain ``BEGIN`` (no isolation level, read-only or deferrable option, not
    autocommit), both go in one simple-protocol message; psycopg then finds the transaction open (it reads
    the state from libpq) and sends no ``BEGIN`` of its own. The name is quoted as a literal by psycopg.
    """
    if not isinstance(dbapi, psycopg.Connection) or dbapi.autocommit:
        return False
    if (dbapi.isolation_level, dbapi.read_only, dbapi.deferrable) != (None, None, None):
        return False
    if dbapi.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    literal = sql.Literal(partition).as_bytes(dbapi)
    result = dbapi.pgconn.exec_(b"BEGIN; SELECT set_config('bulkhead.partition', " + literal + b", true)")
    if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
        message = result.error_message.decode("utf-8", "replace")
        if dbapi.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            dbapi.pgconn.exec_(b"ROLLBACK")
        raise psycopg.OperationalError(f"could not begin a transaction in the partition: {message}")
    return True


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    idle_in_transaction_timeout: float = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> Engine:
    """Create an engine for a PostgreSQL URL; its connections carry both time limits (0: none)."""
    options = (
        "-c timezone=UTC"
        f" -c statement_timeout={_ms(statement_timeout)}"
        f" -c idle_in_transaction_session_timeout={_ms(idle_in_transaction_timeout)}"
    )
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=10,
        future=True,
        connect_args={"options": options},
    )
    _ping_idle_connections(engine)
    return engine


def allow_long_statements(session: Session) -> None:
    """Widen both time limits for the session's current transaction only (bulk reads and planning)."""
    session.execute(text(f"SET LOCAL statement_timeout = {_ms(LONG_STATEMENT_TIMEOUT_SECONDS)}"))
    idle = _ms(LONG_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS)
    session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle}"))


class LoginRefused(Exception):
    """The server refused the credentials of a login."""


class ServerNotAnswering(Exception):
    """The server could not be reached (not listening yet, or gone)."""


def try_login(url: str, *, timeout: float = 2.0) -> None:
    """Open and close one connection to ``url``; raise LoginRefused or ServerNotAnswering if it fails."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=max(1, int(timeout))):
            return
    except psycopg.OperationalError as err:
        if err.sqlstate in {"28P01", "28000"} or "password authentication failed" in str(err):
            raise LoginRefused(str(err)) from err
        raise ServerNotAnswering(str(err)) from err


def set_password_statement(role: str, password: str) -> str:
    """Return ``ALTER ROLE role WITH LOGIN PASSWORD '…';`` with both quoted for the SQL text."""
    statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {};\n").format(
        sql.Identifier(role), sql.Literal(password)
    )
    return statement.as_string(None)
