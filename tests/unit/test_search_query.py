"""Parsing search parameters and paging cursors without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core.errors import InvalidRequest
from storage.models import ResourceRow
from storage.search import builtin_registry, parse_search
from storage.search.criteria import Scope, number_range, split_prefix
from storage.search.paging import decode_cursor, encode_cursor, order_columns
from storage.search.query import SortKey, split_values


def parse(rtype: str, query: list[tuple[str, str]], **kwargs: object):  # type: ignore[no-untyped-def]
    return parse_search(builtin_registry(), [rtype], query, **kwargs)  # type: ignore[arg-type]


def test_repeated_parameters_are_and_ed_and_commas_or_values() -> None:
    # Given a query with a repeated parameter and a comma list, When it is parsed
    query = parse("Patient", [("name", "peter,jim"), ("name", "chalmers"), ("gender", "a\\,b")])
    # Then each occurrence is one criterion and commas split values (escaped commas do not)
    assert [(c.code, c.values) for c in query.criteria] == [
        ("name", ("peter", "jim")),
        ("name", ("chalmers",)),
        ("gender", ("a,b",)),
    ]


def test_an_unknown_parameter_is_refused_unless_handling_is_lenient() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse("Patient", [("shoe-size", "42")])
    assert "shoe-size" in refused.value.message
    lenient = parse("Patient", [("shoe-size", "42"), ("gender", "male")], lenient=True)
    assert [c.code for c in lenient.criteria] == ["gender"]
    assert lenient.warnings and lenient.warnings[0].severity == "warning"


@pytest.mark.parametrize(
    "pair",
    [
        ("name:below", "x"),
        ("gender:in", "http://vs"),
        ("birthdate:exact", "2020"),
        ("_text", "cancer"),
        ("_contained", "true"),
        ("code-value-quantity", "x$5"),
        ("subject:identifier", "a|b"),
    ],
)
def test_unsupported_modifiers_and_parameters_are_refused_by_name(pair: tuple[str, str]) -> None:
    rtype = "Observation" if pair[0].startswith(("code-value", "subject")) else "Patient"
    with pytest.raises(InvalidRequest):
        parse(rtype, [pair])


def test_missing_takes_only_true_or_false() -> None:
    with pytest.raises(InvalidRequest):
        parse("Patient", [("name:missing", "maybe")])


def test_chains_resolve_to_each_target_type_with_the_parameter() -> None:
    query = parse("Observation", [("subject.name", "peter")])
    (criterion,) = query.criteria
    # Subject may point at several types; only those with a name parameter are chained
    assert "Patient" in criterion.targets and "Device" not in criterion.targets
    typed = parse("Observation", [("subject:Patient.name", "peter")]).criteria[0]
    assert typed.targets == ("Patient",)


def test_reverse_chains_name_source_reference_and_parameter() -> None:
    (criterion,) = parse("Patient", [("_has:Observation:patient:code", "1234")]).criteria
    assert criterion.has is not None
    source, ref, inner = criterion.has
    assert (source, ref, inner.code, inner.values) == ("Observation", "patient", "code", ("1234",))


def test_result_parameters_are_parsed_and_refused_where_only_criteria_belong() -> None:
    query = parse(
        "Observation",
        [
            ("_count", "5000"),
            ("_sort", "-date,_id"),
            ("_include", "Observation:subject:Patient"),
            ("_total", "none"),
        ],
        max_count=100,
    )
    assert query.count == 100
    assert [(k.code, k.descending) for k in query.sort] == [("date", True), ("_id", False)]
    assert query.includes[0].target == "Patient"
    with pytest.raises(InvalidRequest):
        parse("Observation", [("_count", "5")], criteria_only=True)
    with pytest.raises(InvalidRequest):
        parse("Observation", [("_total", "maybe")])


def test_prefixes_are_split_only_before_a_number_or_date() -> None:
    assert split_prefix("ge2020-01") == ("ge", "2020-01")
    assert split_prefix("2020") == ("eq", "2020")
    assert split_prefix("eb-3") == ("eb", "-3")
    assert split_prefix("apple") == ("eq", "apple")


def test_numbers_stand_for_the_range_of_their_significant_digits() -> None:
    assert number_range("100") == (Decimal(100), Decimal("99.5"), Decimal("100.5"))
    assert number_range("1.50") == (Decimal("1.50"), Decimal("1.495"), Decimal("1.505"))
    with pytest.raises(InvalidRequest):
        number_range("ten")


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    # Given the order of a search sorted by date then id
    columns = order_columns(ResourceRow, (SortKey("date", "date", True), SortKey("_id", "token")), Scope(1))
    values = [False, datetime(2024, 1, 2, tzinfo=UTC), "p1", 42]
    # When a cursor is made and read back, Then it gives the same key
    assert decode_cursor(encode_cursor("n", values), columns) == (False, values)
    # And a cursor of another shape or a forged one is a 400, never a 500
    nul = encode_cursor("n", [False, datetime(2024, 1, 2, tzinfo=UTC), "p\x00", 42])
    for forged in ["not-base64!", encode_cursor("n", [1, 2]), encode_cursor("x", values), "eyJhIjoxfQ", nul]:
        with pytest.raises(InvalidRequest):
            decode_cursor(forged, columns)


def test_a_number_with_a_huge_exponent_either_way_is_bounded_to_what_the_index_holds() -> None:
    # Given numbers far beyond the index's bounds, When they are parsed as search values
    # Then they compare as the bound (nothing indexed lies beyond it) or round to zero, never overflowing
    assert number_range("1e999999999") == (Decimal("1e22"), Decimal("5e21"), Decimal("1e22"))
    assert number_range("-1e999999999")[0] == Decimal("-1e22")
    assert number_range("1e-999999999") == (Decimal(0), Decimal("-5e-401"), Decimal("5e-401"))
    assert number_range("9" * 400)[0] == Decimal("1e22")
    for text in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(InvalidRequest):
            number_range(text)


@pytest.mark.parametrize(
    "values",
    [
        [False, datetime(2024, 1, 2, tzinfo=UTC), "p1", 2**63],
        [False, datetime(2024, 1, 2, tzinfo=UTC), "p1", -(2**63) - 1],
        [False, datetime(2024, 1, 2, tzinfo=UTC), "\ud800", 42],
        [False, datetime(2024, 1, 2, tzinfo=UTC), "p1", True],
    ],
)
def test_a_cursor_holding_a_value_no_row_could_have_is_refused(values: list[object]) -> None:
    columns = order_columns(ResourceRow, (SortKey("date", "date", True), SortKey("_id", "token")), Scope(1))
    with pytest.raises(InvalidRequest):
        decode_cursor(encode_cursor("n", values), columns)


@pytest.mark.parametrize("number", ["1e999999999", "-1e-999999999", "NaN", "Infinity", "1" * 5000, "1e-401"])
def test_a_cursor_holding_a_number_the_index_cannot_hold_is_refused(number: str) -> None:
    columns = order_columns(ResourceRow, (SortKey("probability", "number"),), Scope(1))
    with pytest.raises(InvalidRequest):
        decode_cursor(encode_cursor("n", [False, number, 7]), columns)
    held = decode_cursor(encode_cursor("n", [False, "0.5", 7]), columns)
    assert held == (False, [False, Decimal("0.5"), 7])


def test_split_values_keeps_other_escapes_for_the_type_parsers() -> None:
    assert split_values("a\\|b,c\\,d") == ["a\\|b", "c,d"]
