"""Costly FHIRPath sent with one partition's token: refused when stored, bounded when evaluated.

The attacker holds a token for one partition only and sends SearchParameters whose expressions would stall
a backtracking regex engine or fhirpathpy's recursive evaluator, then makes the server evaluate them
(``$reindex``, writes of Patients). Each store is refused with 422 naming the limit; an accepted but costly
parameter is skipped for the resources it is too slow on, counted in the reindex result, and the partition's
writes complete without a transaction open while it is evaluated.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from core import fhirpath_guard
from core.fhirdates import format_instant
from core.settings import Settings
from harness.tokens import AuthKeys, bearer
from orchestrator.reindex import finish_reindex, plan_reindex
from storage import Database
from storage.db import libpq_url
from storage.objectstore import S3ObjectStore
from tests.support.fhir import FHIR, base
from tests.support.run_inline import run_inline
from workers.reindex import process_reindex

_CHARS = "%context.name.first().family.toChars()"
#: Accepted when stored (short, shallow, a literal RE2 pattern), but cubic in the family name's length.
CUBIC = (
    f"Patient.name.first().family.toChars().select({_CHARS}.select({_CHARS}"
    ".where($this.matches('^[a-z]+$')))).count()"
)
LONG_NAME = "Vanderbergholt-Smithers"


def search_parameter(sp_id: str, expression: str, ptype: str = "string") -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "id": sp_id,
        "url": f"https://attacker.example/SearchParameter/{sp_id}",
        "name": sp_id,
        "status": "active",
        "description": "costly",
        "code": sp_id,
        "base": ["Patient"],
        "type": ptype,
        "expression": expression,
    }


def headers(auth_keys: AuthKeys, partition: str) -> dict[str, str]:
    return {**bearer(auth_keys.hs256([partition], "system/*.cruds")), "Content-Type": FHIR}


def reindex(settings: Settings, database: Database, store: S3ObjectStore, partition: str) -> dict[str, Any]:
    d = {"transaction_time": format_instant(datetime.now(UTC))}
    return run_inline(settings, database, store, partition, d, plan_reindex, process_reindex, finish_reindex)


@pytest.mark.parametrize(
    ("expression", "limit"),
    [
        ("Patient" + ".where(true)" * 300, "longer than 2048 characters"),
        ("Patient" + ".where(true)" * 100, "calls 100 functions, more than 64"),
        (r"Patient.name.family.where($this.matches('(a+)\\1'))", "is not supported"),
        ("Patient.descendants().where($this = 'a')", "descendants() is not allowed"),
        ("Patient.name.family.matches(%context.id)", "must be a string literal"),
    ],
)
def test_storing_a_search_parameter_over_a_limit_is_refused_with_422_naming_it(
    secure_client: FlaskClient, auth_keys: AuthKeys, partition: str, expression: str, limit: str
) -> None:
    # Given the attacker's token for one partition
    h = headers(auth_keys, partition)
    # When it PUTs, POSTs and sends in a transaction Bundle a SearchParameter with the expression
    put = secure_client.put(
        f"{base(partition)}/SearchParameter/evil", json=search_parameter("evil", expression), headers=h
    )
    post = secure_client.post(
        f"{base(partition)}/SearchParameter", json=search_parameter("evil", expression), headers=h
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": search_parameter("evil", expression),
                "request": {"method": "PUT", "url": "SearchParameter/evil"},
            }
        ],
    }
    tx = secure_client.post(f"{base(partition)}/", json=bundle, headers=h)
    # Then each is refused with 422 and an OperationOutcome that names the limit
    for response in (put, post, tx):
        assert response.status_code == 422, response.get_data(as_text=True)
        body = response.get_json(force=True)
        assert body["resourceType"] == "OperationOutcome"
        assert any(limit in i.get("diagnostics", "") for i in body["issue"]), body
    assert any(i["code"] == "too-costly" for i in put.get_json(force=True)["issue"])
    # And nothing was stored
    read = secure_client.get(f"{base(partition)}/SearchParameter/evil", headers=h)
    assert read.status_code == 404


def test_a_catastrophic_regex_parameter_is_accepted_and_indexes_in_linear_time(
    secure_client: FlaskClient,
    auth_keys: AuthKeys,
    settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
) -> None:
    # Given the attacker's parameter with a pattern that backtracks exponentially in a Perl-style engine
    h = headers(auth_keys, partition)
    sp = search_parameter("aaa", "Patient.name.family.where($this.matches('^(a+)+$'))")
    assert secure_client.put(f"{base(partition)}/SearchParameter/aaa", json=sp, headers=h).status_code == 201
    # And a Patient named 40 a's and a '!', and one named 10,000 a's and a '!'
    for pid, family in (("forty", "a" * 40 + "!"), ("many", "a" * 10_000 + "!"), ("match", "aaaa")):
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
        assert secure_client.put(f"{base(partition)}/Patient/{pid}", json=body, headers=h).status_code == 201
    # When the partition is reindexed
    started = time.monotonic()
    result = reindex(settings, database, object_store, partition)
    # Then it completes at once, nothing skipped, and only the matching name is searchable
    assert time.monotonic() - started < 30
    assert result["searchParameters"]["activated"] == ["aaa"]
    assert result["skipped"] == {}
    found = secure_client.get(f"{base(partition)}/Patient?aaa:exact=aaaa", headers=h).get_json(force=True)
    assert [e["resource"]["id"] for e in found.get("entry", [])] == ["match"]
    # And a write of the hostile name answers at once
    started = time.monotonic()
    body = {"resourceType": "Patient", "id": "forty", "name": [{"family": "a" * 40 + "!"}]}
    assert secure_client.put(f"{base(partition)}/Patient/forty", json=body, headers=h).status_code == 200
    assert time.monotonic() - started < 5


def test_a_costly_accepted_parameter_is_skipped_and_counted_and_the_partitions_writes_complete(
    secure_client: FlaskClient,
    auth_keys: AuthKeys,
    settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    partition: str,
) -> None:
    # Given a parameter every store-time check accepts but that is cubic in a family name's length
    h = headers(auth_keys, partition)
    sp = search_parameter("cubic", CUBIC, "number")
    assert (
        secure_client.put(f"{base(partition)}/SearchParameter/cubic", json=sp, headers=h).status_code == 201
    )
    # And three Patients with long family names and two with short ones
    for i in range(5):
        family = LONG_NAME if i < 3 else "Smith"
        body = {"resourceType": "Patient", "id": f"c{i}", "name": [{"family": family}]}
        assert secure_client.put(f"{base(partition)}/Patient/c{i}", json=body, headers=h).status_code == 201
    # When the partition is reindexed
    result = reindex(settings, database, object_store, partition)
    # Then the reindex completes, every resource reindexed, the three skips counted
    assert {o["type"]: o["count"] for o in result["output"]} == {"Patient": 5, "SearchParameter": 1}
    assert result["skipped"] == {"cubic": 3}
    assert result["searchParameters"]["activated"] == ["cubic"]
    # And the short names are searchable by the parameter
    found = secure_client.get(f"{base(partition)}/Patient?cubic=100", headers=h).get_json(force=True)
    assert sorted(e["resource"]["id"] for e in found.get("entry", [])) == ["c3", "c4"]
    # And writes of Patients with long names in the partition complete, each within its budget
    for i in range(5, 10):
        body = {"resourceType": "Patient", "id": f"c{i}", "name": [{"family": LONG_NAME}]}
        started = time.monotonic()
        response = secure_client.put(f"{base(partition)}/Patient/c{i}", json=body, headers=h)
        assert response.status_code == 201
        assert time.monotonic() - started < 10
    patch = [{"op": "replace", "path": "/name/0/family", "value": LONG_NAME + "-Jones"}]
    response = secure_client.patch(
        f"{base(partition)}/Patient/c3",
        json=patch,
        headers={**h, "Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200
    # And the resources are there, searchable by their official parameters
    found = secure_client.get(f"{base(partition)}/Patient?family=Vanderbergholt", headers=h).get_json(
        force=True
    )
    assert len(found.get("entry", [])) == 9


def test_a_rest_write_evaluates_the_partitions_parameters_with_no_transaction_open(
    secure_client: FlaskClient,
    auth_keys: AuthKeys,
    settings: Settings,
    database: Database,
    object_store: S3ObjectStore,
    owner_database_url: str,
    partition: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a custom parameter that calls matches(), active in the partition
    h = headers(auth_keys, partition)
    sp = search_parameter("probe", "Patient.name.family.where($this.matches('^P'))")
    assert (
        secure_client.put(f"{base(partition)}/SearchParameter/probe", json=sp, headers=h).status_code == 201
    )
    reindex(settings, database, object_store, partition)
    # And matches() instrumented to look, each time it runs, for sessions holding a transaction idle
    seen: list[list[tuple[Any, ...]]] = []
    original = fhirpath_guard.USER_FUNCTIONS["matches"]
    with psycopg.connect(libpq_url(owner_database_url), autocommit=True) as watcher:

        def probe(inputs: list[Any], regex: Any) -> Any:
            rows = watcher.execute(
                "SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
            ).fetchall()
            seen.append(rows)
            return original["fn"](inputs, regex)

        monkeypatch.setitem(fhirpath_guard.USER_FUNCTIONS, "matches", {**original, "fn": probe})
        # When Patients are created, updated and patched over REST
        body = {"resourceType": "Patient", "name": [{"family": "Probe"}]}
        created = secure_client.post(f"{base(partition)}/Patient", json=body, headers=h)
        assert created.status_code == 201
        rid = created.get_json(force=True)["id"]
        updated = {**body, "id": rid, "gender": "female"}
        assert (
            secure_client.put(f"{base(partition)}/Patient/{rid}", json=updated, headers=h).status_code == 200
        )
        ops = [{"op": "replace", "path": "/name/0/family", "value": "Prober"}]
        patched = secure_client.patch(
            f"{base(partition)}/Patient/{rid}",
            json=ops,
            headers={**h, "Content-Type": "application/json-patch+json"},
        )
        assert patched.status_code == 200
    # Then the parameter was evaluated for each write, and no session held a transaction meanwhile
    assert len(seen) >= 3
    assert seen == [[] for _ in seen]
    found = secure_client.get(f"{base(partition)}/Patient?probe=Prober", headers=h).get_json(force=True)
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [rid]
