"""FHIRPath Patch on parsed resources: the operations, their rules and the bodies they come in."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidRequest, Unprocessable
from core.fhirpatch import apply_patch, parse_patch


def op(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """Build one operation parameter; ``parts`` map a part name to its JSON part body."""
    body = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    body += [{"name": name, **value} for name, value in parts.items()]
    return {"name": "operation", "part": body}


def patch(resource: dict[str, Any], *ops: dict[str, Any]) -> dict[str, Any]:
    """Apply the operations to ``resource`` through the Parameters form clients send."""
    return apply_patch(resource, parse_patch({"resourceType": "Parameters", "parameter": list(ops)}))


def patient() -> dict[str, Any]:
    """Return a small Patient to patch."""
    return {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
        "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
        "maritalStatus": {"text": "married"},
    }


def test_replace_changes_the_one_selected_element():
    # Given a patient / When its birth family name is replaced
    out = patch(
        patient(), op("replace", "Patient.name.where(use='official').family", value={"valueString": "X"})
    )
    # Then only that element changed
    assert out["name"][0]["family"] == "X"
    assert out["name"][0]["given"] == ["Peter", "James"]


def test_replace_of_an_absent_element_or_of_several_elements_is_refused():
    # Given a patient without a birthDate and with two identifiers
    # When a replace selects nothing or two elements / Then it fails, naming the path
    with pytest.raises(Unprocessable, match="selects no element"):
        patch(patient(), op("replace", "Patient.birthDate", value={"valueDate": "2000-01-01"}))
    with pytest.raises(Unprocessable, match="selects 2 elements"):
        patch(patient(), op("replace", "Patient.identifier.value", value={"valueString": "9"}))


def test_the_original_resource_is_never_modified():
    # Given a patient / When a patch applies
    original = patient()
    patch(original, op("delete", "Patient.active"))
    # Then the input is untouched
    assert original == patient()


def test_delete_removes_one_element_and_nothing_selected_is_not_an_error():
    # Given a patient / When an identifier is deleted and then a missing element
    out = patch(
        patient(),
        op("delete", "Patient.identifier.where(system='urn:a')"),
        op("delete", "Patient.birthDate"),
    )
    # Then one identifier is left and nothing failed
    assert out["identifier"] == [{"system": "urn:b", "value": "2"}]


def test_delete_leaves_no_empty_objects_or_lists_behind():
    # Given a patient whose maritalStatus holds only a text
    # When the text and both given names are deleted
    out = patch(
        patient(),
        op("delete", "Patient.maritalStatus.text"),
        op("delete", "Patient.name.given[1]"),
        op("delete", "Patient.name.given[0]"),
    )
    # Then the emptied maritalStatus and given are gone entirely
    assert "maritalStatus" not in out
    assert "given" not in out["name"][0]


def test_delete_of_several_elements_at_once_is_refused():
    with pytest.raises(Unprocessable, match="selects 2"):
        patch(patient(), op("delete", "Patient.identifier"))


def test_add_appends_to_a_repeating_element_and_sets_an_absent_single_one():
    # Given a patient / When an identifier and a birthDate are added
    out = patch(
        patient(),
        op("add", "Patient", name={"valueString": "identifier"}, value={"valueIdentifier": {"value": "3"}}),
        op("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "1974-12-25"}),
        op("add", "Patient", name={"valueString": "telecom"}, value={"valueContactPoint": {"value": "555"}}),
    )
    # Then the identifier is the last of three, birthDate is set, and telecom is a list
    assert out["identifier"][-1] == {"value": "3"}
    assert out["birthDate"] == "1974-12-25"
    assert out["telecom"] == [{"value": "555"}]


def test_add_of_a_single_element_that_exists_is_refused():
    with pytest.raises(Unprocessable, match="exists already"):
        patch(patient(), op("add", "Patient", name={"valueString": "active"}, value={"valueBoolean": False}))


def test_upsert_replaces_a_single_element_and_adds_a_repeating_item_only_once():
    # Given a patient / When the same upserts run twice
    ops = [
        op("upsert", "Patient", name={"valueString": "active"}, value={"valueBoolean": False}),
        op("upsert", "Patient", name={"valueString": "gender"}, value={"valueCode": "female"}),
        op(
            "upsert", "Patient", name={"valueString": "identifier"}, value={"valueIdentifier": {"value": "7"}}
        ),
    ]
    once = patch(patient(), *ops)
    twice = patch(once, *ops)
    # Then single elements take the value and the identifier is there once
    assert once["active"] is False and once["gender"] == "female"
    assert twice == once
    assert [i["value"] for i in twice["identifier"]] == ["1", "2", "7"]


def test_insert_puts_the_value_at_the_index_and_refuses_an_index_past_the_end():
    # Given a patient with two identifiers / When one is inserted at 1
    out = patch(
        patient(),
        op(
            "insert",
            "Patient.identifier",
            value={"valueIdentifier": {"value": "mid"}},
            index={"valueInteger": 1},
        ),
    )
    # Then it sits between them
    assert [i["value"] for i in out["identifier"]] == ["1", "mid", "2"]
    with pytest.raises(Unprocessable, match="outside"):
        patch(
            patient(),
            op(
                "insert",
                "Patient.identifier",
                value={"valueIdentifier": {"value": "x"}},
                index={"valueInteger": 3},
            ),
        )


def test_move_reorders_a_list():
    out = patch(
        patient(),
        op("move", "Patient.name.given", source={"valueInteger": 1}, destination={"valueInteger": 0}),
    )
    assert out["name"][0]["given"] == ["James", "Peter"]


def test_a_choice_element_is_reached_by_its_short_name_and_added_with_its_type():
    # Given an observation with a quantity value
    obs = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "code": {"text": "t"},
        "valueQuantity": {"value": 1, "unit": "kg"},
    }
    # When its value's unit is replaced, and effective[x] is added as a dateTime
    out = patch(
        obs,
        op("replace", "Observation.value.unit", value={"valueString": "g"}),
        op("add", "Observation", name={"valueString": "effective"}, value={"valueDateTime": "2020-01-01"}),
    )
    # Then the right members changed
    assert out["valueQuantity"] == {"value": 1, "unit": "g"}
    assert out["effectiveDateTime"] == "2020-01-01"


def test_anonymous_elements_are_built_from_named_parts():
    # Given a patient / When a contact is added from parts
    contact = {
        "part": [
            {"name": "name", "valueHumanName": {"family": "Du Marché"}},
            {"name": "relationship", "valueCodeableConcept": {"text": "partner"}},
        ]
    }
    out = patch(patient(), op("add", "Patient", name={"valueString": "contact"}, value=contact))
    # Then the contact is one object in a list
    assert out["contact"] == [{"name": {"family": "Du Marché"}, "relationship": {"text": "partner"}}]


def test_resource_type_and_id_cannot_be_patched():
    with pytest.raises(Unprocessable, match="cannot be patched"):
        patch(patient(), op("replace", "Patient.id", value={"valueId": "other"}))
    with pytest.raises(Unprocessable, match="cannot be patched"):
        patch(patient(), op("delete", "Patient.id"))


def test_a_value_of_the_wrong_shape_is_refused():
    with pytest.raises(Unprocessable, match="primitive"):
        patch(patient(), op("replace", "Patient.active", value={"valueCoding": {"code": "x"}}))
    with pytest.raises(Unprocessable, match="object"):
        patch(patient(), op("replace", "Patient.maritalStatus", value={"valueString": "x"}))


def test_an_unknown_element_is_refused_with_its_name():
    with pytest.raises(Unprocessable, match="no element 'colour'"):
        patch(patient(), op("replace", "Patient.colour", value={"valueString": "x"}))


def test_a_path_for_another_resource_type_is_refused():
    with pytest.raises(Unprocessable, match="not Patient"):
        patch(patient(), op("delete", "Observation.status"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceType": "Patient"}, "Parameters"),
        ({"resourceType": "Parameters"}, "no operation"),
        ({"resourceType": "Parameters", "parameter": [{"name": "op"}]}, "named 'operation'"),
        ({"resourceType": "Parameters", "parameter": [op("explode", "Patient")]}, "unknown operation type"),
        ({"resourceType": "Parameters", "parameter": [op("replace", "Patient.active")]}, "needs value"),
        (
            {"resourceType": "Parameters", "parameter": [op("delete", "Patient.name.where(use='x'")]},
            "Unbalanced",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    op(
                        "insert",
                        "Patient.identifier",
                        value={"valueString": "x"},
                        index={"valueString": "first"},
                    )
                ],
            },
            "integer",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [op("delete", "Patient.active", colour={"valueString": "x"})],
            },
            "unknown parts",
        ),
    ],
)
def test_malformed_patch_bodies_are_refused_before_anything_is_touched(body: dict[str, Any], message: str):
    # Given a malformed body / When parsed / Then it is a 400-class error naming the problem
    with pytest.raises(InvalidRequest, match=message):
        parse_patch(body)
