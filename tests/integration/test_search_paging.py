"""Paging, sorting, totals and result shaping of searchset Bundles."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.fhir import base, outcome_codes, put

PUBLIC = "http://bulkhead.test"


def seed_people(client: FlaskClient, partition: str, count: int, start: int = 0) -> None:
    """Store patients n{i} with family F{i:03d}; every third has no birth date, the rest vary by year."""
    for i in range(start, start + count):
        body: dict[str, Any] = {"resourceType": "Patient", "id": f"n{i}", "name": [{"family": f"F{i:03d}"}]}
        if i % 3:
            body["birthDate"] = f"{1950 + (i * 7) % 40}-01-01"
        assert put(client, f"{base(partition)}/Patient/n{i}", body).status_code == 201


def get(client: FlaskClient, url: str) -> dict[str, Any]:
    response = client.get(url.removeprefix(PUBLIC))
    assert response.status_code == 200, response.get_json(force=True)
    bundle: dict[str, Any] = response.get_json(force=True)
    return bundle


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((item["url"] for item in bundle["link"] if item["relation"] == relation), None)


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_next_links_visit_each_unchanged_match_once_while_others_are_added_and_deleted(
    client: FlaskClient, partition: str
) -> None:
    # Given 25 patients and a first page of 10
    seed_people(client, partition, 25)
    first = get(client, f"{base(partition)}/Patient?_count=10")
    seen = match_ids(first)
    assert len(seen) == 10 and first["total"] == 25
    # When, between pages, two already-seen patients are deleted and five new ones are created
    for rid in seen[:2]:
        assert client.delete(f"{base(partition)}/Patient/{rid}").status_code == 204
    seed_people(client, partition, 5, start=100)
    # And the client follows next links to the end
    url = link(first, "next")
    while url is not None:
        page = get(client, url)
        seen.extend(match_ids(page))
        url = link(page, "next")
    # Then no patient came twice, and none of the 23 that stayed was skipped
    assert len(seen) == len(set(seen))
    assert {f"n{i}" for i in range(25)} <= set(seen)


def test_sorted_pages_stay_stable_when_a_resource_sorting_before_the_cursor_is_added(
    client: FlaskClient, partition: str
) -> None:
    # Given patients sorted by family name, and a first page
    seed_people(client, partition, 12)
    first = get(client, f"{base(partition)}/Patient?_sort=family&_count=5")
    assert match_ids(first) == [f"n{i}" for i in range(5)]
    # When a patient whose name sorts first is added
    put(
        client,
        f"{base(partition)}/Patient/a0",
        {"resourceType": "Patient", "id": "a0", "name": [{"family": "A"}]},
    )
    # Then the next page still starts right after the last one seen
    second = get(client, link(first, "next") or "")
    assert match_ids(second) == [f"n{i}" for i in range(5, 10)]
    # And previous gives the five rows just before the second page, with a previous link to the new one
    previous = get(client, link(second, "previous") or "")
    assert match_ids(previous) == [f"n{i}" for i in range(5)]
    assert match_ids(get(client, link(previous, "previous") or "")) == ["a0"]


def test_previous_link_returns_the_page_before(client: FlaskClient, partition: str) -> None:
    seed_people(client, partition, 9)
    first = get(client, f"{base(partition)}/Patient?_count=3&_sort=-family")
    assert link(first, "previous") is None
    second = get(client, link(first, "next") or "")
    third = get(client, link(second, "next") or "")
    assert link(third, "next") is None
    back = get(client, link(third, "previous") or "")
    assert match_ids(back) == match_ids(second) == ["n5", "n4", "n3"]


def test_sort_by_parameters_directions_and_missing_values_last(client: FlaskClient, partition: str) -> None:
    seed_people(client, partition, 7)
    by_family = match_ids(get(client, f"{base(partition)}/Patient?_sort=-family"))
    assert by_family == [f"n{i}" for i in reversed(range(7))]
    by_birth = get(client, f"{base(partition)}/Patient?_sort=birthdate,_id")
    ids = match_ids(by_birth)
    dated = [e["resource"]["birthDate"] for e in by_birth["entry"] if "birthDate" in e["resource"]]
    assert dated == sorted(dated)
    # Patients without a birth date (n0, n3, n6) come last, in _id order
    assert ids[-3:] == ["n0", "n3", "n6"]
    newest_first = match_ids(get(client, f"{base(partition)}/Patient?_sort=-_lastUpdated"))
    assert newest_first[0] == "n6" and newest_first[-1] == "n0"


def test_paging_through_a_sort_with_missing_values_visits_everything_once(
    client: FlaskClient, partition: str
) -> None:
    seed_people(client, partition, 11)
    url: str | None = f"{base(partition)}/Patient?_sort=-birthdate&_count=2"
    seen: list[str] = []
    while url is not None:
        page = get(client, url)
        seen.extend(match_ids(page))
        url = link(page, "next")
    assert sorted(seen) == sorted(f"n{i}" for i in range(11)) and len(seen) == 11


def test_totals_follow_total_and_summary_count(client: FlaskClient, partition: str) -> None:
    seed_people(client, partition, 4)
    b = base(partition)
    assert get(client, f"{b}/Patient")["total"] == 4
    assert "total" not in get(client, f"{b}/Patient?_total=none")
    estimate = get(client, f"{b}/Patient?_total=estimate")["total"]
    assert isinstance(estimate, int) and estimate >= 0
    counted = get(client, f"{b}/Patient?_summary=count")
    assert counted["total"] == 4 and not counted.get("entry")
    zero = get(client, f"{b}/Patient?_count=0")
    assert zero["total"] == 4 and not zero.get("entry")


def test_elements_and_summary_trim_matches_and_mark_them_subsetted(
    client: FlaskClient, partition: str
) -> None:
    seed_people(client, partition, 2)
    b = base(partition)
    trimmed = get(client, f"{b}/Patient?_elements=birthDate")["entry"]
    for entry in trimmed:
        assert "name" not in entry["resource"]
        assert any(t["code"] == "SUBSETTED" for t in entry["resource"]["meta"]["tag"])
    assert "birthDate" in trimmed[1]["resource"]
    put(
        client,
        f"{b}/Patient/t1",
        {
            "resourceType": "Patient",
            "id": "t1",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
            "gender": "male",
        },
    )
    data = get(client, f"{b}/Patient?_id=t1&_summary=data")["entry"][0]["resource"]
    assert "text" not in data and data["gender"] == "male"
    text = get(client, f"{b}/Patient?_id=t1&_summary=text")["entry"][0]["resource"]
    assert "text" in text and "gender" not in text


def test_links_and_full_urls_are_absolute_under_the_partition_base(
    client: FlaskClient, partition: str
) -> None:
    seed_people(client, partition, 3)
    bundle = get(client, f"{base(partition)}/Patient?family=f&_count=2&_sort=family")
    own = f"{PUBLIC}/partitions/{partition}"
    assert all(e["fullUrl"].startswith(f"{own}/Patient/") for e in bundle["entry"])
    self_url = link(bundle, "self") or ""
    assert self_url.startswith(f"{own}/Patient?") and "family=f" in self_url and "_count=2" in self_url
    next_url = link(bundle, "next") or ""
    assert next_url.startswith(f"{own}/Patient?") and "_cursor=" in next_url and "_sort=family" in next_url


def test_root_searches_the_default_partition_with_root_urls(client: FlaskClient) -> None:
    rid = f"root-{id(client)}"
    put(client, f"/Patient/{rid}", {"resourceType": "Patient", "id": rid, "gender": "unknown"})
    bundle = get(client, f"/Patient?_id={rid}")
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{PUBLIC}/Patient/{rid}"]


def test_an_unknown_partition_searches_as_empty_and_is_not_created(
    client: FlaskClient, partition: str
) -> None:
    bundle = get(client, f"{base(partition)}/Patient?name=x&_include=Patient:organization")
    assert bundle["total"] == 0 and not bundle.get("entry")
    listed = client.get("/partitions").get_json(force=True)
    names = [p["part"][0]["valueString"] for p in listed.get("parameter", [])]
    assert partition not in names


ESTIMATED = [
    "Patient?_id=n0,n1",
    "Patient?_id:not=n0,n1,n2",
    "Patient?_id=n0&_id=n1,n2",
    "Patient?name=a%25_b",
    "Patient?name:contains=50%25",
    "Patient?name:exact=Person",
    "Patient?birthdate=ap9999-12-31",
    "Patient?birthdate=ge1980,lt1970",
    "Patient?_lastUpdated=gt9999-12-31T23:59:59Z",
    "Patient?gender=female,male&active=true",
    "Patient?identifier=urn:test|x,urn:test|y",
    "Patient?general-practitioner=Practitioner/a,Practitioner/b",
    "Patient?_has:Observation:subject:code=8867-4,1234-5",
    "Observation?subject.name=a%25,b",
    "Observation?value-quantity=1e999999999,lt5|http://unitsofmeasure.org|kg",
    "Observation?subject:missing=true",
    "?_type=Patient,Observation&_id=n0,n1",
]


@pytest.mark.parametrize("query", ESTIMATED)
def test_total_estimate_answers_for_every_criterion_shape(
    client: FlaskClient, partition: str, query: str
) -> None:
    # Given a partition with data
    seed_people(client, partition, 3)
    # When a search with IN-lists, LIKE patterns, chains or ranges asks for an estimated total
    separator = "&" if "?" in query else "?"
    bundle = get(client, f"{base(partition)}/{query}{separator}_total=estimate")
    # Then the planner's estimate comes back as a number (the statement EXPLAIN ran had every parameter)
    assert isinstance(bundle["total"], int) and bundle["total"] >= 0


def cursor(values: list[Any], direction: str = "n") -> str:
    raw = json.dumps([direction, values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED = [
    ("Patient?_sort=name", [False, "\ud800", 1]),
    ("Patient?_sort=name", [False, "a", 2**70]),
    ("Patient?_sort=birthdate", [False, "2020-01-01T00:00:00+00:00", -(2**70)]),
    ("Patient?_sort=_id", ["\ud800", 1]),
    ("Patient", [2**63]),
    ("RiskAssessment?_sort=probability", [False, "1e999999999", 1]),
    ("RiskAssessment?_sort=probability", [False, "-1e-999999999", 1]),
    ("RiskAssessment?_sort=probability", [False, "NaN", 1]),
    ("RiskAssessment?_sort=probability", [False, "1" * 5000, 1]),
]


@pytest.mark.parametrize(("query", "values"), FORGED, ids=[f"{q} {str(v)[:40]}" for q, v in FORGED])
def test_a_forged_cursor_with_a_value_no_row_could_have_is_a_400(
    client: FlaskClient, partition: str, query: str, values: list[Any]
) -> None:
    # Given a partition with data
    seed_people(client, partition, 2)
    # When a cursor of the right shape carries a lone surrogate, an integer beyond a bigint or a number the
    # index cannot hold
    separator = "&" if "?" in query else "?"
    response = client.get(f"{base(partition)}/{query}{separator}_cursor={cursor(values)}")
    # Then it is refused as a cursor of another search, before it reaches the database
    assert response.status_code == 400, response.data
    assert outcome_codes(response) == ["invalid"]
