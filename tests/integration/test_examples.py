"""The official FHIR R4 examples: validated, stored in several partitions at once, read back equal, and
never seen from another partition; the example transaction Bundles run as transactions."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.validation import full_issues
from tests.support.fhir import FHIR, base, post
from tests.support.stored_state import assert_outcome, stored_state

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "r4-examples"


def load_examples() -> list[tuple[str, bytes, dict[str, Any]]]:
    """Return (file name, bytes, parsed) of every shipped example."""
    out = []
    for path in sorted(EXAMPLES.glob("*.json")):
        raw = path.read_bytes()
        out.append((path.name, raw, json.loads(raw)))
    return out


ALL = load_examples()


def comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """Return ``resource`` without what the server sets (meta.versionId, meta.lastUpdated)."""
    out = copy.deepcopy(resource)
    meta = {k: v for k, v in out.get("meta", {}).items() if k not in {"versionId", "lastUpdated"}}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def in_threads(
    tasks: list[Any], app: Flask, work: Callable[[FlaskClient, Any], Any], threads: int = 4
) -> list[Any]:
    """Run ``work(client, task)`` for every task on a pool of threads, one test client per thread."""
    local = threading.local()

    def run(task: Any) -> Any:
        if not hasattr(local, "client"):
            local.client = app.test_client()
        return work(local.client, task)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, tasks))


def test_the_sample_covers_every_resource_type_that_has_an_official_example() -> None:
    types = {parsed["resourceType"] for _, _, parsed in ALL}
    assert len(ALL) >= 500
    assert len(types) == 140


@pytest.mark.parametrize("name", [name for name, _, _ in ALL])
def test_every_official_example_in_the_sample_is_valid(name: str) -> None:
    parsed = json.loads((EXAMPLES / name).read_bytes())
    assert full_issues(parsed) == []


def test_examples_round_trip_in_several_partitions_at_once_and_no_partition_sees_anothers(
    app: Flask, client: FlaskClient, partition: str, other_partition: str
) -> None:
    # Given three partitions: the first gets every example, the second the even ones, the third the odd ones
    third = f"{partition}-3"
    plan = {partition: list(range(len(ALL))), other_partition: list(range(0, len(ALL), 2))}
    plan[third] = list(range(1, len(ALL), 2))
    tasks = [(p, i) for p, indexes in plan.items() for i in indexes]
    tasks.sort(key=lambda t: (t[1], t[0]))  # interleave the partitions

    def store(c: FlaskClient, task: tuple[str, int]) -> tuple[str, int, int, bytes]:
        p, i = task
        _, raw, parsed = ALL[i]
        resp = c.put(
            f"{base(p)}/{parsed['resourceType']}/{parsed['id']}", data=raw, headers={"Content-Type": FHIR}
        )
        return p, i, resp.status_code, resp.data[:500]

    # When they are stored with update-as-create from four threads at once
    results = in_threads(tasks, app, store)
    # Then every one was created
    failures = [(p, ALL[i][0], status, body) for p, i, status, body in results if status != 201]
    assert failures == []

    def read(c: FlaskClient, task: tuple[str, int]) -> tuple[str, int, int, Any]:
        p, i = task
        parsed = ALL[i][2]
        resp = c.get(f"{base(p)}/{parsed['resourceType']}/{parsed['id']}")
        return p, i, resp.status_code, resp.get_json(force=True)

    # And each reads back equal to what was sent, apart from versionId and lastUpdated
    everything = [(p, i) for p in plan for i in range(len(ALL))]
    mismatches = []
    for p, i, status, body in in_threads(everything, app, read):
        expected_here = i in set(plan[p]) if p != partition else True
        if not expected_here:
            # The partition that did not get this example does not see the other partitions' copy
            assert status == 404, (p, ALL[i][0], status)
            assert body["resourceType"] == "OperationOutcome"
            continue
        assert status == 200, (p, ALL[i][0], status, body)
        assert body["meta"]["versionId"] == "1"
        if comparable(body) != comparable(ALL[i][2]):
            mismatches.append((p, ALL[i][0]))
    assert mismatches == []
    totals = stored_state(client, partition, other_partition, third).history_totals
    assert totals == (len(ALL), len(plan[other_partition]), len(plan[third]))


def test_numbers_in_the_examples_keep_the_spelling_the_example_used(
    client: FlaskClient, partition: str
) -> None:
    # Given the examples whose numbers a parse/serialise round trip would respell (1.50, 1e3)
    import re

    lossy = re.compile(rb"\d\.\d*0(?![0-9])|\d[eE][-+]?\d")
    chosen = [(name, raw, parsed) for name, raw, parsed in ALL if lossy.search(raw)][:25]
    assert chosen
    for name, raw, parsed in chosen:
        path = f"{base(partition)}/{parsed['resourceType']}/{parsed['id']}"
        assert client.put(path, data=raw, headers={"Content-Type": FHIR}).status_code == 201, name
        stored = client.get(path).data
        for number in lossy.findall(raw):
            assert number in stored, (name, number)


def example(name: str) -> dict[str, Any]:
    """Return one shipped example, parsed."""
    parsed: dict[str, Any] = json.loads((EXAMPLES / name).read_bytes())
    return parsed


def test_the_hla_transaction_example_creates_every_entry_and_links_them(
    client: FlaskClient, partition: str
) -> None:
    # Given the official HLA transaction: 22 POSTs that refer to each other by urn:uuid
    bundle = example("Bundle-hla-1.json")
    # When it is posted as a transaction
    resp = post(client, base(partition), bundle)
    # Then every entry is created and every urn:uuid reference now names a stored resource of the partition
    assert resp.status_code == 200, resp.data[:1000]
    entries = resp.get_json(force=True)["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * len(bundle["entry"])
    text = json.dumps([e["resource"] for e in entries])
    assert "urn:uuid:" not in text
    report = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "DiagnosticReport")
    for ref in report["result"]:
        assert client.get(f"{base(partition)}/{ref['reference']}").status_code == 200


def test_the_questionnaire_transaction_example_runs_once_its_foreign_base_is_ours(
    client: FlaskClient, partition: str
) -> None:
    # Given the official SDC transaction, whose entry urls are absolute on hl7.org's base
    raw = (EXAMPLES / "Bundle-ussg-fht.json").read_text("utf-8")
    before = stored_state(client, partition)
    # When it is posted as it is, Then it is refused: the urls name another server
    assert_outcome(client.post(base(partition), data=raw, headers={"Content-Type": FHIR}), 400)
    assert stored_state(client, partition) == before
    # When the base is this partition's, Then all eleven resources are stored with their ids
    ours = raw.replace("http://hl7.org/fhir/us/sdc/", f"http://bulkhead.test/partitions/{partition}/")
    resp = client.post(base(partition), data=ours.encode(), headers={"Content-Type": FHIR})
    assert resp.status_code == 200, resp.data[:1000]
    statuses = [e["response"]["status"] for e in resp.get_json(force=True)["entry"]]
    assert statuses == ["201 Created"] * 11
    assert client.get(f"{base(partition)}/Questionnaire/54127-6").status_code == 200


def test_the_xds_transaction_example_rewrites_references_to_absolute_full_urls(
    client: FlaskClient, partition: str
) -> None:
    # Given the official XDS transaction: absolute fullUrls on another server, a conditional create (whose
    # criteria, "...patients!89765a87b", match nothing: the example writes "!" where a token takes "|")
    bundle = example("Bundle-xds.json")
    # When it is posted
    resp = post(client, base(partition), bundle)
    # Then every entry is created and the document's references name the new resources
    assert resp.status_code == 200, resp.data[:1000]
    entries = resp.get_json(force=True)["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 5
    document = entries[0]["resource"]
    assert document["resourceType"] == "DocumentReference"
    subject = document["subject"]["reference"]
    assert subject.startswith("Patient/") and "localhost" not in subject
    assert client.get(f"{base(partition)}/{subject}").status_code == 200
    assert "localhost:9556" not in json.dumps(document.get("author", []))
    # And links outside Reference elements too (R4 transaction rules; IHE MHD depends on them): the
    # attachment's url and the narrative's <a href> name the stored Binary
    binary = entries[4]["response"]["location"].split("/_history/")[0].rsplit("/", 2)
    stored_binary = f"{binary[-2]}/{binary[-1]}"
    read = client.get(f"{base(partition)}/{document['resourceType']}/{document['id']}").get_json(force=True)
    assert read["content"][0]["attachment"]["url"] == stored_binary
    assert f'href="{stored_binary}"' in read["text"]["div"]
    assert "localhost:9556" not in json.dumps(read)
    assert client.get(f"{base(partition)}/{stored_binary}").status_code == 200


def test_the_kitchen_sink_transaction_example_is_refused_cleanly_and_stores_nothing(
    client: FlaskClient, partition: str
) -> None:
    # Given the official example that uses conditional update and delete, an operation ($lookup, which a
    # Bundle cannot carry here) and a search
    before = stored_state(client, partition)
    resp = post(client, base(partition), example("Bundle-bundle-transaction.json"))
    # Then it is refused with an OperationOutcome naming the entry, and nothing is stored
    body = assert_outcome(resp, resp.status_code)
    assert 400 <= resp.status_code < 500
    assert body["issue"][0]["diagnostics"].startswith("Bundle.entry[")
    assert stored_state(client, partition) == before


def test_the_batch_examples_read_what_they_can_and_answer_every_entry(
    client: FlaskClient, partition: str
) -> None:
    # Given the official Patient example stored in the partition
    patient = (EXAMPLES / "Patient-example.json").read_bytes()
    client.put(f"{base(partition)}/Patient/example", data=patient, headers={"Content-Type": FHIR})
    for name in ("Bundle-bundle-request-simplesummary.json", "Bundle-bundle-request-medsallergies.json"):
        bundle = example(name)
        # When the batch is posted
        resp = post(client, base(partition), bundle)
        # Then each entry has an answer; the read of the patient returns it; none is a server error
        assert resp.status_code == 200, resp.data[:1000]
        entries = resp.get_json(force=True)["entry"]
        assert len(entries) == len(bundle["entry"])
        assert entries[0]["response"]["status"] == "200 OK"
        assert entries[0]["resource"]["id"] == "example"
        for item in entries[1:]:
            assert not item["response"]["status"].startswith("5")
            if not item["response"]["status"].startswith("2"):
                assert item["response"]["outcome"]["resourceType"] == "OperationOutcome"
