"""SMART scopes and the permission each request needs (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from api.auth_routes import Need, classify
from api.auth_scopes import Grant, Permissions, narrow, parse_scope


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("system/*.rs", [Grant("*", frozenset("rs"))]),
        ("system/Patient.cruds", [Grant("Patient", frozenset("cruds"))]),
        ("system/*.read", [Grant("*", frozenset("rs"))]),
        ("system/Observation.write", [Grant("Observation", frozenset("cud"))]),
        ("system/*.*", [Grant("*", frozenset("cruds"))]),
        ("system/Patient.sr", []),  # v2 letters must keep the spec's order
        ("system/Patient.rx", []),
        ("patient/*.rs user/*.cruds openid launch", []),
        ("system/Observation.rs?category=laboratory", []),
        ("system/patient.rs", []),
    ],
)
def test_scopes_parse_into_grants_and_unsupported_forms_grant_nothing(scope, expected):
    # Given a scope string
    # When it is parsed
    grants = list(parse_scope(scope))
    # Then only supported system scopes become grants
    assert grants == expected


def test_a_type_grant_never_implies_every_type():
    # Given read on Patient only
    perms = Permissions(parse_scope("system/Patient.rs"))
    # When asked about Patient, Observation and every type
    # Then only Patient is allowed
    assert perms.allows("r", "Patient")
    assert not perms.allows("r", "Observation")
    assert not perms.allows("r", "*")
    assert perms.types_with("r") == frozenset({"Patient"})


def test_requested_scopes_are_narrowed_to_the_allowed_ones():
    # Given a client allowed to read everything and write Patients
    allowed = parse_scope("system/*.rs system/Patient.cud")
    # When it asks for everything on every type
    granted = Permissions(narrow(parse_scope("system/*.cruds"), allowed))
    # Then it gets reads everywhere and writes on Patient only
    assert granted.allows("r", "*") and granted.allows("u", "Patient")
    assert not granted.allows("u", "Observation")


def _needs(method: str, path: str, query: dict[str, list[str]] | None = None, body=None, headers=None):  # type: ignore[no-untyped-def]
    return set(classify(method, path, query or {}, body, headers).needs)


def test_each_interaction_needs_its_permission():
    # Given the REST interactions on one type
    # When they are classified
    # Then each needs its SMART letter
    assert _needs("GET", "/Patient/1") == {Need("r", "Patient")}
    assert _needs("GET", "/Patient/1/_history/2") == {Need("r", "Patient")}
    assert _needs("GET", "/Patient/1/_history") == {Need("r", "Patient")}
    assert _needs("GET", "/Patient/_history") == {Need("s", "Patient")}
    assert _needs("GET", "/_history") == {Need("s", "*")}
    assert _needs("GET", "/Patient") == {Need("s", "Patient")}
    assert _needs("POST", "/Patient/_search") == {Need("s", "Patient")}
    assert _needs("POST", "/Patient") == {Need("c", "Patient")}
    assert _needs("POST", "/Patient", headers={"If-None-Exist": "x"}) == {
        Need("c", "Patient"),
        Need("s", "Patient"),
    }
    assert _needs("PUT", "/Patient/1") == {Need("u", "Patient")}
    assert _needs("PUT", "/Patient") == {Need("u", "Patient"), Need("s", "Patient")}
    assert _needs("DELETE", "/Patient/1") == {Need("d", "Patient")}
    assert _needs("DELETE", "/Patient") == {Need("d", "Patient"), Need("s", "Patient")}
    assert _needs("PATCH", "/Patient/1") == {Need("u", "Patient")}
    assert _needs("PATCH", "/Patient") == {Need("u", "Patient"), Need("s", "Patient")}
    assert classify("PUT", "/Patient", {}).interaction == "conditional-update"
    assert classify("PATCH", "/Patient/1", {}).interaction == "patch"
    assert classify("GET", "/metadata", {}).public


def test_includes_chains_and_has_need_access_to_the_types_they_reach():
    # Given searches that bring in or look into other types
    # When they are classified
    include = _needs("GET", "/Observation", {"_include": ["Observation:subject"]})
    targeted = _needs("GET", "/Observation", {"_include": ["Observation:subject:Patient"]})
    revinclude = _needs("GET", "/Patient", {"_revinclude": ["Observation:subject"]})
    chain = _needs("GET", "/Observation", {"subject:Patient.name": ["x"]})
    has = _needs("GET", "/Patient", {"_has:Observation:subject:code": ["x"]})
    # Then they need read or search on those types (every type when the target is open)
    assert Need("r", "*") in include
    assert Need("r", "Patient") in targeted
    assert Need("r", "Observation") in revinclude
    assert Need("s", "Patient") in chain
    assert Need("s", "Observation") in has


def test_bundles_are_classified_entry_by_entry():
    # Given a transaction that creates, reads and deletes across types
    body = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
            {"request": {"method": "GET", "url": "Observation/1"}},
            {"request": {"method": "DELETE", "url": "http://x/partitions/p/Encounter/9"}},
        ],
    }
    # When it is classified
    needs = _needs("POST", "/", body=body)
    # Then every entry's permission is needed
    assert {Need("c", "Patient"), Need("r", "Observation"), Need("d", "Encounter")} <= needs


def test_patch_and_conditional_entries_of_a_bundle_need_update_delete_and_search():
    # Given a batch that patches, conditionally updates and conditionally deletes
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "PATCH", "url": "Patient/1"}, "resource": {"resourceType": "Binary"}},
            {
                "request": {"method": "PUT", "url": "Observation?code=x"},
                "resource": {"resourceType": "Observation"},
            },
            {"request": {"method": "DELETE", "url": "Encounter?status=planned"}},
        ],
    }
    # When it is classified
    needs = _needs("POST", "/", body=body)
    # Then update on the patched type, update and search on the updated one, delete and search on the last
    assert needs == {
        Need("u", "Patient"),
        Need("u", "Observation"),
        Need("s", "Observation"),
        Need("d", "Encounter"),
        Need("s", "Encounter"),
    }


def test_bulk_operations_need_the_permissions_of_what_they_touch():
    # Given the bulk operations
    # When they are classified
    # Then export needs read on the named types (all without _type), import create+update, and so on
    assert _needs("GET", "/$export", {"_type": ["Patient,Observation"]}) == {
        Need("r", "Patient"),
        Need("r", "Observation"),
    }
    assert _needs("GET", "/$export") == {Need("r", "*")}
    assert Need("r", "Group") in _needs("GET", "/Group/g1/$export", {"_type": ["Patient"]})
    post = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Encounter"}]}
    assert _needs("POST", "/$export", body=post) == {Need("r", "Encounter")}
    imp = {
        "resourceType": "Parameters",
        "parameter": [{"name": "input", "part": [{"name": "type", "valueCode": "Patient"}]}],
    }
    assert _needs("POST", "/$import", body=imp) == {Need("c", "Patient"), Need("u", "Patient")}
    assert _needs("POST", "/$reindex") == {Need("u", "*")}
    assert _needs("PATCH", "/Patient/$bulk-update") == {Need("u", "Patient"), Need("s", "Patient")}
    assert _needs("DELETE", "/Observation/$bulk-delete") == {
        Need("d", "Observation"),
        Need("s", "Observation"),
    }
    assert _needs("GET", "/_operations/export/abc") == set()
