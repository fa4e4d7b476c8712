"""The bulk update and bulk delete Planner: one processing job per type and range of live versions.

Ranges cover the live current versions that exist when the job is planned (a version written later has a
larger surrogate id, outside every range, so an edit never meets its own output). ``finish`` reports, per
type, the counts the batches recorded in the ledger — exact even when processing jobs were retried — and
joins the ranges' error files.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from core.jobs import JobInfo
from core.settings import Settings
from orchestrator.registry import register_planner
from storage import Database
from storage.bulkedit import ledger_counts, live_ranges
from storage.objectstore import ObjectStore, object_store_from_settings

log = logging.getLogger(__name__)
UPDATE, DELETE = "bulk-update", "bulk-delete"


class PlanContext(Protocol):
    """What the job machinery hands a planner (see ``orchestrator/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database


def _store(ctx: Any) -> ObjectStore:
    store: ObjectStore | None = getattr(ctx, "object_store", None)
    return store if store is not None else object_store_from_settings(ctx.settings)


def plan_bulk_edit(ctx: PlanContext, job: Any) -> list[dict[str, Any]]:
    """Return one processing-job definition per type and range of live current versions."""
    d: dict[str, Any] = job.definition
    with ctx.database.unit_of_work(ctx.partition) as uow:
        ranges = live_ranges(uow, d.get("types") or None, ctx.settings.bulk_edit_chunk_rows)
    keys = ("op", "query", "patch", "hard", "purge_history", "transaction_time")
    common: dict[str, Any] = {k: d[k] for k in keys if k in d}
    chunks: dict[str, int] = {}
    parts: list[dict[str, Any]] = []
    for r in ranges:
        chunks[r.resource_type] = chunks.get(r.resource_type, 0) + 1
        parts.append(
            {
                **common,
                "type": r.resource_type,
                "low": r.low,
                "high": r.high,
                "rows": r.rows,
                "chunk": chunks[r.resource_type],
            }
        )
    log.info(
        "planned %s in %s: %s ranges over %s types",
        d["op"],
        ctx.partition,
        len(parts),
        len(chunks),
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return parts


def finish_bulk_edit(ctx: PlanContext, job: Any, parts: list[Any]) -> dict[str, Any]:
    """Return per-type counts (from the ledger) and the error files of a completed bulk edit."""
    d: dict[str, Any] = job.definition
    store = _store(ctx)
    with ctx.database.unit_of_work(ctx.partition) as uow:
        counts = ledger_counts(uow, str(job.id))
    results = [p.result or {} for p in parts]
    matched: dict[str, int] = {}
    purged = 0
    for r in results:
        matched[r["type"]] = matched.get(r["type"], 0) + int(r.get("matched", 0))
        purged += int(r.get("versionsPurged", 0))
    errors: list[dict[str, Any]] = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(results, key=lambda x: str(x.get("error_key", ""))):
        if r.get("error_key"):
            by_type.setdefault(r["type"], []).append(r)
    for rtype, items in sorted(by_type.items()):
        key = store.ndjson_key(ctx.partition, str(job.id), "OperationOutcome", len(errors) + 1)
        body = b"".join(b"".join(store.get_stream(str(r["error_key"]))) for r in items)
        info = store.put_bytes(key, body)
        errors.append(
            {
                "type": "OperationOutcome",
                "resourceType": rtype,
                "count": sum(int(r["errors"]) for r in items),
                "file": key.rsplit("/", 1)[-1],
                "key": key,
                "size": info.size,
            }
        )
    result: dict[str, Any] = {
        "transactionTime": d.get("transaction_time"),
        "operation": d["op"],
        "output": [{"type": t, "count": c} for t, c in sorted(counts.items())],
        "error": errors,
        "matched": [{"type": t, "count": c} for t, c in sorted(matched.items())],
    }
    if d["op"] == DELETE:
        result["mode"] = "hard" if d.get("hard") else ("purgeHistory" if d.get("purge_history") else "soft")
        if purged:
            result["versionsPurged"] = purged
    return result


def committed_counts(database: Database, job: JobInfo) -> dict[str, int]:
    """Return what bulk edit ``job`` (as a caller's lookup or cancel returned it) has changed so far."""
    with database.unit_of_work(job.partition) as uow:
        return ledger_counts(uow, job.group_id)


register_planner(UPDATE, plan_bulk_edit, finish_bulk_edit)
register_planner(DELETE, plan_bulk_edit, finish_bulk_edit)
