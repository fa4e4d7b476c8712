"""The export Processor: one processing job writes one slice of one partition to NDJSON objects.

Each processing job's definition names its part:

- ``output``: one resource type and surrogate-id range; the stored bytes of every resource current at the
  export's snapshot stream from ``storage.export.reader`` into ``{type}-{chunk}-{n}.ndjson`` objects (rolled
  over at ``export_file_max_bytes``). Nothing is parsed unless ``_elements`` trims the type.
- ``deleted``: with ``_since``, one Bundle per resource deleted in the window (``Bundle-deleted-{n}``).
- ``notes``: the informational OperationOutcomes of parameters ignored under lenient handling.

Keys depend only on the definition, so a retried job overwrites what an earlier attempt wrote.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from core.exportspec import ExportSpec
from core.fhirdates import parse_instant
from core.fhirelements import subset
from core.fhirjson import dumps
from core.settings import Settings
from storage import Database
from storage.export.compression import GZIP, GzipWritingStore
from storage.export.reader import ExportWindow, deleted_resources, partition_id, stream_raw
from storage.export.restrict import deleted_filter, restrictions
from storage.objectstore import ObjectStore, RollingNdjsonWriter, WrittenFile
from workers.registry import register_processor

log = logging.getLogger(__name__)
KIND = "export"
_HEARTBEAT_SECONDS = 1.0


class ExportContext(Protocol):
    """What the job machinery hands a processor (see ``workers/registry.py``)."""

    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raises when the job was cancelled or taken over."""
        ...


def window_of(definition: dict[str, Any], spec: ExportSpec) -> ExportWindow:
    """Return the snapshot window a processing job reads in."""
    return ExportWindow(
        snapshot=parse_instant(definition["transaction_time"]),
        since=parse_instant(spec.since) if spec.since else None,
        until=parse_instant(spec.until) if spec.until else None,
    )


def file_entry(rtype: str, f: WrittenFile) -> dict[str, Any]:
    """Return the manifest-part description of one written object."""
    return {"type": rtype, "file": f.key.rsplit("/", 1)[-1], "key": f.key, "count": f.lines, "size": f.size}


def _pieces(block: bytes, limit: int) -> Iterator[bytes]:
    """Split a block of NDJSON lines into pieces of at most ``limit`` bytes (a longer line stays whole)."""
    start = 0
    while len(block) - start > limit:
        cut = block.rfind(b"\n", start, start + limit)
        if cut < start:
            cut = block.find(b"\n", start + limit)
        yield block[start : cut + 1]
        start = cut + 1
    if start < len(block):
        yield block[start:]


def _subset_block(block: bytes, keep: frozenset[str]) -> bytes:
    return b"".join(subset(line, keep) + b"\n" for line in block.splitlines() if line)


class _Progress:
    def __init__(self, ctx: ExportContext, what: str):
        self.ctx = ctx
        self.what = what
        self.count = 0
        self._last = time.monotonic()

    def add(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if now - self._last >= _HEARTBEAT_SECONDS:
            self._last = now
            self.ctx.heartbeat({"resources": self.count, "part": self.what})


def compressed(settings: Settings) -> bool:
    """Return whether export objects are stored gzip-compressed (never when URLs are pre-signed)."""
    return settings.export_gzip and not settings.presigned_urls


def _writer(ctx: ExportContext, group_id: str, name: str) -> RollingNdjsonWriter:
    store = ctx.object_store
    partition = ctx.partition

    def key_for(n: int) -> str:
        return store.ndjson_key(partition, group_id, name, n)

    target = cast("ObjectStore", GzipWritingStore(store)) if compressed(ctx.settings) else store
    return RollingNdjsonWriter(target, key_for, max_bytes=ctx.settings.export_file_max_bytes)


def _export_output(ctx: ExportContext, group_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    spec = ExportSpec.from_json(definition["spec"])
    rtype = str(definition["resource_type"])
    window = window_of(definition, spec)
    keep = spec.elements_for(rtype)
    limit = ctx.settings.export_file_max_bytes
    progress = _Progress(ctx, f"{rtype} {definition['low']}-{definition['high']}")
    with (
        ctx.database.unit_of_work(ctx.partition) as uow,
        _writer(ctx, group_id, f"{rtype}-{definition['chunk']}") as writer,
    ):
        pid = partition_id(uow, ctx.partition)
        if pid is not None:
            restrict = restrictions(uow, pid, rtype, spec)
            blocks = stream_raw(
                uow, pid, rtype, int(definition["low"]), int(definition["high"]), window, restrict_to=restrict
            )
            for block, count in blocks:
                data = block if keep is None else _subset_block(block, keep)
                for piece in _pieces(data, limit):
                    writer.write_block(piece)
                progress.add(count)
        files = writer.close()
    log.info(
        "exported %s %s resources of %s in range %s-%s to %s files",
        ctx.partition,
        writer.lines,
        rtype,
        definition["low"],
        definition["high"],
        len(files),
        extra={"partition": ctx.partition, "job_id": ctx.job_id},
    )
    return {"output": [file_entry(rtype, f) for f in files], "count": sum(f.lines for f in files)}


def deletion_bundle(rtype: str, rid: str) -> bytes:
    """Return the ``deleted`` NDJSON line of one resource: a transaction Bundle with one DELETE entry."""
    return dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}],
        }
    )


def _export_deleted(ctx: ExportContext, group_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    spec = ExportSpec.from_json(definition["spec"])
    window = window_of(definition, spec)
    progress = _Progress(ctx, "deleted")
    with (
        ctx.database.unit_of_work(ctx.partition) as uow,
        _writer(ctx, group_id, "Bundle-deleted") as writer,
    ):
        pid = partition_id(uow, ctx.partition)
        if pid is not None:
            keep = deleted_filter(uow, pid, spec)
            for rtype, rid in deleted_resources(uow, pid, definition["types"], window):
                if keep is not None and not keep(rtype, rid):
                    continue
                writer.write_line(deletion_bundle(rtype, rid))
                progress.add(1)
        files = writer.close()
    return {"deleted": [file_entry("Bundle", f) for f in files]}


def _export_notes(ctx: ExportContext, group_id: str, definition: dict[str, Any]) -> dict[str, Any]:
    with _writer(ctx, group_id, "OperationOutcome-notes") as writer:
        for note in definition["notes"]:
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational", "diagnostics": note}],
            }
            writer.write_line(dumps(outcome))
        files = writer.close()
    return {"error": [file_entry("OperationOutcome", f) for f in files]}


_PARTS: dict[str, Callable[[ExportContext, str, dict[str, Any]], dict[str, Any]]] = {
    "output": _export_output,
    "deleted": _export_deleted,
    "notes": _export_notes,
}


def process_export(ctx: ExportContext, job: Any) -> dict[str, Any]:
    """Run one export processing job and return its files with exact line counts."""
    definition: dict[str, Any] = job.definition
    part = definition.get("part", "output")
    handler = _PARTS.get(part)
    if handler is None:
        raise ValueError(f"Unknown export part {part!r}")
    started = time.monotonic()
    result = handler(ctx, str(job.group_id), definition)
    if compressed(ctx.settings):
        for key in ("output", "deleted", "error"):
            for entry in result.get(key, []):
                entry["encoding"] = GZIP
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


register_processor(KIND, process_export)
