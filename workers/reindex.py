"""The reindex Processor: one processing job rebuilds the index rows of one range of one type.

Batches of ``reindex_batch_size`` versions (a cancel or takeover loses at most one batch, and redoing a
batch rewrites the same rows), each read and written in short transactions with the extraction between
them (``storage/reindexing.py``). The result says how many versions the range held at planning, how many
it reindexed, and how many were replaced since planning (their writers indexed the new versions), for the
reindex's count check; and, by parameter code, how many resources a parameter was skipped for because its
evaluation ran past its budget (``skipped``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Protocol

from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore
from storage.reindexing import reindex_batch, superseded
from workers.registry import register_processor

log = logging.getLogger(__name__)
KIND = "reindex"


class ReindexContext(Protocol):
    """What the job machinery hands a processor (see ``workers/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raises when the job was cancelled or taken over."""
        ...


def process_reindex(ctx: ReindexContext, job: Any) -> dict[str, Any]:
    """Reindex one range (or pass the parameters part through)."""
    d: dict[str, Any] = job.definition
    if d.get("part") == "parameters":
        return dict(d)
    rtype, low, high = str(d["type"]), int(d["low"]), int(d["high"])
    after = low - 1
    reindexed = 0
    failed: list[str] = []
    skipped: Counter[str] = Counter()
    while True:
        batch = reindex_batch(
            ctx.database, ctx.partition, rtype, after, high, ctx.settings.reindex_batch_size
        )
        if batch is None:
            break
        after = batch.last
        reindexed += batch.reindexed
        failed.extend(f"{rtype}/{rid}: {why}" for rid, why in batch.failed)
        if batch.skipped:
            skipped.update(batch.skipped)
            log.warning(
                "reindex of %s %s..%s in %s: over the evaluation budget, not indexed: %s",
                rtype,
                low,
                batch.last,
                ctx.partition,
                ", ".join(f"{code} for {n}" for code, n in sorted(batch.skipped.items())),
                extra={"partition": ctx.partition, "job_id": ctx.job_id},
            )
        ctx.heartbeat({"reindexed": reindexed})
    with ctx.database.unit_of_work(ctx.partition) as uow:
        replaced = superseded(uow, rtype, low, high, int(d["watermark"]))
    log.info(
        "reindexed %s %s..%s in %s: %s of %s planned, %s replaced since",
        rtype,
        low,
        high,
        ctx.partition,
        reindexed,
        d["rows"],
        replaced,
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return {
        "part": "range",
        "type": rtype,
        "planned": int(d["rows"]),
        "reindexed": reindexed,
        "superseded": replaced,
        "failed": failed[:100],
        "skipped": dict(sorted(skipped.items())),
    }


register_processor(KIND, process_reindex)
