"""Run an export in-process and read its objects straight from the object store, as the API would serve
them (inflated)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from core.exportspec import ExportSpec
from core.fhirdates import format_instant
from core.settings import Settings
from orchestrator.export import finish_export, plan_export
from storage import Database
from storage.export.compression import GZIP, inflate
from storage.objectstore import ObjectStore
from workers.export import process_export


def entry_bytes(store: ObjectStore, entry: dict[str, Any]) -> bytes:
    """Return the NDJSON of one manifest entry (``key``, and ``encoding`` when stored gzip-compressed)."""
    chunks = store.get_stream(entry["key"])
    return b"".join(inflate(chunks) if entry.get("encoding") == GZIP else chunks)


@dataclass
class Ctx:
    """The parts of the job machinery's context an export planner and processor use."""

    partition: str
    settings: Settings
    database: Database
    object_store: ObjectStore
    job_id: str = field(default_factory=lambda: secrets.token_hex(8))
    beats: list[dict[str, Any]] = field(default_factory=list)

    def heartbeat(self, progress: dict[str, Any]) -> None:
        self.beats.append(progress)


def run_export(
    ctx: Ctx, spec: ExportSpec | None = None, *, at: datetime | None = None
) -> tuple[dict[str, Any], dict[str, list[bytes]]]:
    """Plan, process and finish an export; return the manifest parts and each type's lines."""
    spec = spec or ExportSpec()
    when = format_instant(at or datetime.now(UTC))
    group = SimpleNamespace(definition={"spec": spec.to_json(), "transaction_time": when}, id=ctx.job_id)
    parts = []
    for definition in plan_export(ctx, group):
        job = SimpleNamespace(definition=definition, group_id=ctx.job_id)
        parts.append(SimpleNamespace(result=process_export(ctx, job)))
    result = finish_export(ctx, group, parts)
    lines: dict[str, list[bytes]] = {}
    for entry in [*result["output"], *result["deleted"], *result["error"]]:
        data = entry_bytes(ctx.object_store, entry)
        assert data.count(b"\n") == entry["count"]
        lines.setdefault(entry["type"], []).extend(data.splitlines())
    return result, lines
