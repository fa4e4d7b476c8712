"""The reindex Planner: pick up the partition's own SearchParameters, split its resources, check the count.

Planning records the partition's SearchParameter resources (new or changed ones become ``reindexing``:
indexed by every write from then on), waits for write transactions already in progress to end, and takes a
watermark: every version at or below it is covered by a range, every version above it was indexed by its
writer with the new parameters. Ranges hold about ``reindex_chunk_rows`` live versions of one type, and
each records how many it held, and how many resources' worth of work it is (``estimated_rows``, which
chooses the lane, ``weighed_rows``): a parameter outside the compiled subset may spend its whole
evaluation budget on each resource, hundreds of times the compiled extraction, so that a reindex of a
partition's costly parameters runs in the background lane (its own worker pool, at a lower CPU priority)
rather than next to other partitions' small jobs.

``finish`` adds up what the ranges reindexed and what was replaced since planning; fewer than planned fails
the reindex (the new parameters stay not searchable). Otherwise the new parameters become ``active``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from core.fhirpath_limits import PER_EVALUATION_SECONDS, PER_RESOURCE_SECONDS
from core.jobs import PermanentJobError
from core.settings import Settings
from orchestrator.registry import register_planner
from storage import Database
from storage.bulkedit import live_ranges
from storage.custom_params import activate, refresh
from storage.export.planning import wait_for_writers
from storage.importwrite import import_watermark
from storage.search.registry import registry_for

log = logging.getLogger(__name__)
KIND = "reindex"
WAIT_FOR_WRITERS_SECONDS = 60.0
#: About what the compiled extraction of every official parameter of one resource costs (bench/reindex.py).
EXTRACTION_SECONDS = 1e-4


def weighed_rows(rows: int, costly: int) -> int:
    """Return how many resources' worth of work ``rows`` resources are with ``costly`` parameters that
    fhirpathpy evaluates, each at its whole budget (``core/fhirpath_limits.py``)."""
    if costly <= 0:
        return rows
    worst = min(costly * PER_EVALUATION_SECONDS, PER_RESOURCE_SECONDS)
    return rows * (1 + round(worst / EXTRACTION_SECONDS))


class PlanContext(Protocol):
    """What the job machinery hands a planner (see ``orchestrator/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database


def plan_reindex(ctx: PlanContext, job: Any) -> list[dict[str, Any]]:
    """Return the parameters part and one processing-job definition per type and range."""
    d: dict[str, Any] = job.definition
    with ctx.database.unit_of_work(ctx.partition) as uow:
        found = refresh(uow, str(job.id))
        uow.commit()
        if not wait_for_writers(uow, WAIT_FOR_WRITERS_SECONDS):
            log.warning(
                "reindex of %s: writers still busy after %ss; planning anyway",
                ctx.partition,
                WAIT_FOR_WRITERS_SECONDS,
                extra={"partition": ctx.partition, "job_id": ctx.job_id},
            )
        watermark = import_watermark(uow)
        ranges = live_ranges(
            uow,
            d.get("types") or None,
            ctx.settings.reindex_chunk_rows,
            low=int(d.get("from_surrogate_id") or 0),
            high=watermark,
        )
        registry = registry_for(uow.session, uow.resources.partition_id())
        costly = {
            t: sum(1 for p in registry.for_type(t).values() if p.indexed and p.mode == "fhirpathpy")
            for t in {r.resource_type for r in ranges}
        }
    parts: list[dict[str, Any]] = [
        {
            "part": "parameters",
            "reindexing": sorted(found.reindexing),
            "unchanged": sorted(found.unchanged),
            "removed": sorted(found.removed),
            "rejected": [msg for _rid, msg in found.rejected],
        }
    ]
    for n, r in enumerate(ranges):
        parts.append(
            {
                "part": "range",
                "n": n,
                "type": r.resource_type,
                "low": r.low,
                "high": r.high,
                "rows": r.rows,
                "estimated_rows": weighed_rows(r.rows, costly.get(r.resource_type, 0)),
                "watermark": watermark,
            }
        )
    log.info(
        "planned reindex of %s: %s ranges, %s resources; parameters to activate: %s",
        ctx.partition,
        len(ranges),
        sum(r.rows for r in ranges),
        ", ".join(found.reindexing) or "none",
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return parts


def finish_reindex(ctx: PlanContext, job: Any, parts: list[Any]) -> dict[str, Any]:
    """Check that every planned resource was reindexed; then make the new parameters searchable."""
    results = [p.result or {} for p in parts]
    params = next((r for r in results if r.get("part") == "parameters"), {})
    ranges = [r for r in results if r.get("part") == "range"]
    planned = sum(int(r["planned"]) for r in ranges)
    reindexed = sum(int(r["reindexed"]) for r in ranges)
    replaced = sum(int(r["superseded"]) for r in ranges)
    failed = [f for r in ranges for f in r.get("failed", [])]
    if reindexed + replaced < planned:
        raise PermanentJobError(
            f"The reindex covered {reindexed + replaced} of the {planned} resources it planned "
            f"({len(failed)} could not be read: {'; '.join(failed[:5])}); the new search parameters stay "
            "unsearchable until a reindex completes"
        )
    with ctx.database.unit_of_work(ctx.partition) as uow:
        active = activate(uow, str(job.id))
        uow.commit()
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for r in ranges:
        counts[r["type"]] = counts.get(r["type"], 0) + int(r["reindexed"])
        for code, n in (r.get("skipped") or {}).items():
            skipped[code] = skipped.get(code, 0) + int(n)
    log.info(
        "reindex of %s complete: %s resources; now searchable: %s",
        ctx.partition,
        reindexed,
        ", ".join(active) or "nothing new",
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return {
        "transactionTime": job.definition.get("transaction_time"),
        "output": [{"type": t, "count": c} for t, c in sorted(counts.items())],
        "planned": planned,
        "reindexed": reindexed,
        "replacedDuringReindex": replaced,
        # Resources a parameter was not indexed for: its evaluation ran past the budget on them.
        "skipped": dict(sorted(skipped.items())),
        "searchParameters": {
            "activated": active,
            "unchanged": params.get("unchanged", []),
            "removed": params.get("removed", []),
            "rejected": params.get("rejected", []),
        },
    }


register_planner(KIND, plan_reindex, finish_reindex)
