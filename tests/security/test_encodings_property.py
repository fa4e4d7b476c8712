"""Property: however a request is spelled, what is authorized is what runs.

Hypothesis generates encodings of the same requests (percent-encoding of any character, letter case, ``?``
``#`` and ``;`` tricks, absolute and relative entry URLs, every primitive ``value[x]``) and checks the effect
from outside: a narrow token never changes, reads or exports a type it holds no scope for, whichever way the
request was written; and a spelling that runs at all runs as the type its authorization was judged on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.tokens import bearer
from tests.support.arena import partition_rows
from tests.support.fhir import FHIR, base

EXAMPLES = int(os.environ.get("BULKHEAD_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALUE_X = (
    "valueString",
    "valueCode",
    "valueId",
    "valueUri",
    "valueUrl",
    "valueCanonical",
    "valueMarkdown",
    "valueOid",
    "valueUuid",
    "valueBase64Binary",
)


@pytest.fixture
def victim(secure_client, auth_keys, owner_database_url, partition) -> Iterator[str]:
    """A partition with a Patient and an Observation about it; no non-Organization row may change."""
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    resources = [
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Kept"}]},
        {
            "resourceType": "Observation",
            "id": "x",
            "status": "final",
            "code": {"text": "pulse"},
            "subject": {"reference": "Patient/p2"},
        },
    ]
    for resource in resources:
        path = f"{base(partition)}/{resource['resourceType']}/{resource['id']}"
        assert secure_client.put(path, json=resource, headers=admin).status_code in {200, 201}
    before = [r for r in partition_rows(owner_database_url, partition) if r[0] != "Organization"]
    yield partition
    after = [r for r in partition_rows(owner_database_url, partition) if r[0] != "Organization"]
    assert after == before


@st.composite
def spelled(draw: st.DrawFn, word: str) -> str:
    """Return ``word`` with any of its letters percent-encoded (either hex case) and perhaps a case flip."""
    out = []
    for ch in word:
        how = draw(st.sampled_from(["plain", "plain", "encoded", "encoded-lower", "flip"]))
        if how == "encoded":
            out.append(f"%{ord(ch):02X}")
        elif how == "encoded-lower":
            out.append(f"%{ord(ch):02x}")
        elif how == "flip" and ch.isalpha():
            out.append(ch.swapcase())
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def entry_urls(draw: st.DrawFn, rtype: str, rid: str | None) -> str:
    """Return an entry URL for ``rtype[/rid]`` in some spelling, relative or absolute, with some junk."""
    path = draw(spelled(rtype)) + (f"/{draw(spelled(rid))}" if rid else "")
    prefix = draw(st.sampled_from(["", "/", "http://bulkhead.test/partitions/{p}/"]))
    junk = draw(st.sampled_from(["", "", "?", "#", ";x=1", "?_format=json", "/", "?a=b#c"]))
    return prefix + path + junk


def _types_in(body: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(body, dict):
        rtype = body.get("resourceType")
        if isinstance(rtype, str) and rtype not in {"Bundle", "OperationOutcome"}:
            found.add(rtype)
        for value in body.values():
            found |= _types_in(value)
    elif isinstance(body, list):
        for item in body:
            found |= _types_in(item)
    return found


@PROPERTY
@given(
    data=st.data(),
    method=st.sampled_from(["PUT", "PATCH", "DELETE", "POST"]),
    kind=st.sampled_from(["batch", "transaction"]),
    target=st.sampled_from([("Observation", "x"), ("Patient", "p2")]),
)
def test_no_spelling_of_a_bundle_write_changes_a_type_the_token_may_not_write(
    secure_client, auth_keys, victim, data, method, kind, target
):
    # Given a token that may do everything with Organizations and nothing else
    token = {**bearer(auth_keys.hs256([victim], "system/Organization.cruds")), "Content-Type": FHIR}
    rtype, rid = target
    url = data.draw(entry_urls(rtype, None if method == "POST" else rid)).replace("{p}", victim)
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if method in {"PUT", "POST"}:
        entry["resource"] = {"resourceType": rtype, **({"id": rid} if method == "PUT" else {})}
    if method == "PATCH":
        entry["resource"] = {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "operation",
                    "part": [
                        {"name": "type", "valueCode": "add"},
                        {"name": "path", "valueString": rtype},
                        {"name": "name", "valueString": "language"},
                        {"name": "value", "valueCode": "fr"},
                    ],
                }
            ],
        }
    # When it sends the entry in some spelling
    response = secure_client.post(
        base(victim) + "/", json={"resourceType": "Bundle", "type": kind, "entry": [entry]}, headers=token
    )
    # Then it never succeeds on the other type (the fixture checks that no row changed)
    assert response.status_code < 500
    body = response.get_json()
    if response.status_code == 200:
        statuses = [e["response"]["status"] for e in body.get("entry", [])]
        assert all(not s.startswith("2") for s in statuses), (url, statuses)
    else:
        assert body["resourceType"] == "OperationOutcome"


@PROPERTY
@given(
    data=st.data(),
    how=st.sampled_from(["type-get", "type-post", "system-get", "system-post", "batch", "batch-system"]),
    modifier=st.sampled_from(["", ":iterate", ":recurse", ":ITERATE"]),
)
def test_no_spelling_of_a_search_returns_a_type_the_token_may_not_read(
    secure_client, auth_keys, victim, data, how, modifier
):
    # Given a token that may read and search Patients only
    token = bearer(auth_keys.hs256([victim], "system/Patient.rs"))
    key = data.draw(spelled("_revinclude")) + modifier
    value = data.draw(st.sampled_from(["Observation:subject", "Observation%3Asubject", "*", "Observation:*"]))
    extra = data.draw(st.sampled_from(["", "&_format=json", "&_format=json?x=y", "&name=Kept"]))
    query = f"{key}={value}{extra}"
    p = base(victim)
    # When it asks, in some spelling, for what references its Patients
    if how == "type-get":
        response = secure_client.get(f"{p}/Patient?{query}", headers=token)
    elif how == "type-post":
        form = {**token, "Content-Type": "application/x-www-form-urlencoded"}
        response = secure_client.post(f"{p}/Patient/_search", data=query, headers=form)
    elif how == "system-get":
        response = secure_client.get(f"{p}/?_type=Patient&{query}", headers=token)
    elif how == "system-post":
        form = {**token, "Content-Type": "application/x-www-form-urlencoded"}
        response = secure_client.post(f"{p}/_search", data=f"_type=Patient&{query}", headers=form)
    else:
        url = f"Patient?{query}" if how == "batch" else f"Patient?{quote(key)}={value}#{extra}"
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}}],
        }
        response = secure_client.post(f"{p}/", json=bundle, headers={**token, "Content-Type": FHIR})
    # Then no answer carries anything but Patients
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    assert _types_in(response.get_json()) <= {"Patient"}, query


@PROPERTY
@given(
    value_x=st.sampled_from(VALUE_X),
    other=st.sampled_from(VALUE_X),
    spelling=st.sampled_from(["Observation", "Patient,Observation", " Observation", "Observation,"]),
)
def test_no_value_x_of_an_export_type_exports_a_type_the_token_may_not_read(
    secure_client, auth_keys, victim, value_x, other, spelling
):
    # Given a token that may read Patients only
    token = {**bearer(auth_keys.hs256([victim], "system/Patient.rs")), "Content-Type": FHIR}
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "_type", other: "Patient"}, {"name": "_type", value_x: spelling}],
    }
    # When it kicks off an export naming Observation in any primitive value[x]
    response = secure_client.post(
        f"{base(victim)}/$export", json=body, headers={**token, "Prefer": "respond-async"}
    )
    # Then it is refused (or the parameters are), never accepted
    assert response.status_code in {400, 403}, (value_x, other, spelling, response.get_json())
