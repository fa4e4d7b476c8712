"""Validation of FHIR R4 resources: the R4 structural walk and the R4B models behind it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidRequest, Unprocessable
from core.r4structure import definitions
from core.validation import ValidationMode, full_issues, structural_issues, validate_id, validate_resource

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "r4-examples"


def example(name: str) -> dict[str, Any]:
    """Return one of the official R4 examples shipped with the tests."""
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text("utf-8"))
    return data


def messages(resource: dict[str, Any], expected: str | None = None) -> list[str]:
    """Return the diagnostics of every problem full validation finds."""
    return [issue.diagnostics for issue in full_issues(resource, expected)]


def expressions(resource: dict[str, Any]) -> list[str]:
    """Return the location of every problem full validation finds."""
    return [e for issue in full_issues(resource) for e in issue.expression]


def test_an_official_patient_example_is_valid() -> None:
    # Given the official Patient example, When it is validated, Then nothing is found
    assert full_issues(example("Patient-example.json")) == []


def test_a_null_value_is_refused_with_its_location() -> None:
    # Given a patient whose active is null (R4B accepts it)
    # When it is validated
    issues = full_issues({"resourceType": "Patient", "active": None})
    # Then the null is named at Patient.active
    assert [i.expression for i in issues] == [("Patient.active",)]
    assert "null" in issues[0].diagnostics


def test_an_unknown_code_of_a_required_binding_is_refused() -> None:
    # Given gender "xyz" (R4B accepts any string), When validated, Then code-invalid at Patient.gender
    issues = full_issues({"resourceType": "Patient", "gender": "xyz"})
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", ("Patient.gender",))]


def test_required_bindings_inside_data_types_are_checked() -> None:
    # Given a quantity comparator and a contact point system outside their value sets
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": 1, "comparator": "~"},
        "performer": [{"display": "x"}],
    }
    patient = {"resourceType": "Patient", "telecom": [{"system": "pager-ish", "value": "1"}]}
    # When validated, Then each is named
    assert expressions(resource) == ["Observation.valueQuantity.comparator"]
    assert expressions(patient) == ["Patient.telecom[0].system"]


def test_json_kinds_of_primitives_are_enforced() -> None:
    # Given values of the wrong JSON kind, which R4B's lax coercion would accept
    resource = {
        "resourceType": "Patient",
        "active": "yes",
        "multipleBirthInteger": 2.0,
        "name": [{"family": 5}],
    }
    # When validated, Then each one is refused where it is
    assert sorted(expressions(resource)) == [
        "Patient.active",
        "Patient.multipleBirthInteger",
        "Patient.name[0].family",
    ]


def test_unknown_elements_arrays_and_single_values_are_checked() -> None:
    resource = {
        "resourceType": "Patient",
        "foo": 1,
        "name": {"family": "x"},
        "gender": ["male"],
        "fhir_comments": ["not FHIR"],
    }
    found = messages(resource)
    assert "Patient.foo: unknown element for Patient" in found
    assert any(m.startswith("Patient.name: expected an array") for m in found)
    assert any(m.startswith("Patient.gender: expected a single value") for m in found)
    assert "Patient.fhir_comments: unknown element for Patient" in found


def test_only_one_choice_of_a_choice_element_may_be_present() -> None:
    resource = {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"}
    assert any("only one of the choices of deceased[x]" in m for m in messages(resource))


def test_a_missing_required_element_is_named() -> None:
    issues = full_issues({"resourceType": "Observation", "status": "final"})
    assert [(i.code, i.expression) for i in issues] == [("required", ("Observation.code",))]


def test_empty_objects_arrays_and_strings_are_refused() -> None:
    resource = {"resourceType": "Patient", "name": [{}], "telecom": [], "birthDate": ""}
    assert sorted(expressions(resource)) == ["Patient.birthDate", "Patient.name[0]", "Patient.telecom"]


def test_primitive_extensions_align_with_their_values_and_may_stand_in_for_nulls() -> None:
    # Given a given name known only through an extension (null in the value array)
    extension = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    good = {"resourceType": "Patient", "name": [{"given": ["a", None], "_given": [None, extension]}]}
    unpaired = {"resourceType": "Patient", "name": [{"given": ["a", None]}]}
    misaligned = {"resourceType": "Patient", "name": [{"given": ["a"], "_given": [None, extension]}]}
    # Then the aligned form is valid and the others are not
    assert full_issues(good) == []
    assert expressions(unpaired) == ["Patient.name[0].given[1]"]
    assert expressions(misaligned) == ["Patient.name[0]._given"]


def test_extension_values_may_carry_primitive_extensions() -> None:
    # Given _valueString inside an extension (valid R4 that the R4B Extension model refuses)
    resource = {
        "resourceType": "Patient",
        "extension": [
            {
                "url": "http://example.org/a",
                "valueString": "a",
                "_valueString": {"extension": [{"url": "http://example.org/b", "valueCode": "b"}]},
            }
        ],
    }
    assert full_issues(resource) == []


def test_date_lexical_form_is_checked_structurally_and_calendar_validity_by_r4b() -> None:
    # Given a date that matches the R4 pattern but does not exist, and one that does not match at all
    impossible = {"resourceType": "Patient", "birthDate": "2021-02-30"}
    malformed = {"resourceType": "Patient", "birthDate": "21-2-3"}
    # Then the structural level refuses only the malformed one, full validation both
    assert structural_issues(impossible) == []
    assert expressions(impossible) == ["Patient.birthDate"]
    assert expressions(malformed) == ["Patient.birthDate"]


def test_codes_may_hold_non_ascii_whitespace_as_r4_patterns_allow() -> None:
    # Given a code with a no-break space (R4's \s is XML Schema's; R4B uses Python's Unicode \s)
    resource = {
        "resourceType": "CodeSystem",
        "status": "active",
        "content": "complete",
        "concept": [{"code": "CHEST\u00a0"}],
    }
    assert full_issues(resource) == []


def test_nested_resources_are_validated_by_their_own_type_with_their_path() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": "x"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": {"resourceType": "Nope"}, "request": {"method": "POST", "url": "Nope"}},
        ],
    }
    assert sorted(expressions(bundle)) == ["Bundle.entry[0].resource.gender", "Bundle.entry[1].resource"]


def test_contained_resources_cannot_contain_resources() -> None:
    resource = {
        "resourceType": "Patient",
        "contained": [{"resourceType": "Patient", "id": "a", "contained": [{"resourceType": "Patient"}]}],
    }
    assert expressions(resource) == ["Patient.contained[0].contained[0]"]


def test_r4_types_that_r4b_removed_are_validated_against_r4() -> None:
    # Given an R4 type that R4B does not have, valid and broken
    good = {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin"}]}
    bad = {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin", "foo": 1}]}
    # Then the R4 definitions decide
    assert "MedicinalProduct" in definitions().r4b_differing
    assert full_issues(good) == []
    assert expressions(bad) == ["MedicinalProduct.name[0].foo"]


def test_the_r4_evidence_example_passes_although_r4b_redefined_evidence() -> None:
    assert "Evidence" in definitions().r4b_differing
    assert full_issues(example("Evidence-example.json")) == []


def test_a_missing_or_mismatching_resource_type_is_a_bad_request() -> None:
    with pytest.raises(InvalidRequest):
        validate_resource({"active": True}, "Patient")
    with pytest.raises(InvalidRequest):
        validate_resource({"resourceType": "Observation"}, "Patient")


def test_an_invalid_resource_raises_unprocessable_with_every_issue() -> None:
    with pytest.raises(Unprocessable) as caught:
        validate_resource({"resourceType": "Patient", "gender": "x", "active": None}, "Patient")
    assert len(caught.value.issues) == 2


def test_an_unknown_resource_type_is_refused_without_crashing() -> None:
    assert expressions({"resourceType": "Nope"}) == ["resourceType"]
    assert expressions({"resourceType": "Patient", "contained": [{"id": "x"}]}) == ["Patient.contained[0]"]


def test_ids_follow_the_r4_syntax() -> None:
    assert validate_id("abc-1.2") == "abc-1.2"
    for bad in ("a b", "", "x" * 65, "a/b"):
        with pytest.raises(InvalidRequest):
            validate_id(bad)
    assert expressions({"resourceType": "Patient", "id": "a b"}) == ["Patient.id"]


def test_the_number_of_issues_listed_is_bounded() -> None:
    resource = {"resourceType": "Patient", **{f"x{i}": 1 for i in range(500)}}
    issues = full_issues(resource)
    assert len(issues) == 101
    assert issues[-1].severity == "warning"


def test_structural_mode_skips_the_model_and_none_skips_everything() -> None:
    impossible = {"resourceType": "Patient", "birthDate": "2021-02-30"}
    validate_resource(copy.deepcopy(impossible), "Patient", ValidationMode.STRUCTURAL)
    validate_resource({"resourceType": "Patient", "foo": 1}, "Patient", ValidationMode.NONE)
    with pytest.raises(Unprocessable):
        validate_resource(impossible, "Patient", ValidationMode.FULL)
