"""The unit of work: one transaction, scoped to one partition."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from core.errors import Conflict, ServiceUnavailable
from storage.repository import ResourceRepository

# Deadlock, serialization failure and lock timeout: the transaction lost a race with another one and can
# simply be retried, so the client hears 409 (as for a unique violation), never 500.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
_CONFLICT = "A concurrent change conflicted with this one; try again"


def _lost_a_race(exc: BaseException | None) -> bool:
    """Return whether ``exc`` is a database error that a retry of the same transaction would resolve."""
    if isinstance(exc, IntegrityError):
        return True
    if isinstance(exc, OperationalError):
        return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
    return False


class UnitOfWork:
    """Own one database transaction in one partition; commit explicitly, roll back otherwise."""

    def __init__(self, engine: Engine, partition: str):
        self.engine = engine
        self.partition = partition
        self._session: Session | None = None

    def __enter__(self) -> UnitOfWork:
        self._session = Session(self.engine, expire_on_commit=False)
        self._set_partition()
        self.resources = ResourceRepository(self._session, self.partition)
        return self

    def _set_partition(self) -> None:
        assert self._session is not None
        self._session.execute(
            text("SELECT set_config('bulkhead.partition', :p, true)"), {"p": self.partition}
        )

    @property
    def session(self) -> Session:
        """Return the session of this unit of work (storage code only)."""
        assert self._session is not None, "use the unit of work in a with block"
        return self._session

    def commit(self) -> None:
        """Commit the transaction and start a new one in the same partition."""
        try:
            self.session.commit()
        except (IntegrityError, OperationalError) as exc:
            self.session.rollback()
            if _lost_a_race(exc):
                raise Conflict(_CONFLICT) from exc
            raise
        self._set_partition()

    def rollback(self) -> None:
        """Throw away everything since the last commit."""
        self.session.rollback()
        self._set_partition()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        try:
            self._session.rollback()
        finally:
            self._session.close()
            self._session = None
        if _lost_a_race(exc):
            raise Conflict(_CONFLICT) from exc
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise ServiceUnavailable("The database connection was lost; try again") from exc
