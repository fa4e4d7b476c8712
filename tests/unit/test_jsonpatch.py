"""JSON Patch (RFC 6902) on parsed resources: pointers, each operation, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import InvalidRequest, Unprocessable
from core.jsonpatch import apply_json_patch, equal, parse_json_patch, split_pointer

RESOURCE: dict[str, Any] = {
    "resourceType": "Basic",
    "id": "b1",
    "code": {"text": "x"},
    "extension": [{"url": "a/b", "valueString": "one"}, {"url": "c~d", "valueInteger": 1}],
}


def applied(*ops: dict[str, Any]) -> dict[str, Any]:
    """Return RESOURCE with ``ops`` applied."""
    return apply_json_patch(RESOURCE, parse_json_patch(list(ops)))


def test_pointer_tokens_unescape_slash_and_tilde() -> None:
    # Given pointers with escaped characters, When split, Then ~1 is a slash and ~0 a tilde
    assert split_pointer("/a~1b/c~0d/~01") == ("a/b", "c~d", "~1")
    assert split_pointer("") == ()
    with pytest.raises(InvalidRequest):
        split_pointer("a/b")
    with pytest.raises(InvalidRequest):
        split_pointer("/a~2")


def test_add_inserts_into_arrays_and_appends_with_a_dash() -> None:
    # Given a resource with two extensions, When items are added at 0 and at the end
    out = applied(
        {"op": "add", "path": "/extension/0", "value": {"url": "first", "valueBoolean": True}},
        {"op": "add", "path": "/extension/-", "value": {"url": "last", "valueBoolean": False}},
    )
    # Then they sit at both ends, and the input is unchanged
    assert [e["url"] for e in out["extension"]] == ["first", "a/b", "c~d", "last"]
    assert len(RESOURCE["extension"]) == 2


def test_test_compares_json_values_strictly() -> None:
    # Given an extension whose value is the integer 1
    # When it is tested against 1, 1.0 and true, Then the numbers match and the boolean does not
    assert applied({"op": "test", "path": "/extension/1/valueInteger", "value": 1.0})
    with pytest.raises(Unprocessable):
        applied({"op": "test", "path": "/extension/1/valueInteger", "value": True})
    assert not equal({"a": [1, "x"]}, {"a": [1, "y"]})
    assert equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})


def test_move_copy_and_remove_leave_no_empty_containers() -> None:
    # Given a resource, When the only member of code moves out and both extensions are removed
    out = applied(
        {"op": "move", "from": "/code/text", "path": "/extension/0/valueString"},
        {"op": "copy", "from": "/extension/0", "path": "/extension/-"},
        {"op": "remove", "path": "/extension/0"},
        {"op": "remove", "path": "/extension/0"},
        {"op": "remove", "path": "/extension/0"},
    )
    # Then the emptied code and extension members are gone
    assert out == {"resourceType": "Basic", "id": "b1"}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "move", "from": "/code", "path": "/code/coding"},
        {"op": "replace", "path": "", "value": {}},
        {"op": "add", "path": "/id", "value": "b2"},
        {"op": "add", "path": "/extension/01", "value": {}},
        {"op": "add", "path": "/code/text/x", "value": 1},
        {"op": "remove", "path": "/extension/-"},
    ],
)
def test_operations_that_cannot_apply_are_unprocessable(op: dict[str, Any]) -> None:
    # Given an operation into its own child, on the root, on the id, a bad index or a primitive's child
    # When applied, Then Unprocessable
    with pytest.raises(Unprocessable):
        applied(op)
