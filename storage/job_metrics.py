"""Job gauges for ``/metrics``, read from the job table at scrape time (jobs by kind, status and partition,
queue depth and the age of the oldest queued job: the stalled-queue signal). They count every partition's
jobs, so they are read on the administrative connection."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from storage.database import Database

QUEUED_STATUSES = ("queued", "enqueued", "pending")


@dataclass(frozen=True)
class JobSummary:
    """Counts of jobs per (kind, status, partition) and, per kind, the queued depth and oldest age."""

    counts: list[tuple[str, str, str, int]]
    queued: list[tuple[str, int, float]]


def _columns(database: Database) -> set[str]:
    with database.admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'job'"
            )
        ).scalars()
        return set(rows)


def job_summary(database: Database) -> JobSummary | None:
    """Return the job gauges, or None while no job table exists."""
    cols = _columns(database)
    if not cols:
        return None
    partition = next((c for c in ("partition", "partition_name") if c in cols), None)
    created = next((c for c in ("created_at", "created", "enqueued_at") if c in cols), None)
    if partition is None or "kind" not in cols or "status" not in cols:
        return None
    with database.admin_engine.connect() as conn:
        counts = conn.execute(
            text(f'SELECT kind, status, "{partition}", count(*) FROM job GROUP BY 1, 2, 3')
        ).all()
        age = f'extract(epoch FROM now() - min("{created}"))' if created else "0"
        queued = conn.execute(
            text(f"SELECT kind, count(*), coalesce({age}, 0) FROM job WHERE status = ANY(:s) GROUP BY 1"),
            {"s": list(QUEUED_STATUSES)},
        ).all()
    return JobSummary(
        [(str(k), str(s), str(p), int(n)) for k, s, p, n in counts],
        [(str(k), int(n), float(a)) for k, n, a in queued],
    )
