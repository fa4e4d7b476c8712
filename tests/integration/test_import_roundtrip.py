"""Import then export: what an IncrementalLoad stores comes back out as equivalent JSON (run inline)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.exportspec import ExportSpec
from core.fhirdates import format_instant
from core.importspec import parse_import
from core.settings import Settings
from harness.services import S3Settings
from orchestrator import service
from orchestrator.export import finish_export, plan_export
from orchestrator.import_ import finish_import, plan_import, prepare_import
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.exported import entry_bytes
from tests.support.jobinproc import RecordingSender
from tests.support.run_inline import run_inline
from workers.export import process_export
from workers.import_ import process_import

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "r4-examples"


def examples() -> list[dict[str, Any]]:
    """Return official R4 example resources shipped with the tests (any that Bulkhead stores)."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json"))[::8]:
        resource = json.loads(path.read_text("utf-8"))
        if resource.get("resourceType") not in {"Bundle", "Parameters"} and isinstance(
            resource.get("id"), str
        ):
            out.append(resource)
    return out


def synthetic(n: int) -> list[dict[str, Any]]:
    """Return patients and observations with decimals whose spelling matters, versioned elsewhere."""
    when = datetime(2023, 5, 1, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for i in range(n):
        stamp = format_instant(when + timedelta(minutes=i))
        out.append(
            {
                "resourceType": "Patient",
                "id": f"rt{i}",
                "meta": {"versionId": "3", "lastUpdated": stamp},
                "name": [{"family": "Ünïcødé", "given": [f"G{i}"]}],
                "birthDate": "1980-02-29",
            }
        )
        out.append(
            {
                "resourceType": "Observation",
                "id": f"obs{i}",
                "meta": {"versionId": "1", "lastUpdated": stamp},
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": f"Patient/rt{i}"},
                "valueQuantity": {"value": 72.50, "unit": "kg"},
            }
        )
    return out


@pytest.mark.parametrize("validation", ["full", "none"])
def test_an_incremental_import_exports_back_as_the_same_resources(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
    validation: str,
    monkeypatch: pytest.MonkeyPatch,
):
    # Given NDJSON with meta from another server (and official examples) in the partition's upload area
    monkeypatch.setattr(service, "outbox_for", lambda _settings: RecordingSender())
    app_settings = s3_settings.apply(settings)
    resources = synthetic(15) + [
        {**r, "meta": {"versionId": "1", "lastUpdated": "2022-01-01T00:00:00.000Z"}} for r in examples()
    ]
    assert len(resources) > 60
    lines = [orjson.dumps(r) for r in resources]
    lines[0] = lines[0].replace(b'"value":72.5', b'"value":72.50')
    key = f"bulkhead/{partition}/uploads/roundtrip.ndjson"
    object_store.put_bytes(key, b"\n".join(lines) + b"\n")
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "mode", "valueCode": "IncrementalLoad"},
            {"name": "validation", "valueCode": validation},
            {"name": "input", "part": [{"name": "url", "valueUrl": f"s3://{object_store.bucket}/{key}"}]},
        ],
    }
    definition = prepare_import(database, app_settings, object_store, partition, parse_import(body))
    imported = run_inline(
        app_settings,
        database,
        object_store,
        partition,
        definition,
        plan_import,
        process_import,
        finish_import,
    )
    assert imported["error"] == [], b"".join(object_store.get_stream(imported["error"][0]["key"]))[:600]
    # When the partition is exported
    export_definition = {
        "spec": ExportSpec().to_json(),
        "transaction_time": format_instant(datetime.now(UTC)),
    }
    manifest = run_inline(
        app_settings,
        database,
        object_store,
        partition,
        export_definition,
        plan_export,
        process_export,
        finish_export,
    )
    exported = [
        orjson.loads(line)
        for entry in manifest["output"]
        for line in entry_bytes(object_store, entry).splitlines()
    ]

    # Then every resource comes back equal (same JSON, meta included), once
    def key_of(r: dict[str, Any]) -> tuple[str, str]:
        return r["resourceType"], r["id"]

    assert sorted(exported, key=key_of) == sorted((orjson.loads(x) for x in lines), key=key_of)
    assert sum(e["count"] for e in manifest["output"]) == len(lines)
