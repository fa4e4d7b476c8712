"""The export Planner: take the snapshot, split the partition into byte-bounded jobs, build the manifest.

Snapshot (``transactionTime``): the instant T is taken when the kick-off is accepted, on the same clock that
stamps ``meta.lastUpdated``; every write takes its transaction id before its stamp (``storage.instants``).
Before planning, the planner waits ``export_settle_seconds`` past T (the clocks of other processes may lag)
and then for every write transaction still in progress, so that every version stamped at or before T is
committed before any processing job reads. Each processing job then returns, for its slice, the versions
current at T (see ``storage/export_reader``). A follow-up export with ``_since=T`` therefore starts exactly
where this one stopped: nothing stamped at or before T is missed, nothing is returned twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from core.errors import InvalidRequest, NotFound
from core.exportspec import GROUP, PATIENT, SYSTEM, ExportSpec, patient_compartment
from core.fhirdates import parse_instant
from core.fhirtypes import resource_types
from core.settings import Settings
from orchestrator.registry import register_planner
from storage import Database
from storage.export.planning import ExportRange, existing_ids, plan_ranges, types_present, wait_for_writers
from storage.export.reader import ExportWindow, partition_id

log = logging.getLogger(__name__)
KIND = "export"
#: How long after T a write stamped at or before T may still be without a transaction id (clock skew
#: between hosts, and the moment between stamping a version and inserting it).
#: How long to wait for write transactions in progress at the snapshot to end.
SNAPSHOT_WAIT_SECONDS = 60.0
#: Upper bound of the last range of a type: rows written later are outside the snapshot anyway.
LAST_ID = 2**62
#: A processing job holds at most this many resources even when they are tiny.
MAX_ROWS_PER_JOB = 1_000_000


class PlanContext(Protocol):
    """What the job machinery hands a planner (see ``orchestrator/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database


def _group_members(raw: bytes) -> list[str]:
    """Return the ids of the Patients a Group lists as active members (relative or absolute references)."""
    group: dict[str, Any] = orjson.loads(raw)
    members: list[str] = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        ref = (member.get("entity") or {}).get("reference")
        if not isinstance(ref, str):
            continue
        parts = ref.split("/")
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] not in members:
            members.append(parts[-1])
        elif (
            len(parts) >= 4
            and parts[-4] == "Patient"
            and parts[-2] == "_history"
            and parts[-3] not in members
        ):
            members.append(parts[-3])
    return members


def resolve_patients(database: Database, partition: str, spec: ExportSpec) -> ExportSpec:
    """Check the ``patient`` parameter and the Group against the partition; fix the patient list at kick-off.

    Raises NotFound for a Group that is not in the partition, InvalidRequest for a patient that is not (or
    is not a member of the Group).
    """
    if spec.level == SYSTEM:
        return spec
    with database.unit_of_work(partition) as uow:
        pid = partition_id(uow, partition)
        if spec.level == GROUP:
            assert spec.group_id is not None
            group = uow.resources.current("Group", spec.group_id)
            if group is None or group.deleted or group.raw is None:
                raise NotFound(f"Group/{spec.group_id} is not known")
            members = _group_members(group.raw)
            outside = [p for p in spec.patients if p not in members]
            if outside:
                raise InvalidRequest(
                    "patient names resources that are not members of the Group: "
                    + ", ".join(f"Patient/{p}" for p in outside)
                )
            chosen = list(spec.patients) or members
            found = existing_ids(uow, pid, "Patient", chosen) if pid is not None else set()
            return replace(spec, patients=tuple(p for p in chosen if p in found))
        if spec.level == PATIENT and spec.patients:
            found = existing_ids(uow, pid, "Patient", spec.patients) if pid is not None else set()
            unknown = [p for p in spec.patients if p not in found]
            if unknown:
                raise InvalidRequest("Unknown patient: " + ", ".join(f"Patient/{p}" for p in unknown))
    return spec


def export_types(spec: ExportSpec) -> list[str]:
    """Return the resource types an export covers, in a stable order."""
    if spec.types:
        return sorted(spec.types)
    if spec.level == SYSTEM:
        return sorted(resource_types())
    return sorted({*patient_compartment(), "Patient"})


def settle(transaction_time: str, database: Database, partition: str, settle_seconds: float = 0.1) -> None:
    """Wait until every write stamped at or before ``transaction_time`` has committed (or failed).

    Every write takes its transaction id before its time stamp (``storage.instants``): once the clocks of
    the stamping processes have passed ``transaction_time`` (``settle_seconds`` covers their differences),
    the writes stamped at or before it are committed or still in progress, and the wait covers the latter.
    """
    ready_at = parse_instant(transaction_time).timestamp() + settle_seconds
    delay = ready_at - datetime.now(UTC).timestamp()
    if delay > 0:
        time.sleep(delay)
    with database.unit_of_work(partition) as uow:
        if not wait_for_writers(uow, SNAPSHOT_WAIT_SECONDS):
            log.warning(
                "export of %s: write transactions still open after %ss; planning anyway",
                partition,
                SNAPSHOT_WAIT_SECONDS,
            )


def _ranges(ctx: PlanContext, spec: ExportSpec, window: ExportWindow) -> list[ExportRange] | None:
    """Return the type x surrogate-range slices of the export (None when the partition does not exist)."""
    with ctx.database.unit_of_work(ctx.partition) as uow:
        pid = partition_id(uow, ctx.partition)
        if pid is None:
            return None
        return plan_ranges(
            uow,
            pid,
            export_types(spec),
            window,
            LAST_ID,
            chunk_bytes=ctx.settings.export_chunk_bytes,
            max_rows=MAX_ROWS_PER_JOB,
        )


def _first_rows_of_types(ctx: PlanContext, types: list[str], ranges: list[ExportRange]) -> list[ExportRange]:
    """Return a whole-range slice for each type whose first rows committed while the snapshot settled."""
    missing = sorted(set(types) - {r.resource_type for r in ranges})
    if not missing:
        return []
    with ctx.database.unit_of_work(ctx.partition) as uow:
        pid = partition_id(uow, ctx.partition)
        present = types_present(uow, pid, missing) if pid is not None else set()
    return [ExportRange(rtype, 1, LAST_ID, 0, 0) for rtype in sorted(present)]


def plan_export(ctx: PlanContext, job: Any) -> list[dict[str, Any]]:
    """Return the processing-job definitions of an export: one per type and surrogate-id range.

    The byte-sizing pass runs before the snapshot settles (overlapping the wait): its ranges cover every
    surrogate id up to ``LAST_ID``, so rows committed during the wait are inside some range all the same.
    """
    definition: dict[str, Any] = job.definition
    spec = ExportSpec.from_json(definition["spec"])
    when = str(definition["transaction_time"])
    window = ExportWindow(
        snapshot=parse_instant(when),
        since=parse_instant(spec.since) if spec.since else None,
        until=parse_instant(spec.until) if spec.until else None,
    )
    base = {"spec": definition["spec"], "transaction_time": when}
    parts: list[dict[str, Any]] = []
    if spec.notes:
        parts.append({**base, "part": "notes", "notes": list(spec.notes)})
    types = export_types(spec)
    if spec.level == GROUP and not spec.patients:
        return parts
    ranges = _ranges(ctx, spec, window)
    settle(when, ctx.database, ctx.partition, ctx.settings.export_settle_seconds)
    if ranges is None:
        # The partition may have been created by a write that committed during the wait.
        ranges = _ranges(ctx, spec, window)
        if ranges is None:
            return parts
    else:
        ranges += _first_rows_of_types(ctx, types, ranges)
    counters: dict[str, int] = {}
    for r in ranges:
        counters[r.resource_type] = counters.get(r.resource_type, 0) + 1
        parts.append(
            {
                **base,
                "part": "output",
                "resource_type": r.resource_type,
                "chunk": counters[r.resource_type],
                "low": r.low,
                "high": r.high,
                "estimated_rows": r.rows,
                "estimated_bytes": r.bytes,
            }
        )
    if spec.since is not None:
        parts.append({**base, "part": "deleted", "types": types})
    log.info(
        "planned export of %s: %s processing jobs over %s types",
        ctx.partition,
        len(parts),
        len(counters),
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return parts


def _order(entry: dict[str, Any]) -> tuple[str, list[int]]:
    name = str(entry["file"]).removesuffix(".ndjson")
    return str(entry["type"]), [int(x) for x in name.split("-")[1:] if x.isdigit()]


def finish_export(ctx: PlanContext, job: Any, parts: list[Any]) -> dict[str, Any]:
    """Return the manifest parts of a completed export: files with exact counts, in a stable order."""
    output: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    error: list[dict[str, Any]] = []
    for part in parts:
        result = part.result or {}
        output.extend(result.get("output", []))
        deleted.extend(result.get("deleted", []))
        error.extend(result.get("error", []))
    definition: dict[str, Any] = job.definition
    spec = ExportSpec.from_json(definition["spec"])
    return {
        "transactionTime": definition["transaction_time"],
        "output": sorted(output, key=_order),
        "deleted": sorted(deleted, key=_order),
        "error": sorted(error, key=_order),
        "since": spec.since,
        "resources": sum(int(f["count"]) for f in output),
    }


register_planner(KIND, plan_export, finish_export)
