"""Patient/$everything: a patient's compartment, one partition only, paged, narrowed, and scope-gated."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from harness.tokens import AuthKeys
from tests.support.fhir import base, outcome_codes, post, put


def _seed(client: FlaskClient, partition: str, patient: str, marker: str) -> None:
    """Store ``patient`` with an Observation, an Encounter and a Condition, and one unrelated patient."""
    put(client, f"{base(partition)}/Patient/{patient}", {"resourceType": "Patient", "id": patient})
    put(client, f"{base(partition)}/Patient/other", {"resourceType": "Patient", "id": "other"})
    subject = {"reference": f"Patient/{patient}"}
    put(
        client,
        f"{base(partition)}/Encounter/e-{patient}",
        {
            "resourceType": "Encounter",
            "id": f"e-{patient}",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": subject,
        },
    )
    for n, when in enumerate(("2020-03-01", "2024-06-15")):
        put(
            client,
            f"{base(partition)}/Observation/o{n}-{patient}",
            {
                "resourceType": "Observation",
                "id": f"o{n}-{patient}",
                "status": "final",
                "code": {"text": marker},
                "subject": subject,
                "effectiveDateTime": when,
            },
        )
    put(
        client,
        f"{base(partition)}/Condition/c-{patient}",
        {"resourceType": "Condition", "id": f"c-{patient}", "subject": subject, "code": {"text": marker}},
    )
    put(
        client,
        f"{base(partition)}/Observation/unrelated",
        {
            "resourceType": "Observation",
            "id": "unrelated",
            "status": "final",
            "code": {"text": marker},
            "subject": {"reference": "Patient/other"},
        },
    )


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])}


def test_everything_returns_the_patient_and_its_compartment_and_nothing_else(
    client: FlaskClient, partition: str
) -> None:
    _seed(client, partition, "p1", "mine")
    answer = client.get(f"{base(partition)}/Patient/p1/$everything")
    assert answer.status_code == 200
    bundle = answer.get_json(force=True)
    assert bundle["type"] == "searchset"
    assert _ids(bundle) == {
        "Patient/p1",
        "Encounter/e-p1",
        "Observation/o0-p1",
        "Observation/o1-p1",
        "Condition/c-p1",
    }
    assert bundle["total"] == 5
    every = client.get(f"{base(partition)}/Patient/$everything").get_json(force=True)
    assert _ids(every) >= _ids(bundle) | {"Patient/other", "Observation/unrelated"}


def test_everything_never_reaches_another_partition_with_the_same_ids(
    client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given the same ids in two partitions
    _seed(client, partition, "p1", "mine")
    _seed(client, other_partition, "p1", "theirs")
    # When one partition asks for the patient's everything, and every patient's
    for path in ("/Patient/p1/$everything", "/Patient/$everything"):
        bundle = client.get(f"{base(partition)}{path}").get_json(force=True)
        # Then nothing of the other partition comes back
        texts = {e["resource"].get("code", {}).get("text") for e in bundle["entry"]}
        assert "theirs" not in texts
        assert all(f"/partitions/{partition}/" in e["fullUrl"] for e in bundle["entry"])
    # And a patient only the other partition holds is unknown here
    put(
        client, f"{base(other_partition)}/Patient/only-there", {"resourceType": "Patient", "id": "only-there"}
    )
    unknown = client.get(f"{base(partition)}/Patient/only-there/$everything")
    assert unknown.status_code == 404
    assert outcome_codes(unknown) == ["not-found"]


def test_everything_narrows_by_type_since_and_care_dates(client: FlaskClient, partition: str) -> None:
    _seed(client, partition, "p1", "mine")
    path = f"{base(partition)}/Patient/p1/$everything"
    observations = client.get(f"{path}?_type=Observation").get_json(force=True)
    assert _ids(observations) == {"Observation/o0-p1", "Observation/o1-p1"}
    # start/end keep what has no care date (the patient, the condition) and drop dates outside the range.
    recent = client.get(f"{path}?start=2023-01-01&end=2025-12-31").get_json(force=True)
    assert "Observation/o0-p1" not in _ids(recent)
    assert {"Observation/o1-p1", "Patient/p1", "Condition/c-p1"} <= _ids(recent)
    assert client.get(f"{path}?_since=2999-01-01T00:00:00Z").get_json(force=True)["total"] == 0
    posted = post(
        client,
        path,
        {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Condition"}]},
    )
    assert _ids(posted.get_json(force=True)) == {"Condition/c-p1"}


def test_everything_pages_with_next_links_that_see_each_resource_once(
    client: FlaskClient, partition: str
) -> None:
    _seed(client, partition, "p1", "mine")
    url: str | None = f"{base(partition)}/Patient/p1/$everything?_count=2"
    seen: list[str] = []
    pages = 0
    while url:
        bundle = client.get(url).get_json(force=True)
        seen.extend(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", []))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5


def test_everything_refuses_what_it_does_not_take(client: FlaskClient, partition: str) -> None:
    _seed(client, partition, "p1", "mine")
    path = f"{base(partition)}/Patient/p1/$everything"
    for query in ("?_type=Organization", "?foo=1", "?start=not-a-date", "?_cursor=-1", "?_count=x"):
        refused = client.get(f"{path}{query}")
        assert refused.status_code == 400, query
        assert outcome_codes(refused) == ["invalid"], query
    client.delete(f"{base(partition)}/Patient/p1")
    assert client.get(path).status_code == 410


def test_a_token_gets_everything_only_for_the_types_it_may_read(
    secure_client: FlaskClient, auth_keys: AuthKeys, partition: str
) -> None:
    writer = {"Authorization": f"Bearer {auth_keys.hs256(partition)}"}
    put(secure_client, f"{base(partition)}/Patient/p1", {"resourceType": "Patient", "id": "p1"}, **writer)
    put(
        secure_client,
        f"{base(partition)}/Observation/o1",
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
        },
        **writer,
    )
    narrow = {
        "Authorization": f"Bearer {auth_keys.hs256(partition, scope='system/Patient.r system/Observation.r')}"
    }
    path = f"{base(partition)}/Patient/p1/$everything"
    # Every compartment type at once needs read on each: refused
    assert secure_client.get(path, headers=narrow).status_code == 403
    # Narrowed to what it may read: answered
    allowed = secure_client.get(f"{path}?_type=Patient,Observation", headers=narrow)
    assert allowed.status_code == 200
    assert _ids(allowed.get_json(force=True)) == {"Patient/p1", "Observation/o1"}
    # Another partition's token hears nothing of this one
    stranger = {"Authorization": f"Bearer {auth_keys.hs256('elsewhere')}"}
    assert secure_client.get(path, headers=stranger).status_code in (403, 404)
