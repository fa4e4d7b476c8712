"""COPY into tables under row-level security: through a session-local staging table, then INSERT … SELECT.

PostgreSQL refuses ``COPY … FROM`` into a table with row-level security for a role the policies apply to
(the application role is one). A temporary table has no policies, so rows are COPYed there, then moved with
one ``INSERT INTO … SELECT``, which the partition policy checks row by row like any insert. The staging
table lives as long as the database session and is emptied after each move with ``DELETE`` (``TRUNCATE``
would give it new files and rewrite its catalog rows every batch); ``ON COMMIT DELETE ROWS`` gives the space
back at each commit. One connection reuses it batch after batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


def stage_name(table: str) -> str:
    """Return the name of ``table``'s staging table."""
    return f"bulkhead_stage_{table}"


def ensure_stages(cur: psycopg.Cursor[Any], tables: Iterable[str]) -> None:
    """Create the staging tables of ``tables`` (same columns, no indexes) where this session has none yet."""
    parts = [
        f"IF to_regclass('pg_temp.{stage_name(t)}') IS NULL THEN "
        f"CREATE TEMPORARY TABLE {stage_name(t)} (LIKE {t}) ON COMMIT DELETE ROWS; END IF;"
        for t in tables
    ]
    if parts:
        cur.execute("DO $$ BEGIN " + " ".join(parts) + " END $$")


def insert_rows(
    cur: psycopg.Cursor[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table`` through its staging table.

    Call ``ensure_stages`` for the table first, in the same session.
    """
    stage = stage_name(table)
    names = ", ".join(columns)
    with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage}; DELETE FROM {stage}")
