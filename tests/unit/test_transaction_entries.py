"""Reading batch and transaction entries: the client's bytes, references, and the partition's base."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidRequest, PayloadTooLarge
from services.bundle_entries import Bases, read_bundle, references, resource_bytes, rewrite_references

BASES = Bases("tenant-a", ("http://fhir.example", "http://10.0.0.5:8080"))


def test_resource_bytes_are_cut_out_of_the_body_exactly_as_sent() -> None:
    # Given a body with decimals, escapes and whitespace a re-serialisation would change
    body = (
        b'{ "resourceType" : "Bundle", "type":"batch",\n "entry" : [\n'
        b'  {"request":{"method":"GET","url":"Patient/1"}},\n'
        b'  {"resource" : {"resourceType":"Observation", "valueQuantity": {"value": 1.50e0}, "note":'
        b' [{"text":"caf\\u00e9 \xc3\xa9"}]}, "request":{"method":"POST","url":"Observation"}}\n ] }'
    )
    # When the entries' resources are cut out
    cut = resource_bytes(body, 2)
    # Then the first has none and the second is byte for byte what the client wrote
    assert cut[0] is None
    assert cut[1] == (
        b'{"resourceType":"Observation", "valueQuantity": {"value": 1.50e0}, "note":'
        b' [{"text":"caf\\u00e9 \xc3\xa9"}]}'
    )


def test_references_to_full_urls_are_rewritten_and_nothing_else_is() -> None:
    raw = (
        b'{"subject":{"reference" : "urn:uuid:1"},"identifier":[{"value":"urn:uuid:1"}],'
        b'"performer":[{"reference":"http://other.example/fhir/Practitioner/9"},{"reference":"Practitioner/2"}]}'
    )
    mapping = {"urn:uuid:1": "Patient/abc", "http://other.example/fhir/Practitioner/9": "Practitioner/new"}
    out = rewrite_references(raw, mapping)
    parsed = json.loads(out)
    assert parsed["subject"]["reference"] == "Patient/abc"
    assert parsed["identifier"][0]["value"] == "urn:uuid:1"
    assert [p["reference"] for p in parsed["performer"]] == ["Practitioner/new", "Practitioner/2"]
    assert references(out) == ["Patient/abc", "Practitioner/new", "Practitioner/2"]


def test_escaped_references_are_read_and_rewritten_by_their_value() -> None:
    raw = b'{"subject":{"reference":"urn:uuid:\\u0031"}}'
    assert references(raw) == ["urn:uuid:1"]
    assert (
        json.loads(rewrite_references(raw, {"urn:uuid:1": "Patient/x"}))["subject"]["reference"]
        == "Patient/x"
    )


@pytest.mark.parametrize(
    "url, relative",
    [
        ("Patient/1", "Patient/1"),
        ("/Patient/1", "Patient/1"),
        ("Patient?identifier=http://x|1", "Patient?identifier=http://x|1"),
        ("http://fhir.example/partitions/tenant-a/Patient/1", "Patient/1"),
        ("http://10.0.0.5:8080/partitions/tenant-a/Patient", "Patient"),
    ],
)
def test_urls_of_the_partitions_own_base_become_relative(url: str, relative: str) -> None:
    assert BASES.resolve(url) == relative


@pytest.mark.parametrize(
    "url",
    [
        "http://fhir.example/partitions/tenant-b/Patient/1",
        "http://fhir.example/Patient/1",
        "http://fhir.example/partitions/tenant-a%2F..%2Ftenant-b/Patient/1",
        "https://elsewhere.example/fhir/Patient/1",
        "http://fhir.example.evil/partitions/tenant-a/Patient/1",
    ],
)
def test_urls_of_other_partitions_or_servers_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequest):
        BASES.resolve(url)


def test_only_references_into_this_servers_other_partitions_are_foreign() -> None:
    assert BASES.foreign("http://fhir.example/partitions/tenant-b/Patient/1")
    assert BASES.foreign("http://fhir.example/Patient/1")
    assert not BASES.foreign("http://fhir.example/partitions/tenant-a/Patient/1")
    assert not BASES.foreign("https://terminology.example/CodeSystem/x")
    assert not BASES.foreign("Patient/1")


def test_read_bundle_refuses_too_many_entries_before_reading_them() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient/1"}}] * 3,
    }
    with pytest.raises(PayloadTooLarge):
        read_bundle(json.dumps(bundle).encode(), bundle, BASES, 2)


def test_read_bundle_marks_bad_entries_without_failing_the_others() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/1"}},
            {"request": {"method": "POST", "url": "Patient/1"}, "resource": {"resourceType": "Patient"}},
            {"request": {"method": "DELETE", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/1/_history/2"}},
        ],
    }
    kind, entries = read_bundle(json.dumps(bundle).encode(), bundle, BASES, 10)
    assert kind == "batch"
    assert [e.problem is None for e in entries] == [True, False, False, True]
    assert (entries[3].rtype, entries[3].rid, entries[3].vid) == ("Patient", "1", "2")
