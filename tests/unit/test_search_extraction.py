"""Search-index extraction without a database: FHIRPath compilation, typed values, index rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from storage.search import IndexRows, SearchParameterDef, builtin_registry, index_rows_for
from storage.search.fhirpath import compile_expression
from storage.search.values import date_range, normalize, parse_reference

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "r4-examples"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text("utf-8"))


def rows_of(resource: dict[str, Any], **kwargs: Any) -> dict[str, set[tuple[Any, ...]]]:
    """Return index rows by table as sets of (param, values...) without the partition/type/id columns."""
    rows = index_rows_for(resource["resourceType"], 7, 3, resource, **kwargs)
    out: dict[str, set[tuple[Any, ...]]] = {}
    for table, batch in rows.by_table.items():
        for row in batch:
            assert row[:2] == (3, resource["resourceType"]) and row[3] == 7
            out.setdefault(table, set()).add((row[2], *row[4:]))
    return out


def test_every_official_r4_expression_compiles_to_a_fast_accessor() -> None:
    # Given every R4 SearchParameter of every type it applies to
    registry = builtin_registry()
    modes: dict[str, int] = {}
    for definition in registry.definitions:
        if definition.type in {"composite", "special"} or not definition.expression:
            continue
        for name in definition.base:
            rtype = "Patient" if name in {"Resource", "DomainResource"} else name
            # When it is compiled for that type
            mode = compile_expression(definition.expression, rtype).mode
            modes[mode] = modes.get(mode, 0) + 1
    # Then none needs the slow fallback
    assert modes.get("fhirpathpy", 0) == 0
    assert modes["compiled"] > 1000


def test_patient_example_gives_name_parts_tokens_dates_and_references() -> None:
    # Given the official Patient example, When its index rows are extracted
    rows = rows_of(example("Patient-example"))
    # Then names are split in parts, folded, and keep the exact spelling
    assert ("family", "chalmers", "Chalmers") in rows["string"]
    assert ("given", "peter", "Peter") in rows["string"]
    assert ("name", "windsor", "Windsor") in rows["string"]
    assert ("address-city", "pleasantville", "PleasantVille") in rows["string"]
    # And tokens carry system and code, booleans and codes have no system
    assert ("identifier", "urn:oid:1.2.36.146.595.217.0.1", "12345", None) in rows["token"]
    assert ("gender", None, "male", None) in rows["token"]
    assert ("active", None, "true", None) in rows["token"]
    assert ("deceased", None, "false", None) in rows["token"]
    assert ("phone", "phone", "(03) 5555 6473", None) in rows["token"]
    # And the birth date is a one-day range, the organization a relative reference
    day = (datetime(1974, 12, 25, tzinfo=UTC), datetime(1974, 12, 26, tzinfo=UTC))
    assert ("birthdate", *day) in rows["date"]
    assert ("organization", "Organization", "1", None) in rows["reference"]


def test_observation_choice_elements_and_where_resolve_are_followed() -> None:
    # Given the official Observation example (valueQuantity, subject Patient/example)
    rows = rows_of(example("Observation-example"))
    # Then value[x] as Quantity and subject.where(resolve() is Patient) are indexed
    assert (
        "value-quantity",
        "http://unitsofmeasure.org",
        "[lb_av]",
        "lbs",
        Decimal(185),
        Decimal(185),
    ) in rows["quantity"]
    assert ("patient", "Patient", "example", None) in rows["reference"]
    assert ("subject", "Patient", "example", None) in rows["reference"]
    codes = {r[2] for r in rows["token"] if r[0] == "code"}
    assert {"29463-7", "3141-9", "27113001"} <= codes
    # And the display of a coding is kept, folded, for :text
    assert ("code", "http://loinc.org", "29463-7", "body weight") in rows["token"]


def test_where_resolve_is_skips_references_to_other_types() -> None:
    # Given an Observation whose subject is a Group
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Group/g1"},
    }
    rows = rows_of(resource)
    # Then subject is indexed but patient (subject.where(resolve() is Patient)) is not
    assert ("subject", "Group", "g1", None) in rows["reference"]
    assert not any(r[0] == "patient" for r in rows["reference"])


def test_period_ranges_open_ends_and_absolute_references() -> None:
    # Given an Encounter with an open period and an absolute reference
    resource = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"code": "AMB"},
        "period": {"start": "2024-03-01"},
        "subject": {"reference": "https://other.example/fhir/Patient/p9/_history/2"},
    }
    rows = rows_of(resource)
    # Then the open end is the maximum date, the reference keeps type, id and its absolute url
    (_, low, high) = next(r for r in rows["date"] if r[0] == "date")
    assert low == datetime(2024, 3, 1, tzinfo=UTC) and high.year == 9999
    assert ("subject", "Patient", "p9", "https://other.example/fhir/Patient/p9") in rows["reference"]


def test_malformed_values_are_skipped_without_failing_the_resource() -> None:
    # Given a resource with values of the wrong shapes
    resource = {
        "resourceType": "Patient",
        "birthDate": "not-a-date",
        "name": "should be a list of HumanName",
        "gender": 5,
        "managingOrganization": ["x"],
        "identifier": [{"system": "s", "value": "v"}],
    }
    # When it is indexed, Then nothing raises and the good values are still there
    rows = rows_of(resource)
    assert ("identifier", "s", "v", None) in rows["token"]
    assert "date" not in rows


def test_custom_parameters_outside_the_compiled_subset_use_the_fallback() -> None:
    # Given a registry with a custom parameter using FHIRPath the compiler does not handle
    custom = SearchParameterDef(
        code="long-given",
        url="https://example.org/SearchParameter/long-given",
        type="string",
        base=("Patient",),
        expression="Patient.name.given.where($this.length() > 3)",
    )
    registry = builtin_registry().extended([custom])
    param = registry.for_type("Patient")["long-given"]
    assert param.mode == "fhirpathpy"
    # When a Patient is indexed with it
    rows = rows_of({"resourceType": "Patient", "name": [{"given": ["Al", "Peter"]}]}, registry=registry)
    # Then only the values the expression selects are indexed
    assert {r for r in rows["string"] if r[0] == "long-given"} == {("long-given", "peter", "Peter")}


def test_a_custom_parameter_replaces_a_builtin_one_of_the_same_code() -> None:
    custom = SearchParameterDef(
        code="family",
        url="https://example.org/sp/family",
        type="string",
        base=("Patient",),
        expression="Patient.id",
    )
    registry = builtin_registry().extended([custom])
    rows = rows_of({"resourceType": "Patient", "id": "abc", "name": [{"family": "Smith"}]}, registry=registry)
    assert {r for r in rows["string"] if r[0] == "family"} == {("family", "abc", "abc")}


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        (
            "2024-02-29T10:00:00+02:00",
            datetime(2024, 2, 29, 8, tzinfo=UTC),
            datetime(2024, 2, 29, 8, 0, 1, tzinfo=UTC),
        ),
    ],
)
def test_dates_become_ranges_at_their_precision(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


def test_strings_fold_case_accents_and_spaces() -> None:
    assert normalize("  Bénédicte   DU Marché ") == "benedicte du marche"


def test_references_are_split_into_type_id_and_url() -> None:
    assert parse_reference("Patient/123") == ("Patient", "123", None)
    assert parse_reference("Patient/123/_history/4") == ("Patient", "123", None)
    assert parse_reference("#contained") == (None, None, None)
    assert parse_reference("urn:uuid:0f0e") == (None, None, "urn:uuid:0f0e")
    assert parse_reference("Unknown/1") == (None, None, "Unknown/1")


def test_rows_of_many_resources_accumulate_in_one_batch() -> None:
    # Given a batch collecting two resources, When both are extracted into it
    batch = IndexRows()
    index_rows_for("Patient", 1, 9, {"resourceType": "Patient", "gender": "male"}, into=batch)
    index_rows_for("Patient", 2, 9, {"resourceType": "Patient", "gender": "female"}, into=batch)
    # Then both resources' rows are there, each with its own surrogate id
    assert {(r[3], r[5]) for r in batch.by_table["token"] if r[2] == "gender"} == {(1, "male"), (2, "female")}
    assert len(batch) >= 2
