"""$export kick-off parameters: parsing, validation, lenient handling, and _elements subsetting."""

from __future__ import annotations

import orjson
import pytest

from core.errors import InvalidRequest
from core.exportspec import ExportSpec
from core.fhirelements import subset
from services.export_params import body_parameters, parse_export, prefers


@pytest.mark.parametrize("fmt", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_the_three_output_format_synonyms_are_accepted(fmt: str) -> None:
    spec = parse_export([("_outputFormat", fmt)], level="system")
    assert spec.output_format == "application/fhir+ndjson"


def test_an_unknown_output_format_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("_outputFormat", "text/csv")], level="system")


def test_types_may_be_comma_joined_and_repeated() -> None:
    spec = parse_export([("_type", "Patient,Observation"), ("_type", "Encounter")], level="system")
    assert spec.types == ("Patient", "Observation", "Encounter")


def test_an_unknown_type_is_a_400_unless_lenient_then_a_note() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("_type", "Patient,Nope")], level="system")
    spec = parse_export([("_type", "Patient,Nope")], level="system", lenient=True)
    assert spec.types == ("Patient",)
    assert any("Nope" in note for note in spec.notes)


def test_a_type_outside_the_patient_compartment_is_refused_at_patient_level() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("_type", "Organization")], level="patient")


def test_an_unknown_parameter_is_a_400_and_ignored_under_lenient_handling() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("_foo", "1")], level="system")
    spec = parse_export([("_foo", "1")], level="system", lenient=True)
    assert len(spec.notes) == 1


def test_since_and_until_are_normalised_and_must_be_ordered() -> None:
    spec = parse_export([("_since", "2024-01-02T03:04:05 02:00")], level="system")
    assert spec.since == "2024-01-02T01:04:05.000Z"
    with pytest.raises(InvalidRequest):
        parse_export([("_since", "2024-02-01T00:00:00Z"), ("_until", "2024-01-01T00:00:00Z")], level="system")
    with pytest.raises(InvalidRequest):
        parse_export([("_since", "yesterday")], level="system")


def test_type_filters_are_split_per_query_and_grouped_by_type() -> None:
    value = "Patient?gender=female,Observation?code=http://loinc.org|8867-4&status=final"
    spec = parse_export([("_typeFilter", value), ("_typeFilter", "Patient?active=true")], level="system")
    assert spec.type_filters == {
        "Patient": [[("gender", "female")], [("active", "true")]],
        "Observation": [[("code", "http://loinc.org|8867-4"), ("status", "final")]],
    }


def test_a_type_filter_with_result_shaping_parameters_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("_typeFilter", "Patient?_include=Patient:organization")], level="system")


def test_elements_accept_type_qualified_and_bare_names_and_refuse_unknown_ones() -> None:
    spec = parse_export([("_elements", "Patient.name,status")], level="system")
    assert spec.elements == {"Patient": ["name"], "*": ["status"]}
    with pytest.raises(InvalidRequest):
        parse_export([("_elements", "Patient.nope")], level="system")


def test_patient_is_only_for_post_at_patient_or_group_level() -> None:
    with pytest.raises(InvalidRequest):
        parse_export([("patient", "Patient/1")], level="patient", method="GET")
    with pytest.raises(InvalidRequest):
        parse_export([("patient", "Patient/1")], level="system", method="POST")
    spec = parse_export([("patient", "Patient/1"), ("patient", "Patient/2")], level="patient", method="POST")
    assert spec.patients == ("1", "2")


def test_a_parameters_body_accepts_any_primitive_value_and_references() -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_since", "valueInstant": "2024-01-01T00:00:00Z"},
            {"name": "_outputFormat", "valueCode": "ndjson"},
            {"name": "patient", "valueReference": {"reference": "Patient/7"}},
        ],
    }
    pairs = body_parameters(body)
    assert pairs[-1] == ("patient", "Patient/7")
    spec = parse_export(pairs, level="patient", method="POST")
    assert spec.patients == ("7",)


def test_prefer_header_lists_respond_async_and_lenient_handling() -> None:
    assert prefers("respond-async, handling=lenient") == {"respond-async": "", "handling": "lenient"}


def test_a_spec_survives_its_json_round_trip() -> None:
    spec = parse_export(
        [("_type", "Patient"), ("_typeFilter", "Patient?gender=male"), ("_elements", "Patient.name")],
        level="system",
    )
    assert ExportSpec.from_json(orjson.loads(orjson.dumps(spec.to_json()))) == spec


def test_subsetting_keeps_mandatory_elements_and_stored_bytes_and_tags_subsetted() -> None:
    # Given an Observation whose decimal keeps its trailing zero
    raw = (
        b'{"resourceType":"Observation","id":"o1","meta":{"versionId":"1"},"status":"final",'
        b'"code":{"text":"x"},"valueQuantity":{"value":72.50},"note":[{"text":"n"}]}'
    )
    # When only the value element is kept
    out = subset(raw, frozenset({"value"}))
    # Then status and code stay (mandatory), note goes, the decimal is untouched and the tag is set
    assert b'"value":72.50' in out
    parsed = orjson.loads(out)
    assert "note" not in parsed and parsed["status"] == "final" and parsed["code"] == {"text": "x"}
    assert parsed["meta"]["tag"][-1]["code"] == "SUBSETTED"
