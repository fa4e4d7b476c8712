"""The unit of work: one transaction, scoped to one partition.

The transaction begins with the unit of work's first statement, not when the block is entered or when a
commit ends the previous one (the partition is set by the session's ``after_begin`` hook): work done
between statements before the first one, such as validating the resource a write stores, holds no open
transaction, and neither does a worker that commits one batch and reads or computes the next. From its
start to its end, a transaction's FHIRPath evaluations share one budget (``PER_TRANSACTION_SECONDS``,
``core/fhirpath_limits.py``), past which a partition's costly parameters are skipped for the rest of it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, SessionTransaction

from core.errors import Conflict, ServiceUnavailable
from core.fhirpath_guard import TransactionBudget
from core.fhirpath_limits import PER_TRANSACTION_SECONDS
from storage.db import begin_in_partition
from storage.repository import ResourceRepository

# Deadlock, serialization failure and lock timeout: the transaction lost a race with another one and can
# simply be retried, so the client hears 409 (as for a unique violation), never 500.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
_CONFLICT = "A concurrent change conflicted with this one; try again"
# A statement cancelled by statement_timeout (57014), a session ended by
# idle_in_transaction_session_timeout (25P03) or by an administrator (57P01): the database refused to
# go on with this request, which may succeed later; the client hears 503, never 500.
_TIMED_OUT_SQLSTATES = frozenset({"57014", "25P03", "57P01"})
_TIMED_OUT = "The database stopped this request: it ran longer than the server allows; try again later"


def _sqlstate(exc: BaseException | None) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None)


def timed_out(exc: BaseException | None) -> bool:
    """Return whether ``exc`` is a database error raised because a server-side time limit was reached."""
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in _TIMED_OUT_SQLSTATES


def _lost_a_race(exc: BaseException | None) -> bool:
    """Return whether ``exc`` is a database error that a retry of the same transaction would resolve."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, OperationalError):
        return _sqlstate(exc) in _RETRYABLE_SQLSTATES
    return False


class UnitOfWork:
    """Own one database transaction in one partition; commit explicitly, roll back otherwise."""

    def __init__(self, engine: Engine, partition: str, known_ids: dict[str, int] | None = None):
        self.engine = engine
        self.partition = partition
        self._known_ids = known_ids
        self._session: Session | None = None
        self._budget = TransactionBudget(PER_TRANSACTION_SECONDS)

    def __enter__(self) -> UnitOfWork:
        self._session = Session(self.engine, expire_on_commit=False)
        event.listen(self._session, "after_begin", self._set_partition)
        self.resources = ResourceRepository(self._session, self.partition, self._known_ids)
        return self

    def _set_partition(self, _session: Session, _tx: SessionTransaction, connection: Connection) -> Any:
        """Scope each transaction to the partition as it begins (``set_config`` local to the transaction),
        in the same round trip as its ``BEGIN`` where the connection allows (``begin_in_partition``)."""
        if not begin_in_partition(connection.connection.dbapi_connection, self.partition):
            connection.execute(
                text("SELECT set_config('bulkhead.partition', :p, true)"), {"p": self.partition}
            )
        self._budget.start()

    @property
    def session(self) -> Session:
        """Return the session of this unit of work (storage code only)."""
        assert self._session is not None, "use the unit of work in a with block"
        return self._session

    def commit(self) -> None:
        """Commit the transaction; the next statement begins a new one, in the same partition."""
        try:
            self.session.commit()
        except DBAPIError as exc:
            self._budget.stop()
            self.session.rollback()
            if _lost_a_race(exc):
                raise Conflict(_CONFLICT) from exc
            if timed_out(exc):
                raise ServiceUnavailable(_TIMED_OUT, retry_after=5) from exc
            raise
        self._budget.stop()

    def rollback(self) -> None:
        """Throw away everything since the last commit."""
        self.session.rollback()
        self._budget.stop()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        try:
            self._session.rollback()
        finally:
            self._budget.stop()
            self._session.close()
            self._session = None
        if _lost_a_race(exc):
            raise Conflict(_CONFLICT) from exc
        if timed_out(exc):
            raise ServiceUnavailable(_TIMED_OUT, retry_after=5) from exc
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise ServiceUnavailable("The database connection was lost; try again") from exc
