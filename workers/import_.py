"""The import Processor: one processing job imports the lines one byte range of one input file owns.

Steps: stream the range from the source (S3 or HTTP, refusing a file whose entity tag changed since
planning), decompress gzip, cut lines (``core.ndjson_ranges``), parse and validate each (``core.importrows``),
and write batches through ``storage.importwrite`` in one transaction each, into the job's partition — the
partition always comes from the job, never from the data. Progress is reported after every batch (a cancel
stops the job there; committed batches stay).

Bad lines become OperationOutcomes (input URL, line number, byte offset, reason) in one error NDJSON object
per range, under a key that depends only on the definition, so a retried range overwrites it. Re-running a
range stores nothing twice: the writer's decisions make every batch idempotent.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from core.errors import Issue, PreconditionFailed
from core.fhirdates import parse_instant
from core.importpolicy import policy_of
from core.importrows import ImportRecord, LineError, build_record
from core.importsecrets import Sealer
from core.importspec import NONE
from core.jobs import PermanentJobError
from core.ndjson_ranges import gunzip, line_numbers, range_lines, read_from
from core.settings import Settings
from storage import Database
from storage.importsource import ImportSource, open_source
from storage.importwrite import ImportWriter
from storage.objectstore import ObjectStore
from workers.registry import register_processor

log = logging.getLogger(__name__)
KIND = "import"
LINE_EXTENSION = "https://bulkhead.dev/fhir/StructureDefinition/import-line"


class ImportContext(Protocol):
    """What the job machinery hands a processor (see ``workers/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raises when the job was cancelled or taken over."""
        ...


@dataclass
class _Problem:
    offset: int
    issues: list[Issue]
    resource_type: str | None = None


@dataclass
class _Tally:
    lines: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[_Problem] = field(default_factory=list)


def error_key(ctx: ImportContext, group_id: str, input_index: int, range_index: int) -> str:
    """Return the object key of one range's error file (deterministic: a retry overwrites it)."""
    return ctx.object_store.ndjson_key(ctx.partition, group_id, f"errors-{input_index}", range_index)


def _chunks(source: ImportSource, start: int, etag: str | None, compressed: bool) -> Iterator[bytes]:
    raw = source.stream(read_from(start), etag=etag or None)
    return gunzip(raw) if compressed else raw


def outcome(url: str, line: int, offset: int, issues: list[Issue]) -> dict[str, Any]:
    """Return the OperationOutcome that reports one bad line."""
    out = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": f"{url} line {line}: {issue.diagnostics}",
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        out.append(item)
    return {
        "resourceType": "OperationOutcome",
        "extension": [
            {
                "url": LINE_EXTENSION,
                "extension": [
                    {"url": "inputUrl", "valueUrl": url},
                    {"url": "line", "valueInteger": line},
                    {"url": "offset", "valueInteger": offset},
                ],
            }
        ],
        "issue": out,
    }


def _flush(writer: ImportWriter, ctx: ImportContext, batch: list[ImportRecord], tally: _Tally) -> None:
    for written in writer.write(batch):
        rec = written.record
        if written.outcome == "error":
            tally.problems.append(
                _Problem(rec.offset, [Issue(written.reason, code="conflict")], rec.resource_type)
            )
            continue
        tally.counts[rec.resource_type] = tally.counts.get(rec.resource_type, 0) + 1
        if written.outcome == "created":
            tally.created += 1
        elif written.outcome == "updated":
            tally.updated += 1
        else:
            tally.unchanged += 1
    writer.uow.commit()


def _write_errors(
    ctx: ImportContext, definition: dict[str, Any], source: ImportSource, tally: _Tally, key: str
) -> int:
    problems = sorted(tally.problems, key=lambda p: p.offset)
    numbers = line_numbers(
        _chunks(source, 0, definition.get("etag"), bool(definition.get("gzip"))), [p.offset for p in problems]
    )
    url = str(definition["url"])
    body = b"".join(
        orjson.dumps(outcome(url, numbers.get(p.offset, 0), p.offset, p.issues)) + b"\n" for p in problems
    )
    ctx.object_store.put_bytes(key, body)
    return len(body)


def process_import(ctx: ImportContext, job: Any) -> dict[str, Any]:
    """Import the lines of one byte range of one input; return counts and the error file, if any."""
    collecting = gc.isenabled()
    gc.disable()  # a batch holds thousands of parsed dicts: cyclic collection would rescan them all
    try:
        return _process(ctx, job)
    except PreconditionFailed as exc:
        raise PermanentJobError(exc.message, code="conflict") from exc
    finally:
        if collecting:
            gc.enable()


def _process(ctx: ImportContext, job: Any) -> dict[str, Any]:
    d: dict[str, Any] = job.definition
    group_id = str(job.group_id)
    url = str(d["url"])
    result: dict[str, Any] = {"input": d["input"], "range": d["range"], "url": url, "counts": {}, "errors": 0}
    key = error_key(ctx, group_id, int(d["input"]), int(d["range"]))
    source = _source(ctx, d)
    if d.get("empty"):
        issue = Issue(f"{url} is empty: nothing to import", code="informational", severity="warning")
        body = (
            orjson.dumps(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {"severity": issue.severity, "code": issue.code, "diagnostics": issue.diagnostics}
                    ],
                }
            )
            + b"\n"
        )
        ctx.object_store.put_bytes(key, body)
        result.update(errors=1, error_key=key, error_size=len(body))
        return result
    settings = ctx.settings
    start, stop = int(d["start"]), d.get("stop")
    tally = _Tally()
    batch: list[ImportRecord] = []
    batch_size = int(d.get("batch_size") or settings.import_batch_size)
    with ctx.database.unit_of_work(ctx.partition) as uow:
        writer = ImportWriter(
            uow,
            mode=str(d["mode"]),
            watermark=int(d["watermark"]),
            job_time=_instant(d["transaction_time"]),
            index=d["validation"] != NONE,
        )
        chunks = _chunks(source, start, d.get("etag"), bool(d.get("gzip")))
        for line in range_lines(chunks, start, stop, max_line_bytes=settings.import_max_line_bytes):
            tally.lines += 1
            if line.too_long:
                limit = settings.import_max_line_bytes
                tally.problems.append(
                    _Problem(line.offset, [Issue(f"The line is longer than {limit} bytes", "too-long")])
                )
                continue
            try:
                batch.append(
                    build_record(
                        line.offset,
                        line.data,
                        mode=str(d["mode"]),
                        validation=str(d["validation"]),
                        expected_type=d.get("type"),
                        input_source=d.get("input_source"),
                    )
                )
            except LineError as exc:
                tally.problems.append(_Problem(line.offset, exc.issues))
                continue
            if len(batch) >= batch_size:
                _flush(writer, ctx, batch, tally)
                batch = []
                ctx.heartbeat({"lines": tally.lines, "imported": sum(tally.counts.values())})
        if batch:
            _flush(writer, ctx, batch, tally)
    result["counts"] = tally.counts
    result.update(lines=tally.lines, created=tally.created, updated=tally.updated, unchanged=tally.unchanged)
    if tally.problems:
        result.update(
            errors=len(tally.problems), error_key=key, error_size=_write_errors(ctx, d, source, tally, key)
        )
    log.info(
        "import %s range %s of %s in %s: %s lines, %s stored, %s errors",
        group_id,
        d["range"],
        url,
        ctx.partition,
        tally.lines,
        sum(tally.counts.values()),
        len(tally.problems),
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return result


def _source(ctx: ImportContext, d: dict[str, Any]) -> ImportSource:
    """Open the definition's input under the input policy, its sealed URL and credentials opened."""
    sealer = Sealer(ctx.settings.import_secret_key)
    url = sealer.open(str(d["source"])) if d.get("source") else str(d["url"])
    sealed_basic = d.get("http_basic_sealed")
    basic = sealer.open(str(sealed_basic)) if sealed_basic else d.get("http_basic")
    return open_source(
        policy_of(ctx.settings), int(d["input"]), url, ctx.object_store, ctx.partition, basic=basic
    )


def _instant(value: str) -> datetime:
    return parse_instant(value)


register_processor(KIND, process_import)

__all__ = ["KIND", "outcome", "process_import"]
