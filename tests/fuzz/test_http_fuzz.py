"""The HTTP API fuzzed with authentication on: no answer is a 5xx, every refusal is an OperationOutcome with
an issue code, and no stored row changes, neither under read-only requests nor under refused writes.

Two partitions are seeded once: READ only ever gets read-only requests (GET, HEAD, OPTIONS, POST _search) and
WRITE also gets writes; each refused write must leave WRITE's rows exactly as they were, and READ must be
unchanged at the end. Rows are compared as stored, with SQL as the tables' owner. Runs are reproducible
(``derandomize``) and bounded for CI; ``BULKHEAD_FUZZ_EXAMPLES=5000`` runs that many examples per test.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from api import create_app
from core.settings import Settings
from harness.services import S3Settings
from harness.tokens import AuthKeys, bearer, unsigned_token
from orchestrator import service
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.fuzz.bodies import bodies, writes
from tests.fuzz.queries import CONTENT_TYPES, headers, query_string, raw_queries, search_pairs
from tests.fuzz.strategies import TYPES, paths
from tests.support.arena import seed_arena_partition
from tests.support.fhir import FHIR
from tests.support.jobinproc import RecordingSender
from tests.support.stored_state import StoredRows, owner_connection, stored_rows

READ = f"fz-r-{secrets.token_hex(4)}"
WRITE = f"fz-w-{secrets.token_hex(4)}"
WRITE_HEADERS = ("Prefer", "If-Match", "If-None-Match", "If-None-Exist", "Accept", "X-Forwarded-Host")
EXAMPLES = int(os.environ.get("BULKHEAD_FUZZ_EXAMPLES", "0"))
SEED = os.environ.get("BULKHEAD_FUZZ_SEED")


def budget(default: int) -> Any:
    """Return the settings of one fuzz test: ``default`` examples (or BULKHEAD_FUZZ_EXAMPLES), the same ones
    on every run unless BULKHEAD_FUZZ_SEED asks for another sequence."""

    def apply(test: Any) -> Any:
        configured = settings(
            max_examples=EXAMPLES or default,
            deadline=None,
            derandomize=SEED is None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(test)
        return seed(int(SEED))(configured) if SEED is not None else configured

    return apply


class Target:
    """The fuzzed application, the owner's connection and the Authorization headers the fuzzer sends."""

    def __init__(
        self,
        client: FlaskClient,
        owner: psycopg.Connection[Any],
        authorizations: tuple[str, ...],
        write_authorizations: tuple[str, ...],
    ):
        self.client = client
        self.owner = owner
        self.authorizations = authorizations
        self.write_authorizations = write_authorizations

    def __repr__(self) -> str:
        return "Target(READ, WRITE)"

    def rows(self, partition: str) -> StoredRows:
        """Return what ``partition`` holds now."""
        return stored_rows(self.owner, partition)


class LastError(logging.Handler):
    """Keep the traceback of the last unexpected error the application logged (for a 5xx's report)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text = self.format(record)


LAST_ERROR = LastError()


def _seed(client: FlaskClient, auth_keys: AuthKeys, partition: str) -> None:
    seed_arena_partition(client, auth_keys, partition, partition.upper())
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    base = f"/partitions/{partition}"
    extra = [
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/same"}},
        {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
         "member": [{"entity": {"reference": "Patient/same"}}]},
        {"resourceType": "Patient", "id": "edge", "birthDate": "9999-12-31",
         "deceasedDateTime": "0001-01-01"},
        {"resourceType": "Patient", "id": "gone"},
    ]  # fmt: skip
    for resource in extra:
        response = client.put(
            f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=admin
        )
        assert response.status_code == 201, response.data
    assert client.delete(f"{base}/Patient/gone", headers=admin).status_code == 204


@pytest.fixture(scope="module")
def target(
    secure_settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    owner_database_url: str,
    auth_keys: AuthKeys,
) -> Iterator[Target]:
    """Yield the application as ``make run`` serves it (no public base URL set), its partitions seeded."""
    app = create_app(replace(s3_settings.apply(secure_settings), public_base_url=None), database=database)
    app.extensions["bulkhead.objectstore"] = object_store
    logging.getLogger("api.errors").addHandler(LAST_ERROR)
    with pytest.MonkeyPatch.context() as patch, owner_connection(owner_database_url) as owner:
        patch.setattr(service, "outbox_for", lambda _settings: RecordingSender())
        client = app.test_client()
        for partition in (READ, WRITE):
            _seed(client, auth_keys, partition)
        mine = [READ, WRITE]
        full = f"Bearer {auth_keys.hs256(mine, lifetime=3600)}"
        refused = (
            f"Bearer {auth_keys.hs256(mine, 'system/*.rs', lifetime=3600)}",
            f"Bearer {auth_keys.hs256(['elsewhere'], lifetime=3600)}",
            f"Bearer {auth_keys.hs256(mine, lifetime=-60)}",
            f"Bearer {unsigned_token(auth_keys.claims(mine))}",
            full[:-4] + "AAAA",
            full.replace("Bearer ", "bearer "),
            full.replace("Bearer ", "Bearer  "),
            "Bearer",
            "Bearer x.y.z",
            "Basic Zm9vOmJhcg==",
            "",
        )
        writes = (full,) * 30 + refused
        yield Target(client, owner, (*writes, f"Bearer {auth_keys.admin()}"), writes)
    logging.getLogger("api.errors").removeHandler(LAST_ERROR)


def check(response: TestResponse, method: str, what: str) -> None:
    """Assert no 5xx, and that a refusal (other than to HEAD) is an OperationOutcome with an issue code."""
    status = response.status_code
    data = response.get_data()
    response.close()
    assert status < 500, f"{what} -> {status} {data[:600]!r}\n{LAST_ERROR.text[-3000:]}"
    if status < 400 or method == "HEAD":
        return
    assert response.headers.get("Content-Type", "").startswith("application/fhir+json"), f"{what} -> {status}"
    body = json.loads(data)
    assert body["resourceType"] == "OperationOutcome", f"{what} -> {status} {data[:600]!r}"
    assert body["issue"] and body["issue"][0]["code"], f"{what} -> {status} {data[:600]!r}"


def _send(
    target: Target, method: str, url: str, hdrs: dict[str, str], body: bytes | None = None
) -> TestResponse:
    return target.client.open(url, method=method, data=body, headers=hdrs)


def _query(pairs: list[tuple[str, str]], raw: str | None) -> str:
    text = query_string(pairs)
    if raw is not None:
        text = f"{text}&{raw}" if text else raw
    return f"?{text}" if text else ""


class Seeded(dict[str, StoredRows]):
    """What each partition held once seeded (shown by name only in a failure's report)."""

    def __repr__(self) -> str:
        return f"Seeded({', '.join(self)})"


@pytest.fixture(scope="module")
def before(target: Target) -> Seeded:
    """Return what both partitions held once seeded."""
    return Seeded({p: target.rows(p) for p in (READ, WRITE)})


@budget(2200)
@given(
    path=paths((READ,)),
    pairs=search_pairs(),
    raw=st.one_of(st.none(), raw_queries),
    hdrs=headers(),
    auth=st.integers(0, 100),
    method=st.sampled_from(["GET", "GET", "GET", "GET", "HEAD", "OPTIONS", "POST"]),
)
def test_fuzzed_read_only_requests_never_fail_and_change_no_stored_row(
    target: Target,
    before: Seeded,
    path: str,
    pairs: list[tuple[str, str]],
    raw: str | None,
    hdrs: dict[str, str],
    auth: int,
    method: str,
) -> None:
    # Given a seeded partition and a token that is usually valid
    hdrs = {**hdrs, "Authorization": target.authorizations[auth % len(target.authorizations)]}
    # When a fuzzed path, query and headers are sent (POST: as a _search form)
    if method == "POST":
        url = path.rstrip("/") + "/_search"
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        response = _send(target, method, url, hdrs, query_string(pairs).encode())
    else:
        url = path + _query(pairs, raw)
        response = _send(target, method, url, hdrs)
    # Then the answer is no 5xx, a refusal is an OperationOutcome, and READ holds what it held
    check(response, method, f"{method} {url} {hdrs}")
    assert target.rows(READ) == before[READ], f"{method} {url} changed stored rows"


@budget(1800)
@given(
    rtype=st.sampled_from([*TYPES[:5], ""]),
    pairs=search_pairs(),
    hdrs=headers(),
    form=st.booleans(),
)
def test_fuzzed_search_parameters_never_fail_and_change_no_stored_row(
    target: Target,
    before: Seeded,
    rtype: str,
    pairs: list[tuple[str, str]],
    hdrs: dict[str, str],
    form: bool,
) -> None:
    # Given a seeded partition and a valid token
    hdrs = {**hdrs, "Authorization": target.authorizations[0]}
    base = f"/partitions/{READ}/{rtype}".rstrip("/")
    # When a search with fuzzed parameters, modifiers, prefixes and result parameters is sent
    if form:
        url = f"{base}/_search"
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        response = _send(target, "POST", url, hdrs, query_string(pairs).encode())
    else:
        url = base + _query(pairs, None)
        response = _send(target, "GET", url, hdrs)
    # Then no 5xx, refusals are outcomes, and nothing stored changed
    check(response, "GET", f"{url} {pairs} {hdrs}")
    assert target.rows(READ) == before[READ], f"{url} changed stored rows"


@budget(1300)
@given(
    write=writes(f"/partitions/{WRITE}"),
    anything=st.tuples(paths((WRITE,)), st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]), bodies()),
    arbitrary=st.integers(0, 4),
    pairs=search_pairs(),
    hdrs=headers(WRITE_HEADERS),
    auth=st.integers(0, 100),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_fuzzed_writes_never_fail_and_a_refused_one_changes_no_stored_row(
    target: Target,
    before: Seeded,
    write: tuple[str, str, str, bytes],
    anything: tuple[str, str, bytes],
    arbitrary: int,
    pairs: list[tuple[str, str]],
    hdrs: dict[str, str],
    auth: int,
    content_type: str,
) -> None:
    # Given the write partition as it is now, and a token that is usually valid for it
    rows = target.rows(WRITE)
    method, url, kind, body = write
    if arbitrary == 0:  # any path, method and body, with any Content-Type
        (url, method, body), kind = anything, content_type
    if arbitrary == 1:
        url += ("&" if "?" in url else "?") + query_string(pairs)
    hdrs = {
        **hdrs,
        "Authorization": target.write_authorizations[auth % len(target.write_authorizations)],
        "Content-Type": kind,
    }
    # When a fuzzed write is sent
    response = _send(target, method, url, hdrs, body or None)
    # Then no 5xx; a refused write changed no row of WRITE, and no write ever touched READ
    what = f"{method} {url} {hdrs} {body[:300]!r}"
    check(response, method, what)
    if response.status_code >= 400:
        assert target.rows(WRITE) == rows, f"refused, but rows changed: {what}"
    assert target.rows(READ) == before[READ], f"{what} changed the read partition"
