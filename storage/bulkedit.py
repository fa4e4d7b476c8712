"""Storage for the partition-wide jobs: surrogate-id ranges, selection by search, and batch writes.

- ``live_ranges``: the live current versions of a partition, per type, cut into ranges of about N rows
  (one index scan of ``ix_resource_live``), with the exact number of rows in each at planning time.
- ``select_live``: the surrogate ids of live current versions of one type in a range that match a search
  (the search module's partition-scoped selection; ``None`` selects every one).
- ``soft_delete`` / ``hard_delete`` / ``purge_history`` / ``write_versions``: one batch each, in the caller's
  transaction, re-checking under row locks that each version is still current (a version changed since it
  was selected is left to the writer that changed it).
- ``ledger_add`` / ``ledger_counts``: per-batch counts committed with the batch, so that a retried or
  cancelled job reports exactly what it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from storage.search import parse_search, registry_for, select_surrogate_ids
from storage.search.index import unindex_resources
from storage.uow import UnitOfWork


@dataclass(frozen=True)
class IdRange:
    """A slice of one type's live current versions: surrogate ids ``low..high`` (inclusive), ``rows``."""

    resource_type: str
    low: int
    high: int
    rows: int


@dataclass(frozen=True)
class LiveVersion:
    """A current, live version as a batch writer reads it under a row lock."""

    surrogate_id: int
    resource_type: str
    resource_id: str
    version: int
    raw: bytes


def partition_id(uow: UnitOfWork) -> int | None:
    """Return the partition's id, or None when it has never been written to."""
    return uow.resources.partition_id()


def live_ranges(
    uow: UnitOfWork, types: Sequence[str] | None, chunk_rows: int, *, low: int = 0, high: int | None = None
) -> list[IdRange]:
    """Return ranges of about ``chunk_rows`` live current versions per type, surrogate ids ``low..high``."""
    pid = partition_id(uow)
    if pid is None:
        return []
    rows = uow.session.execute(
        text(
            """
            SELECT resource_type, min(surrogate_id), max(surrogate_id), count(*)
            FROM (
                SELECT resource_type, surrogate_id,
                       (row_number() OVER (PARTITION BY resource_type ORDER BY surrogate_id) - 1)
                           / :chunk AS b
                FROM resource
                WHERE partition_id = :pid AND NOT is_history AND NOT is_deleted AND surrogate_id >= :low
                  AND surrogate_id <= :high
                  AND (CAST(:types AS text[]) IS NULL OR resource_type = ANY(CAST(:types AS text[])))
            ) x
            GROUP BY resource_type, b
            ORDER BY resource_type, b
            """
        ),
        {
            "pid": pid,
            "chunk": max(chunk_rows, 1),
            "low": low,
            "high": high if high is not None else 2**62,
            "types": list(types) if types else None,
        },
    ).all()
    return [IdRange(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


def select_live(
    uow: UnitOfWork, rtype: str, low: int, high: int, query: Sequence[tuple[str, str]] | None
) -> list[int]:
    """Return the surrogate ids of live current ``rtype`` versions in ``low..high`` matching ``query``."""
    pid = partition_id(uow)
    if pid is None:
        return []
    if query:
        return select_surrogate_ids(uow.session, pid, rtype, list(query), low=low, high=high)
    return list(
        uow.session.execute(
            text(
                "SELECT surrogate_id FROM resource WHERE partition_id = :pid AND resource_type = :t"
                " AND NOT is_history AND NOT is_deleted AND surrogate_id BETWEEN :low AND :high"
                " ORDER BY surrogate_id"
            ),
            {"pid": pid, "t": rtype, "low": low, "high": high},
        ).scalars()
    )


def check_query(uow: UnitOfWork, types: Sequence[str], query: Sequence[tuple[str, str]]) -> None:
    """Raise InvalidRequest if ``query`` is not a valid search of each of ``types`` in this partition."""
    registry = registry_for(uow.session, partition_id(uow))
    for rtype in types:
        parse_search(registry, [rtype], list(query), criteria_only=True)


def lock_live(uow: UnitOfWork, surrogate_ids: Sequence[int]) -> list[LiveVersion]:
    """Lock and return those of ``surrogate_ids`` that are still live and current."""
    if not surrogate_ids:
        return []
    rows = uow.session.execute(
        text(
            "SELECT surrogate_id, resource_type, resource_id, version, raw FROM resource"
            " WHERE surrogate_id = ANY(:sids) AND NOT is_history AND NOT is_deleted"
            " ORDER BY surrogate_id FOR UPDATE"
        ),
        {"sids": list(surrogate_ids)},
    ).all()
    return [LiveVersion(r[0], r[1], r[2], r[3], r[4].encode("utf-8")) for r in rows]


def _per_type(types: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rtype in types:
        counts[rtype] = counts.get(rtype, 0) + 1
    return counts


def soft_delete(uow: UnitOfWork, surrogate_ids: Sequence[int], when: datetime) -> dict[str, int]:
    """Store a deletion as the next version of each still-live resource; return counts per type."""
    if not surrogate_ids:
        return {}
    done = uow.session.execute(
        text(
            """
            WITH old AS (
                UPDATE resource SET is_history = true
                WHERE surrogate_id = ANY(:sids) AND NOT is_history AND NOT is_deleted
                RETURNING partition_id, resource_type, resource_id, version, surrogate_id
            ), ins AS (
                INSERT INTO resource (partition_id, resource_type, resource_id, version, last_updated,
                                      is_deleted, is_history, raw)
                SELECT partition_id, resource_type, resource_id, version + 1, :when, true, false, NULL
                FROM old
                RETURNING resource_type
            )
            SELECT (SELECT array_agg(surrogate_id) FROM old), (SELECT array_agg(resource_type) FROM ins)
            """
        ),
        {"sids": list(surrogate_ids), "when": when},
    ).one()
    unindex_resources(uow.session, list(done[0] or []))
    return _per_type(done[1] or [])


def hard_delete(uow: UnitOfWork, surrogate_ids: Sequence[int]) -> dict[str, int]:
    """Remove every version of each still-live resource; return counts of resources per type."""
    if not surrogate_ids:
        return {}
    live = lock_live(uow, surrogate_ids)
    if not live:
        return {}
    unindex_resources(uow.session, [v.surrogate_id for v in live])
    uow.session.execute(
        text(
            """
            DELETE FROM resource r
            USING unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i)
            WHERE r.partition_id = :pid AND r.resource_type = k.t AND r.resource_id = k.i
            """
        ),
        {
            "pid": partition_id(uow),
            "types": [v.resource_type for v in live],
            "ids": [v.resource_id for v in live],
        },
    )
    return _per_type([v.resource_type for v in live])


def purge_history(uow: UnitOfWork, surrogate_ids: Sequence[int]) -> tuple[dict[str, int], int]:
    """Remove the earlier versions of each still-live resource; return resources per type, versions gone."""
    live = lock_live(uow, surrogate_ids)
    if not live:
        return {}, 0
    gone = uow.session.execute(
        text(
            """
            DELETE FROM resource r
            USING unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i)
            WHERE r.partition_id = :pid AND r.resource_type = k.t AND r.resource_id = k.i AND r.is_history
            """
        ),
        {
            "pid": partition_id(uow),
            "types": [v.resource_type for v in live],
            "ids": [v.resource_id for v in live],
        },
    )
    return _per_type([v.resource_type for v in live]), int(getattr(gone, "rowcount", 0) or 0)


_STAGE = "bulk_edit_stage"


def write_versions(
    uow: UnitOfWork, previous: Sequence[LiveVersion], raws: Sequence[bytes], when: datetime
) -> list[int]:
    """Store ``raws[i]`` as the version after ``previous[i]`` (locked by ``lock_live``); return new ids.

    The rows go through a temporary table (``COPY``, then one ``INSERT … SELECT``): row-level security
    refuses ``COPY`` into ``resource`` itself, and large array parameters cost more than the copy.
    """
    if not previous:
        return []
    session = uow.session
    sids = [p.surrogate_id for p in previous]
    session.execute(
        text("UPDATE resource SET is_history = true WHERE surrogate_id = ANY(:sids)"), {"sids": sids}
    )
    unindex_resources(session, sids)
    pid = partition_id(uow)
    conn = session.connection().connection.driver_connection
    assert conn is not None
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (n int, resource_type text, resource_id text,"
            " version int, raw text) ON COMMIT DELETE ROWS"
        )
        cur.execute(f"DELETE FROM {_STAGE}")
        with cur.copy(f"COPY {_STAGE} (n, resource_type, resource_id, version, raw) FROM STDIN") as copy:
            for n, (p, raw) in enumerate(zip(previous, raws, strict=True)):
                copy.write_row((n, p.resource_type, p.resource_id, p.version + 1, raw.decode("utf-8")))
        cur.execute(
            f"""
            WITH ins AS (
                INSERT INTO resource (partition_id, resource_type, resource_id, version, last_updated,
                                      is_deleted, is_history, raw)
                SELECT %s, resource_type, resource_id, version, %s, false, false, raw FROM {_STAGE} ORDER BY n
                RETURNING surrogate_id, resource_type, resource_id
            )
            SELECT s.n, ins.surrogate_id FROM ins
            JOIN {_STAGE} s ON s.resource_type = ins.resource_type AND s.resource_id = ins.resource_id
            """,
            (pid, when),
        )
        found = dict(cur.fetchall())
    return [int(found[n]) for n in range(len(previous))]


def ledger_add(uow: UnitOfWork, group_id: str, job_id: str, counts: dict[str, int]) -> None:
    """Record what a batch changed, in the batch's own transaction."""
    items = [(t, c) for t, c in sorted(counts.items()) if c]
    if not items:
        return
    uow.session.execute(
        text(
            "INSERT INTO bulk_ledger (partition_id, group_id, job_id, resource_type, count)"
            " SELECT :pid, :g, :j, t, c"
            " FROM unnest(CAST(:types AS text[]), CAST(:counts AS int[])) AS k(t, c)"
        ),
        {
            "pid": partition_id(uow),
            "g": group_id,
            "j": job_id,
            "types": [t for t, _ in items],
            "counts": [c for _, c in items],
        },
    )


def ledger_counts(uow: UnitOfWork, group_id: str, job_id: str | None = None) -> dict[str, int]:
    """Return what the batches of a job (or of a whole group) changed, per type."""
    pid = partition_id(uow)
    if pid is None:
        return {}
    rows = uow.session.execute(
        text(
            "SELECT resource_type, sum(count) FROM bulk_ledger WHERE partition_id = :pid AND group_id = :g"
            " AND (CAST(:j AS text) IS NULL OR job_id = :j) GROUP BY resource_type ORDER BY resource_type"
        ),
        {"pid": pid, "g": group_id, "j": job_id},
    ).all()
    return {r[0]: int(r[1]) for r in rows}
