"""Small helpers for talking FHIR to the test client."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

FHIR = "application/fhir+json"


def base(partition: str | None) -> str:
    """Return the path prefix of a partition (None means the root, partition default)."""
    return "" if partition is None else f"/partitions/{partition}"


def post(client: FlaskClient, path: str, body: Any, **headers: str) -> TestResponse:
    """POST a JSON body as application/fhir+json."""
    return client.post(path, json=body, headers={"Content-Type": FHIR, **headers})


def put(client: FlaskClient, path: str, body: Any, **headers: str) -> TestResponse:
    """PUT a JSON body as application/fhir+json."""
    return client.put(path, json=body, headers={"Content-Type": FHIR, **headers})


def outcome_codes(response: TestResponse) -> list[str]:
    """Return the issue codes of an OperationOutcome response."""
    body = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    return [issue["code"] for issue in body["issue"]]
