"""The bulk update and bulk delete Processor: one processing job edits the matches in one range of one type.

A processing job selects the live current versions of its type in its surrogate-id range that match the
job's search (in the job's partition), then works through them in batches, one transaction each:

- bulk delete: a deletion version (soft), every version (``_hardDelete``), or the earlier versions only
  (``_purgeHistory``);
- bulk update: the FHIRPath Patch applied to the parsed resource, the result validated, stored as the next
  version (members the patch left alone keep their stored bytes) and indexed.

Every batch records its counts in ``bulk_ledger`` in its own transaction, so a retried job (which selects only
what is still live in its range: what an earlier attempt changed has moved on) and a cancelled one report
exactly what was changed. A resource the patch cannot apply to is reported in the range's error file.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

import orjson

from core.errors import Unprocessable
from core.fhirpatch import apply_patch, parse_patch, patched_bytes
from core.settings import Settings
from core.validation import full_issues
from storage import Database
from storage.bulkedit import (
    hard_delete,
    ledger_add,
    ledger_counts,
    lock_live,
    purge_history,
    select_live,
    soft_delete,
    write_versions,
)
from storage.importwrite import write_index
from storage.instants import write_instant
from storage.objectstore import ObjectStore
from storage.search.index import IndexRows, index_rows_for
from storage.search.registry import registry_for
from workers.registry import register_processor

log = logging.getLogger(__name__)
UPDATE, DELETE = "bulk-update", "bulk-delete"


class EditContext(Protocol):
    """What the job machinery hands a processor (see ``workers/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raises when the job was cancelled or taken over."""
        ...


def _problem(rtype: str, rid: str, message: str) -> bytes:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": f"{rtype}/{rid}: {message}",
                "expression": [rtype],
            }
        ],
    }
    return orjson.dumps(body) + b"\n"


def _update_batch(uow: Any, sids: list[int], ops: Any, when: datetime) -> tuple[dict[str, int], list[bytes]]:
    live = lock_live(uow, sids)
    previous: list[Any] = []
    raws: list[bytes] = []
    resources: list[dict[str, Any]] = []
    problems: list[bytes] = []
    for row in live:
        before = orjson.loads(row.raw)
        try:
            after = apply_patch(before, ops)
        except Unprocessable as exc:
            problems.append(_problem(row.resource_type, row.resource_id, exc.message))
            continue
        issues = full_issues(after, row.resource_type)
        if issues:
            text = "; ".join(i.diagnostics for i in issues[:5])
            problems.append(
                _problem(row.resource_type, row.resource_id, f"the patched resource is invalid: {text}")
            )
            continue
        raw = patched_bytes(row.raw, before, after, row.version + 1, when)
        previous.append(row)
        raws.append(raw)
        resources.append(orjson.loads(raw))
    new_ids = write_versions(uow, previous, raws, when)
    pid = uow.resources.partition_id()
    registry = registry_for(uow.session, pid)
    rows = IndexRows()
    for row, sid, resource in zip(previous, new_ids, resources, strict=True):
        index_rows_for(row.resource_type, sid, pid, resource, registry=registry, into=rows)
    write_index(uow.session, rows)
    counts: dict[str, int] = {}
    for row in previous:
        counts[row.resource_type] = counts.get(row.resource_type, 0) + 1
    return counts, problems


def process_bulk_edit(ctx: EditContext, job: Any) -> dict[str, Any]:
    """Edit the matches of one type in one surrogate-id range; return exact counts and errors."""
    d: dict[str, Any] = job.definition
    group_id, job_id = str(job.group_id), str(job.id)
    rtype, low, high = str(d["type"]), int(d["low"]), int(d["high"])
    query = [(str(k), str(v)) for k, v in d.get("query") or []]
    ops = parse_patch(d["patch"]) if d["op"] == UPDATE else None
    batch_size = ctx.settings.bulk_edit_batch_size
    with ctx.database.unit_of_work(ctx.partition) as uow:
        sids = select_live(uow, rtype, low, high, query)
    problems: list[bytes] = []
    purged = 0
    done = 0
    for start in range(0, len(sids), batch_size):
        batch = sids[start : start + batch_size]
        with ctx.database.unit_of_work(ctx.partition) as uow:
            now = write_instant(uow.session)
            if d["op"] == UPDATE:
                counts, failed = _update_batch(uow, batch, ops, now)
                problems.extend(failed)
            elif d.get("hard"):
                counts = hard_delete(uow, batch)
            elif d.get("purge_history"):
                counts, gone = purge_history(uow, batch)
                purged += gone
            else:
                counts = soft_delete(uow, batch, now)
            ledger_add(uow, group_id, job_id, counts)
            uow.commit()
        done += len(batch)
        ctx.heartbeat({"matched": len(sids), "processed": done})
    with ctx.database.unit_of_work(ctx.partition) as uow:
        counts = ledger_counts(uow, group_id, job_id)
    result: dict[str, Any] = {"type": rtype, "counts": counts, "matched": len(sids), "errors": len(problems)}
    if purged:
        result["versionsPurged"] = purged
    if problems:
        key = ctx.object_store.ndjson_key(ctx.partition, group_id, f"errors-{rtype}", int(d.get("chunk", 0)))
        ctx.object_store.put_bytes(key, b"".join(problems))
        result.update(error_key=key, error_size=sum(len(p) for p in problems))
    log.info(
        "%s %s of %s in %s %s..%s: %s",
        d["op"],
        group_id,
        rtype,
        ctx.partition,
        low,
        high,
        counts,
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return result


register_processor(UPDATE, process_bulk_edit, queue="bulk")
register_processor(DELETE, process_bulk_edit, queue="bulk")

__all__ = ["DELETE", "UPDATE", "process_bulk_edit"]
