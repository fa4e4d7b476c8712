"""The instant a write is stamped with (``meta.lastUpdated``), taken only once its transaction has an id.

An export's snapshot is an instant T; its planner waits for every write transaction in progress, then reads
the versions stamped at or before T. That is complete only if no write can be stamped at or before T and
still be invisible to the wait: a transaction gets its id at its first write, so a write stamped before its
transaction had an id could commit after the planner's wait without having been waited for. Asking for the
id first (``pg_current_xact_id()`` assigns it) closes that window whatever the delay between stamping and
writing; what remains is the difference between the clocks of the processes that stamp, which the
export's settle time covers (``BULKHEAD_EXPORT_SETTLE_SECONDS``).
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

_KEY = "bulkhead.xid_transaction"


def write_instant(session: Session) -> datetime:
    """Return now, after making sure the session's transaction has an id (once per transaction)."""
    known = session.info.get(_KEY)
    transaction = session.get_transaction()
    if transaction is None or known is None or known() is not transaction:
        session.execute(text("SELECT pg_current_xact_id()"))
        session.info[_KEY] = weakref.ref(session.get_transaction())
    return datetime.now(UTC)
