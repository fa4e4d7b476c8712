"""Limits on tenants' FHIRPath without a database: store-time checks, RE2 regexes, evaluation budgets."""

from __future__ import annotations

import json
import threading
import time
from importlib import resources

import orjson
import pytest
from fhirpathpy.models import models

from core.fhirpath_guard import TooCostly, TransactionBudget, compile_bounded, evaluation_budget
from core.fhirpath_limits import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_FUNCTION_CALLS,
    expression_problems,
    search_parameter_issues,
)
from core.importrows import LineError, build_record
from core.importspec import FULL, INITIAL, NONE, STRUCTURAL
from storage.search import IndexRows, SearchParameterDef, builtin_registry, index_rows_for

CATASTROPHIC = "Patient.name.family.where($this.matches('^(a+)+$'))"
_CHARS = "%context.name.first().family.toChars()"
#: Accepted by every store-time check, but cubic in the length of the family name.
CUBIC = (
    f"Patient.name.first().family.toChars().select({_CHARS}.select({_CHARS}"
    ".where($this.matches('^[a-z]+$')))).count()"
)


def patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": "p1", "name": [{"family": family, "given": ["Ann"]}]}


def test_every_official_r4_expression_is_within_the_limits() -> None:
    # Given every expression of the official R4 SearchParameters
    table = json.loads(
        resources.files("storage.search").joinpath("data/search_parameters.json").read_text("utf-8")
    )
    expressions = [p["expression"] for p in table["parameters"] if p.get("expression")]
    # When each is checked / Then none is refused
    assert len(expressions) > 1000
    assert [e for e in expressions if expression_problems(e)] == []


def test_a_catastrophic_regex_runs_in_linear_time_on_forty_and_on_ten_thousand_as() -> None:
    # Given the expression a backtracking engine needs exponential time for, which the checks accept
    assert expression_problems(CATASTROPHIC) == ()
    evaluate = compile_bounded(CATASTROPHIC, model=models["r4"], seconds=1.0)
    for n in (40, 10_000):
        # When it runs on a family name of n a's and a '!'
        started = time.perf_counter()
        found = evaluate(patient("a" * n + "!"))
        # Then it answers (no match) at once, and matches what it should
        assert found == []
        assert time.perf_counter() - started < 0.5
    assert evaluate(patient("aaaa")) == ["aaaa"]


def test_a_regex_leaves_other_threads_running_while_it_matches() -> None:
    # Given a thread that counts while a linear-time regex scans 20 MB
    ticks = 0
    stop = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=count)
    ticker.start()
    evaluate = compile_bounded("Patient.name.family.matches('(a|aa)*b')", model=models["r4"], seconds=5.0)
    try:
        # When the regex runs
        started = time.perf_counter()
        assert evaluate(patient("a" * 20_000_000)) == [False]
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        ticker.join()
    # Then the other thread kept running meanwhile (RE2 releases the interpreter lock)
    assert ticks >= 1
    assert elapsed < 5.0


def test_replace_matches_runs_on_re2_with_dollar_group_references() -> None:
    evaluate = compile_bounded(
        "Patient.name.family.replaceMatches('(a+)(b)', '$2$1')", model=models["r4"], seconds=1.0
    )
    assert evaluate(patient("xaab")) == ["xbaa"]


def test_where_true_repeated_300_times_is_refused_and_so_is_one_over_the_depth_or_call_limit() -> None:
    # Given .where(true) 300 times (over the length limit) and 100 times (within it)
    long = "Patient" + ".where(true)" * 300
    deep = "Patient" + ".where(true)" * 100
    # When they are checked / Then both are refused, each naming the limit it breaks
    assert len(long) > MAX_EXPRESSION_CHARS
    assert expression_problems(long) == (f"the expression is longer than {MAX_EXPRESSION_CHARS} characters",)
    problems = expression_problems(deep)
    assert f"the expression calls 100 functions, more than {MAX_FUNCTION_CALLS}" in problems
    assert any(f"more than {MAX_DEPTH}" in p and "levels deep" in p for p in problems)
    assert expression_problems("(" * 400 + "Patient" + ")" * 400) != ()


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("Patient.name.repeat(given)", "repeat() is not allowed"),
        ("Patient.descendants()", "descendants() is not allowed"),
        ("Patient.name.trace('x')", "trace() is not allowed"),
        ("Patient.name.given.aggregate($this)", "aggregate() is not allowed"),
        ("Observation.subject.resolve().name", "resolve() is only supported"),
        ("Patient.name.family.matches(%context.id)", "must be a string literal"),
        (r"Patient.name.family.matches('(a)\\1')", "is not supported"),
        ("Patient.name.family.matches('(?=a)b')", "is not supported"),
        ("Patient.name.family.replaceMatches('" + "a" * 300 + "', 'b')", "longer than 256 characters"),
    ],
)
def test_unbounded_functions_and_patterns_re2_cannot_match_in_linear_time_are_refused(
    expression: str, reason: str
) -> None:
    problems = expression_problems(expression)
    assert any(reason in p for p in problems), problems


def test_resolve_is_accepted_as_the_type_test_inside_where() -> None:
    assert expression_problems("Observation.subject.where(resolve() is Patient or resolve() is Group)") == ()


def test_a_search_parameter_resource_over_a_limit_gets_a_too_costly_issue() -> None:
    resource = {"resourceType": "SearchParameter", "expression": "Patient.descendants()"}
    issues = search_parameter_issues(resource)
    assert [i.code for i in issues] == ["too-costly"]
    assert issues[0].expression == ("SearchParameter.expression",)
    assert "descendants()" in issues[0].diagnostics
    assert search_parameter_issues({"resourceType": "Patient", "expression": "Patient.descendants()"}) == []


def test_an_evaluation_past_its_budget_stops_and_so_does_one_that_recurses_too_deeply() -> None:
    # Given an accepted but cubic expression and a budget of 20 ms
    evaluate = compile_bounded(CUBIC, model=models["r4"], seconds=0.02)
    # When it runs on a long family name / Then it stops soon after its budget
    started = time.thread_time()
    with pytest.raises(TooCostly):
        evaluate(patient("Vanderbergholt-Smithers"))
    assert time.thread_time() - started < 0.5
    # And on a short one it answers
    assert evaluate(patient("Smith")) == [100]
    # And an expression deeper than the interpreter's stack is a TooCostly, not a RecursionError
    with pytest.raises(TooCostly):
        compile_bounded("Patient" + ".where(true)" * 300, seconds=1.0)({"resourceType": "Patient"})


def test_an_inner_budget_never_reaches_past_the_outer_one() -> None:
    evaluate = compile_bounded(CUBIC, model=models["r4"], seconds=10.0)
    started = time.thread_time()
    with pytest.raises(TooCostly), evaluation_budget(0.02):
        evaluate(patient("Vanderbergholt-Smithers"))
    assert time.thread_time() - started < 0.5


def test_extraction_skips_and_counts_a_custom_parameter_over_its_budget_and_indexes_the_rest() -> None:
    # Given a registry with the cubic custom parameter
    cubic = SearchParameterDef(
        code="cubic", url="https://example.org/sp/cubic", type="number", base=("Patient",), expression=CUBIC
    )
    registry = builtin_registry().extended([cubic])
    # When a Patient with a long family name is indexed
    rows = index_rows_for("Patient", 7, 3, patient("Vanderbergholt-Smithers"), registry=registry)
    # Then the parameter is skipped for it and counted, and the official parameters are indexed
    assert dict(rows.skipped) == {"cubic": 1}
    assert not [r for r in rows.by_table["number"] if r[2] == "cubic"]
    assert [r for r in rows.by_table["string"] if r[2] == "family"]
    # And a Patient with a short name gets the parameter indexed
    short = index_rows_for("Patient", 8, 3, patient("Smith"), registry=registry)
    assert dict(short.skipped) == {}
    assert [r for r in short.by_table["number"] if r[2] == "cubic"]


def test_extraction_leaves_out_the_meta_members_the_server_sets() -> None:
    # Given a custom parameter on meta.versionId and one on meta.source
    defs = [
        SearchParameterDef(
            code=code, url=f"https://example.org/sp/{code}", type="token", base=("Patient",), expression=e
        )
        for code, e in (("version", "Patient.meta.versionId"), ("source", "Patient.meta.source"))
    ]
    registry = builtin_registry().extended(defs)
    resource = {"resourceType": "Patient", "meta": {"versionId": "3", "source": "urn:x"}}
    # When the resource is indexed
    rows = index_rows_for("Patient", 7, 3, resource, registry=registry)
    # Then only the content (meta.source) is indexed: the version is the server's, set in the transaction
    codes = {r[2] for r in rows.by_table["token"]}
    assert "source" in codes and "version" not in codes


@pytest.mark.parametrize("validation", [FULL, STRUCTURAL, NONE])
def test_an_imported_search_parameter_over_a_limit_is_refused_at_every_validation_level(
    validation: str,
) -> None:
    # Given an NDJSON line holding a SearchParameter whose expression repeats .where(true) 300 times
    line = orjson.dumps(
        {
            "resourceType": "SearchParameter",
            "id": "evil",
            "url": "https://attacker.example/sp/evil",
            "name": "evil",
            "status": "active",
            "description": "x",
            "code": "evil",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient" + ".where(true)" * 300,
        }
    )
    # When the import reads it / Then the line is refused, naming the limit
    with pytest.raises(LineError) as refused:
        build_record(0, line, mode=INITIAL, validation=validation)
    assert any(i.code == "too-costly" and "2048" in i.diagnostics for i in refused.value.issues)


def test_a_transactions_budget_bounds_all_its_evaluations_together_and_ends_with_it() -> None:
    # Given the cubic custom parameter and a transaction budget of 0.2 s
    cubic = SearchParameterDef(
        code="cubic", url="https://example.org/sp/cubic", type="number", base=("Patient",), expression=CUBIC
    )
    registry = builtin_registry().extended([cubic])
    budget = TransactionBudget(0.2)
    budget.start()
    try:
        # When twenty Patients with long names are extracted in it
        started = time.thread_time()
        rows = IndexRows()
        for i in range(20):
            index_rows_for("Patient", i, 3, patient("Vanderbergholt-Smithers"), registry=registry, into=rows)
        spent = time.thread_time() - started
    finally:
        budget.stop()
    # Then every one skips the parameter, and together they spent about the transaction's budget, not 20x50 ms
    assert dict(rows.skipped) == {"cubic": 20}
    assert spent < 0.6
    assert [r for r in rows.by_table["string"] if r[2] == "family"]
    # And once the transaction's budget has ended, a resource gets its own budgets again
    short = index_rows_for("Patient", 99, 3, patient("Smith"), registry=registry)
    assert dict(short.skipped) == {}
