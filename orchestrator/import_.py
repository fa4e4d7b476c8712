"""The import Planner: check each input, split it into byte ranges, and build the result when all are done.

Planning reads each input's size and entity tag (a missing file, or one whose entity tag is not the one the
request gave, fails the job with an OperationOutcome naming the file) and its first bytes (gzip files are one
range). Each processing job's definition carries everything its worker needs — the URL, the entity tag seen
here (so a file that changes during the import is refused), the byte range, mode, validation, the import's
watermark and transaction time — and depends only on the request and the files, so a re-plan after a crash
adds nothing twice.

``finish`` collects per-input counts and joins the ranges' error files into one error NDJSON per input.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from core.errors import InvalidRequest
from core.fhirdates import format_instant
from core.importpolicy import NOT_FOUND, InputPolicy, display_url, has_secret, policy_of, unreadable
from core.importsecrets import Sealer
from core.importspec import NONE, ImportSpec
from core.jobs import MACHINERY, JobCaller, PermanentJobError
from core.ndjson_ranges import is_gzip, plan_ranges
from core.settings import Settings
from orchestrator.registry import register_planner
from orchestrator.reindex import KIND as REINDEX
from storage import Database
from storage.importsource import check_input, is_prefix, open_source, prefix_objects
from storage.importwrite import import_watermark
from storage.objectstore import ObjectStore, object_store_from_settings

log = logging.getLogger(__name__)
KIND = "import"
MAX_RANGES_PER_INPUT = 10_000


class PlanContext(Protocol):
    """What the job machinery hands a planner (see ``orchestrator/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database


def store_of(ctx: Any) -> ObjectStore:
    """Return the object store of a context (built from the settings when the context has none)."""
    store: ObjectStore | None = getattr(ctx, "object_store", None)
    return store if store is not None else object_store_from_settings(ctx.settings)


def prepare_import(
    database: Database, settings: Settings, store: ObjectStore, partition: str, spec: ImportSpec
) -> dict[str, Any]:
    """Check a validated request against this server's input policy and return the job's definition (at
    kick-off), every credential sealed (``core/importsecrets.py``)."""
    policy = policy_of(settings)
    for n, item in enumerate(spec.inputs):
        check_input(policy, n, item.url, partition)
    stored = spec.sealed(Sealer(settings.import_secret_key))
    with database.unit_of_work(partition) as uow:
        watermark = import_watermark(uow)
    return {
        "spec": stored.to_json(),
        "transaction_time": format_instant(datetime.now(UTC)),
        "watermark": watermark,
    }


def _first_bytes(source: Any, etag: str) -> bytes:
    stream = source.stream(0, etag=etag or None)
    try:
        for chunk in stream:
            if chunk:
                return bytes(chunk[:2])
        return b""
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _objects(
    policy: InputPolicy, sealer: Sealer, n: int, url: str, ctx: PlanContext, store: ObjectStore
) -> list[tuple[str, str | None]]:
    """Return the files of input ``n``: (URL shown, URL sealed or None) for each."""
    if not is_prefix(url):
        return [(display_url(url), sealer.seal(url) if has_secret(url) else None)]
    return [(u, None) for u in prefix_objects(policy, n, url, store, ctx.partition)]


def plan_import(ctx: PlanContext, job: Any) -> list[dict[str, Any]]:
    """Return one processing-job definition per byte range of every input (every object under an
    ``s3://bucket/prefix/`` input)."""
    definition: dict[str, Any] = job.definition
    spec = ImportSpec.from_json(definition["spec"])
    store = store_of(ctx)
    policy, sealer = policy_of(ctx.settings), Sealer(ctx.settings.import_secret_key)
    basic = spec.basic(sealer)
    range_bytes = spec.range_bytes or ctx.settings.import_range_bytes
    base = {
        "mode": spec.mode,
        "validation": spec.validation,
        "watermark": definition["watermark"],
        "transaction_time": definition["transaction_time"],
        "input_source": spec.input_source,
        "batch_size": spec.batch_size,
        "http_basic_sealed": spec.http_basic_sealed,
    }
    parts: list[dict[str, Any]] = []
    for n, item in enumerate(spec.inputs):
        files = _objects(policy, sealer, n, item.real_url(sealer), ctx, store)
        if not files:
            parts.append({**base, "input": n, "url": item.url, "type": item.type, "range": 0, "empty": True})
        for shown, sealed in files:
            source = open_source(
                policy, n, sealer.open(sealed) if sealed else shown, store, ctx.partition, basic=basic
            )
            info = source.head()
            if info is None:
                raise unreadable(n, NOT_FOUND)
            if item.etag and info.etag != item.etag:
                raise PermanentJobError(
                    f"input {n} could not be read: changed (its entity tag is {info.etag!r}, "
                    f"the request expected {item.etag!r})",
                    code="conflict",
                )
            common = {
                **base,
                "input": n,
                "url": shown,
                "source": sealed,
                "type": item.type,
                "etag": info.etag,
            }
            if info.size == 0:
                parts.append({**common, "range": len(parts), "empty": True})
                continue
            compressed = is_gzip(_first_bytes(source, info.etag))
            ranges = plan_ranges(info.size, range_bytes, compressed=compressed)
            if len(ranges) > MAX_RANGES_PER_INPUT:
                raise InvalidRequest(
                    f"input {n} would need {len(ranges)} ranges; raise processingUnitBytesToRead"
                )
            for rng in ranges:
                parts.append(
                    {**common, "range": len(parts), "start": rng.start, "stop": rng.stop, "gzip": compressed}
                )
    log.info(
        "planned import into %s: %s inputs, %s ranges",
        ctx.partition,
        len(spec.inputs),
        len(parts),
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return parts


def _follow_up(ctx: PlanContext, job: Any, first: int) -> str:
    """Start (once) the reindex of what a trusted import stored; return its job id."""
    from orchestrator import service

    for other in service.list_jobs(ctx.database, ctx.partition, caller=MACHINERY, kind=REINDEX):
        if other.definition.get("after_import") == str(job.id):
            return other.id
    started = service.submit(
        ctx.database,
        ctx.partition,
        REINDEX,
        {
            "types": None,
            "from_surrogate_id": first,
            "after_import": str(job.id),
            "transaction_time": format_instant(datetime.now(UTC)),
        },
        # The import's client polls the reindex from the import's result: it owns the follow-up too.
        caller=JobCaller(getattr(job, "client_id", None)),
        settings=ctx.settings,
        request_url=getattr(job, "request_url", None),
    )
    return started.id


def finish_import(ctx: PlanContext, job: Any, parts: list[Any]) -> dict[str, Any]:
    """Return the import's result: per-input counts and one error file per input that had errors."""
    definition: dict[str, Any] = job.definition
    spec = ImportSpec.from_json(definition["spec"])
    store = store_of(ctx)
    results = sorted((p.result or {} for p in parts), key=lambda r: (int(r["input"]), int(r["range"])))
    output: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    totals = {"lines": 0, "created": 0, "updated": 0, "unchanged": 0, "errors": 0}
    for n, item in enumerate(spec.inputs):
        mine = [r for r in results if int(r["input"]) == n]
        counts: dict[str, int] = {}
        for r in mine:
            for rtype, count in (r.get("counts") or {}).items():
                counts[rtype] = counts.get(rtype, 0) + int(count)
            for key in totals:
                totals[key] += int(r.get(key, 0) or 0)
        if not counts:
            counts = {item.type or "Resource": 0}
        output.extend({"type": t, "count": c, "inputUrl": item.url} for t, c in sorted(counts.items()))
        with_errors = [r for r in mine if r.get("error_key")]
        if with_errors:
            key = store.ndjson_key(ctx.partition, str(job.id), "OperationOutcome", n)
            body = b"".join(b"".join(store.get_stream(str(r["error_key"]))) for r in with_errors)
            info = store.put_bytes(key, body)
            errors.append(
                {
                    "type": "OperationOutcome",
                    "count": sum(int(r["errors"]) for r in with_errors),
                    "inputUrl": item.url,
                    "file": key.rsplit("/", 1)[-1],
                    "key": key,
                    "size": info.size,
                }
            )
    result: dict[str, Any] = {
        "transactionTime": definition["transaction_time"],
        "mode": spec.mode,
        "validation": spec.validation,
        "output": output,
        "error": errors,
        "totals": totals,
        "notes": list(spec.notes),
    }
    if spec.validation == NONE:
        first = int(definition["watermark"]) + 1
        result["indexing"] = {
            "deferred": True,
            "fromSurrogateId": first,
            "reindexJob": _follow_up(ctx, job, first),
        }
    log.info(
        "import into %s finished: %s",
        ctx.partition,
        totals,
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return result


register_planner(KIND, plan_import, finish_import)
