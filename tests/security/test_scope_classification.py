"""SMART scopes and the permission each typed request needs (routing and reading only, nothing runs)."""

from __future__ import annotations

import base64

import pytest

from services.parse import PUBLIC_ENDPOINTS
from services.requests import Interaction, Need
from services.scopes import Grant, Permissions, narrow, parse_scope
from tests.support.typed import needs, typed_request


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


_PATCH = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Patient.active"},
                {"name": "value", "valueBoolean": True},
            ],
        }
    ],
}


def test_each_interaction_needs_its_permission(app):
    # Given the REST interactions on one type
    # When they are read into typed requests
    # Then each needs its SMART letter
    assert needs(app, "GET", "/Patient/1") == {Need("r", "Patient")}
    assert needs(app, "GET", "/Patient/1/_history/2") == {Need("r", "Patient")}
    assert needs(app, "GET", "/Patient/1/_history") == {Need("r", "Patient")}
    assert needs(app, "GET", "/Patient/_history") == {Need("r", "Patient"), Need("s", "Patient")}
    assert needs(app, "GET", "/_history") == {Need("r", "*"), Need("s", "*")}
    assert needs(app, "GET", "/Patient") == {Need("s", "Patient")}
    assert needs(app, "POST", "/Patient/_search") == {Need("s", "Patient")}
    assert needs(app, "POST", "/Patient") == {Need("c", "Patient")}
    assert needs(app, "POST", "/Patient", headers={"If-None-Exist": "identifier=x"}) == {
        Need("c", "Patient"),
        Need("s", "Patient"),
    }
    criteria = {"identifier": ["x"]}
    assert needs(app, "PUT", "/Patient/1") == {Need("u", "Patient")}
    assert needs(app, "PUT", "/Patient", criteria) == {Need("u", "Patient"), Need("s", "Patient")}
    assert needs(app, "DELETE", "/Patient/1") == {Need("d", "Patient")}
    assert needs(app, "DELETE", "/Patient", criteria) == {Need("d", "Patient"), Need("s", "Patient")}
    assert needs(app, "PATCH", "/Patient/1") == {Need("u", "Patient")}
    assert needs(app, "PATCH", "/Patient", criteria) == {Need("u", "Patient"), Need("s", "Patient")}
    assert typed_request(app, "PUT", "/Patient", criteria).interaction == Interaction.CONDITIONAL_UPDATE
    assert typed_request(app, "PATCH", "/Patient/1").interaction == Interaction.PATCH
    assert app.url_map.bind("bulkhead.test").match("/metadata")[0] in PUBLIC_ENDPOINTS


def test_includes_chains_and_has_need_access_to_the_types_they_reach(app):
    # Given searches that bring in or look into other types
    # When they are read
    include = needs(app, "GET", "/Observation", {"_include": ["Observation:subject"]})
    targeted = needs(app, "GET", "/Observation", {"_include": ["Observation:subject:Patient"]})
    revinclude = needs(app, "GET", "/Patient", {"_revinclude": ["Observation:subject"]})
    chain = needs(app, "GET", "/Observation", {"subject:Patient.name": ["x"]})
    has = needs(app, "GET", "/Patient", {"_has:Observation:subject:code": ["x"]})
    # Then they need read or search on exactly the types they reach (every target of an open include)
    assert {Need("r", t) for t in ("Patient", "Group", "Device", "Location")} <= include
    assert Need("r", "Patient") in targeted
    assert Need("r", "Observation") in revinclude
    assert Need("s", "Patient") in chain
    assert Need("s", "Observation") in has


def test_bundles_are_classified_entry_by_entry(app):
    # Given a transaction that creates, reads and deletes across types
    body = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
            {"request": {"method": "GET", "url": "Observation/1"}},
            {"request": {"method": "DELETE", "url": "http://bulkhead.test/Encounter/9"}},
        ],
    }
    # When it is read
    found = needs(app, "POST", "/", body=body)
    # Then every entry's permission is needed
    assert {Need("c", "Patient"), Need("r", "Observation"), Need("d", "Encounter")} <= found


def test_patch_and_conditional_entries_of_a_bundle_need_update_delete_and_search(app):
    # Given a batch that patches, conditionally updates and conditionally deletes
    json_patch = base64.b64encode(b'[{"op": "replace", "path": "/active", "value": true}]').decode()
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {"method": "PATCH", "url": "Patient/1"},
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": json_patch,
                },
            },
            {
                "request": {"method": "PUT", "url": "Observation?code=x"},
                "resource": {"resourceType": "Observation"},
            },
            {"request": {"method": "DELETE", "url": "Encounter?status=planned"}},
        ],
    }
    # When it is read
    found = needs(app, "POST", "/", body=body)
    # Then update on the patched type, update and search on the updated one, delete and search on the last
    assert found == {
        Need("u", "Patient"),
        Need("u", "Observation"),
        Need("s", "Observation"),
        Need("d", "Encounter"),
        Need("s", "Encounter"),
    }


def test_bulk_operations_need_the_permissions_of_what_they_touch(app):
    # Given the bulk operations
    # When they are read
    # Then export needs read on the named types (all without _type), import create+update, and so on
    assert needs(app, "GET", "/$export", {"_type": ["Patient,Observation"]}) == {
        Need("r", "Patient"),
        Need("r", "Observation"),
    }
    assert needs(app, "GET", "/$export") == {Need("r", "*")}
    assert Need("r", "Group") in needs(app, "GET", "/Group/g1/$export", {"_type": ["Patient"]})
    post = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Encounter"}]}
    assert needs(app, "POST", "/$export", body=post) == {Need("r", "Encounter")}
    imp = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {
                "name": "input",
                "part": [
                    {"name": "type", "valueCode": "Patient"},
                    {"name": "url", "valueUri": "https://files.example.org/p.ndjson"},
                ],
            },
        ],
    }
    assert needs(app, "POST", "/$import", body=imp) == {Need("c", "Patient"), Need("u", "Patient")}
    assert needs(app, "POST", "/$reindex") == {Need("u", "*")}
    assert needs(app, "PATCH", "/Patient/$bulk-update", body=_PATCH) == {
        Need("u", "Patient"),
        Need("s", "Patient"),
    }
    assert needs(app, "DELETE", "/Observation/$bulk-delete") == {
        Need("d", "Observation"),
        Need("s", "Observation"),
    }
    assert needs(app, "GET", "/_operations/export/" + "a" * 32) == set()
