"""What a partition holds, as seen over HTTP: to prove that a refused request changed nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.fhir import base


@dataclass(frozen=True)
class StoredState:
    """The history total of some partitions and the list of every partition with its resource count."""

    history_totals: tuple[int, ...]
    partitions: tuple[tuple[str, int], ...]


def stored_state(client: FlaskClient, *partitions: str | None) -> StoredState:
    """Return the history totals of ``partitions`` and the server's partition list."""
    totals = []
    for partition in partitions:
        resp = client.get(f"{base(partition)}/_history?_count=1")
        assert resp.status_code == 200, resp.data
        totals.append(int(resp.get_json(force=True)["total"]))
    listing = client.get("/partitions")
    assert listing.status_code == 200, listing.data
    body: Any = listing.get_json(force=True)
    rows = []
    for parameter in body.get("parameter", []):
        parts = {
            part["name"]: next(v for k, v in part.items() if k.startswith("value"))
            for part in parameter["part"]
        }
        rows.append((str(parts["name"]), int(parts["resourceCount"])))
    return StoredState(tuple(totals), tuple(sorted(rows)))


def assert_outcome(response: TestResponse, status: int, *codes: str) -> dict[str, Any]:
    """Assert an OperationOutcome answer with ``status`` (and issue ``codes``), without a stack trace."""
    assert response.status_code == status, (response.status_code, response.data[:2000])
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    if codes:
        assert [issue["code"] for issue in body["issue"]][: len(codes)] == list(codes), body
    return body
