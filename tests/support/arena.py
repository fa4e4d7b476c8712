"""The attack arena: partitions A (the victim) and B (the attacker) seeded with identical ids, and checks that
an answer refuses properly and reveals nothing of A."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson
import psycopg

from harness.tokens import AuthKeys, bearer
from storage.db import libpq_url
from tests.support.fhir import FHIR, base

SECRET = "SECRET-OF-A"


@dataclass(frozen=True)
class Arena:
    """The victim's and the attacker's partitions and the attacker's token."""

    victim: str
    attacker: str
    token: str


def partition_rows(owner_database_url: str, partition: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(owner_database_url)) as conn:
        return conn.execute(
            "SELECT r.resource_type, r.resource_id, r.version, r.is_history, r.is_deleted, r.raw "
            "FROM resource r JOIN partition p ON p.id = r.partition_id WHERE p.name = %s "
            "ORDER BY r.surrogate_id",
            (partition,),
        ).fetchall()


def seed_arena_partition(client, auth_keys: AuthKeys, partition: str, marker: str) -> None:  # type: ignore[no-untyped-def]
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    patient = {
        "resourceType": "Patient",
        "id": "same",
        "identifier": [{"system": "urn:test", "value": f"id-{marker}"}],
        "name": [{"family": marker, "given": [marker]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }
    for version in range(2):
        body = {**patient, "active": bool(version)}
        assert client.put(f"{base(partition)}/Patient/same", json=body, headers=admin).status_code in {
            200,
            201,
        }
    observation = {
        "resourceType": "Observation",
        "id": "obs",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": marker},
        "subject": {"reference": "Patient/same"},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "effectiveDateTime": "2020-01-01T00:00:00Z",
    }
    assert (
        client.put(f"{base(partition)}/Observation/obs", json=observation, headers=admin).status_code == 201
    )


def check_refused(response, status: int | set[int]) -> None:  # type: ignore[no-untyped-def]
    expected = {status} if isinstance(status, int) else status
    assert response.status_code in expected, (response.status_code, response.data[:300])
    body = response.get_json(force=True, silent=True)
    assert body is not None and body.get("resourceType") == "OperationOutcome", response.data[:300]
    assert SECRET.encode() not in response.data


def exposed_part(response, echo: str) -> bytes:  # type: ignore[no-untyped-def]
    """Return what of the answer could carry A's data: a Bundle's entries, an outcome's diagnostics (less
    the attacker's own query, which links and diagnostics may quote back), or the whole body."""
    body = response.get_json(force=True, silent=True)
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        return orjson.dumps(body.get("entry", []))
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        text = " ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))
        for variant in {echo, unquote(echo), unquote_plus(echo)}:
            if variant:
                text = text.replace(variant, "")
        return text.encode()
    return bytes(response.data)


def check_no_secret(response, echo: str = "") -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, response.data[:300]
    exposed = exposed_part(response, echo)
    assert SECRET.encode() not in exposed
    assert SECRET.lower().encode() not in exposed.lower()
