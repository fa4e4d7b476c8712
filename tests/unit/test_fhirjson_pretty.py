"""Pretty output and the comparison of no-op updates: white space only, number spellings kept."""

from __future__ import annotations

import json

import pytest

from core.fhirjson import pretty, same_content


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":[1,2,{"b":"x,\\"{y}"}],"c":{},"d":[],"e":66.899999999999991}',
        b'{ "a" : [ ] , "b":[ {} ], "c": "tab\\tand \\\\" }',
        b'{"div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">[a, b]: {c}</div>"}',
        b"[]",
    ],
)
def test_pretty_output_parses_to_the_same_value_and_keeps_each_number_as_written(raw: bytes) -> None:
    out = pretty(raw)
    assert json.loads(out) == json.loads(raw)
    for number in (b"66.899999999999991",):
        assert (number in out) == (number in raw)


def test_pretty_output_indents_members_and_leaves_empty_containers_on_one_line() -> None:
    assert pretty(b'{"a":{},"b":[1]}') == b'{\n  "a": {},\n  "b": [\n    1\n  ]\n}'


def test_identical_content_ignores_the_versions_own_meta_but_not_a_decimals_precision() -> None:
    stored = (
        b'{"resourceType":"Observation","id":"o",'
        b'"meta":{"versionId":"3","lastUpdated":"2026-01-01T00:00:00Z"},"v":1.5}'
    )
    assert same_content(stored, b'{"resourceType":"Observation","id":"o","v":1.5}')
    assert same_content(stored, b'{"v":1.5,"resourceType":"Observation","meta":{"versionId":"1"}}')
    assert not same_content(stored, b'{"resourceType":"Observation","id":"o","v":1.50}')
    assert not same_content(stored, b'{"resourceType":"Observation","id":"o","v":1.5,"meta":{"tag":[]}}')
    assert not same_content(stored, b"not json")
