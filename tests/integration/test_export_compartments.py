"""Patient- and Group-level exports and ``_typeFilter``, evaluated through one partition's search indexes.

Real PostgreSQL and S3 and the real job machinery run in-process (``tests/support/bulkapi.py``).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import BulkApi, bulk_api
from tests.support.fhir import base, put

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def bulk(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with the job machinery run in-process."""
    return bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch)


def seed_clinic(bulk: BulkApi, partition: str, marker: str) -> None:
    """Store two patients with an Observation, a Condition and an Encounter each, and an Organization."""
    api = bulk.client
    put(
        api,
        f"{base(partition)}/Organization/org",
        {"resourceType": "Organization", "id": "org", "name": marker},
    )
    for n in ("1", "2"):
        subject = {"reference": f"Patient/{n}"}
        put(api, f"{base(partition)}/Patient/{n}", {"resourceType": "Patient", "id": n, "gender": marker})
        for rtype, extra in (
            ("Observation", {"status": "final", "code": {"text": marker}, "subject": subject}),
            ("Condition", {"subject": subject, "code": {"text": marker}}),
            ("Encounter", {"status": "finished", "class": {"code": "AMB"}, "subject": subject}),
        ):
            rid = f"{rtype[0].lower()}{n}"
            put(api, f"{base(partition)}/{rtype}/{rid}", {"resourceType": rtype, "id": rid, **extra})


def exported(bulk: BulkApi, location: str, key: str = "output") -> list[dict[str, Any]]:
    """Run an export to its end and return the resources of one manifest section."""
    final = bulk.finish(location)
    assert final.status_code == 200, final.data
    out: list[dict[str, Any]] = []
    for item in final.get_json().get(key, []):
        lines = bulk.client.get(bulk.path(item["url"])).data.splitlines()
        assert len(lines) == item["count"]
        out.extend(orjson.loads(x) for x in lines)
    return out


def ids(resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def post_export(bulk: BulkApi, path: str, params: list[dict[str, Any]]) -> str:
    resp = bulk.post(path, {"resourceType": "Parameters", "parameter": params}, **ASYNC)
    assert resp.status_code == 202, resp.data
    location: str = resp.headers["Content-Location"]
    return location


def test_a_patient_level_export_holds_every_compartment_type_of_the_named_patients_only(
    bulk: BulkApi, partition: str
) -> None:
    # Given two patients with an Observation, Condition and Encounter each, and an Organization
    seed_clinic(bulk, partition, "female")
    # When Patient/1's compartment is exported
    location = post_export(
        bulk,
        f"{base(partition)}/Patient/$export",
        [{"name": "patient", "valueReference": {"reference": "Patient/1"}}],
    )
    # Then every compartment type of Patient/1 is there, nothing of Patient/2, no Organization
    assert ids(exported(bulk, location)) == {"Patient/1", "Observation/o1", "Condition/c1", "Encounter/e1"}


def test_a_patient_level_export_without_patients_holds_every_patients_compartment_but_no_other_type(
    bulk: BulkApi, partition: str
) -> None:
    # Given two patients' compartments and an Organization
    seed_clinic(bulk, partition, "female")
    # When every Patient's compartment is exported
    resp = bulk.client.get(f"{base(partition)}/Patient/$export", headers=ASYNC)
    # Then both compartments are there and the Organization is not
    got = ids(exported(bulk, resp.headers["Content-Location"]))
    assert "Organization/org" not in got
    assert {"Observation/o1", "Observation/o2", "Condition/c2", "Encounter/e1", "Patient/2"} <= got


def test_a_group_export_holds_the_members_compartments_of_every_type(bulk: BulkApi, partition: str) -> None:
    # Given a Group listing Patient/2 only
    seed_clinic(bulk, partition, "female")
    group = {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/2"}}],
    }
    put(bulk.client, f"{base(partition)}/Group/g", group)
    # When the Group is exported
    resp = bulk.client.get(f"{base(partition)}/Group/g/$export", headers=ASYNC)
    # Then Patient/2's compartment is exported, of every type (the Group itself is in it: Group.member)
    assert ids(exported(bulk, resp.headers["Content-Location"])) == {
        "Group/g",
        "Patient/2",
        "Observation/o2",
        "Condition/c2",
        "Encounter/e2",
    }


def test_type_filter_selects_by_search_and_leaves_other_types_unfiltered(
    bulk: BulkApi, partition: str
) -> None:
    # Given two patients' compartments
    seed_clinic(bulk, partition, "female")
    # When Observations are filtered on their subject and Conditions are not filtered
    query = "?_type=Observation,Condition&_typeFilter=Observation%3Fsubject%3DPatient%2F2"
    resp = bulk.client.get(f"{base(partition)}/$export{query}", headers=ASYNC)
    # Then only Patient/2's Observation and every Condition are exported
    assert ids(exported(bulk, resp.headers["Content-Location"])) == {
        "Observation/o2",
        "Condition/c1",
        "Condition/c2",
    }


def test_deleted_at_patient_level_lists_only_the_named_patients_deletions(
    bulk: BulkApi, partition: str
) -> None:
    # Given a first export, then deletions in both patients' compartments
    seed_clinic(bulk, partition, "female")
    first = bulk.finish(
        bulk.client.get(f"{base(partition)}/$export?_type=Patient", headers=ASYNC).headers["Content-Location"]
    )
    since = first.get_json()["transactionTime"]
    for path in ("Observation/o1", "Observation/o2", "Condition/c2", "Organization/org"):
        assert bulk.client.delete(f"{base(partition)}/{path}").status_code in (200, 204)
    # When Patient/1's compartment is exported since then
    location = post_export(
        bulk,
        f"{base(partition)}/Patient/$export",
        [
            {"name": "patient", "valueReference": {"reference": "Patient/1"}},
            {"name": "_since", "valueInstant": since},
        ],
    )
    # Then only Patient/1's deletion is listed
    bundles = exported(bulk, location, "deleted")
    assert [e["request"]["url"] for b in bundles for e in b["entry"]] == ["Observation/o1"]
