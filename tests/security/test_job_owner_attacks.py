"""Another client of the same partition goes after a client's jobs, with authentication on.

Client X starts an export, a ``$bulk-update`` and an ``$import`` in partition A. Client Y holds a token for
the same partition, once with every scope and once read-only, and polls, downloads, cancels and DELETEs them
by their URLs, and lists the partition's jobs. Every request is the 404 of an id that never existed; the jobs
and their files are untouched and X's jobs run to their end. An administrator may do all of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from core.settings import Settings
from harness.services import S3Settings
from harness.tokens import AuthKeys, bearer
from storage import Database
from storage.jobs import JobQueue
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import PUBLIC, BulkApi, bulk_api
from tests.support.fhir import FHIR, base, outcome_codes
from tests.support.jobinproc import deliver

SECRET = "SECRET-OF-X"
OWNER, STRANGER = "client-x", "client-y"
PATCH = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "upsert"},
                {"name": "path", "valueString": "Patient"},
                {"name": "name", "valueString": "active"},
                {"name": "value", "valueBoolean": False},
            ],
        }
    ],
}


@dataclass(frozen=True)
class Tokens:
    """The owner's token, the stranger's two tokens (every scope, read-only) and an administrator's."""

    owner: str
    strangers: tuple[str, str]
    admin: str


@pytest.fixture
def bulk(
    secure_settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[BulkApi]:
    """Yield the API with authentication on and the job machinery run in-process."""
    yield bulk_api(s3_settings.apply(secure_settings), database, object_store, monkeypatch)


@pytest.fixture
def tokens(auth_keys: AuthKeys, partition: str) -> Tokens:
    """Return the tokens of the story, all of them for partition A."""
    return Tokens(
        owner=auth_keys.client(OWNER, [partition]),
        strangers=(
            auth_keys.client(STRANGER, [partition]),
            auth_keys.client(STRANGER, [partition], "system/*.rs"),
        ),
        admin=auth_keys.admin(),
    )


@pytest.fixture
def seeded(bulk: BulkApi, tokens: Tokens, partition: str) -> str:
    """Store four patients carrying X's secret in partition A; return the partition."""
    for i in range(4):
        body = {"resourceType": "Patient", "id": f"p{i}", "name": [{"family": SECRET}]}
        response = bulk.client.put(
            f"{base(partition)}/Patient/p{i}",
            json=body,
            headers={**bearer(tokens.owner), "Content-Type": FHIR},
        )
        assert response.status_code == 201, response.data
    return partition


def _path(location: str) -> str:
    assert location.startswith(PUBLIC), location
    return location[len(PUBLIC) :]


def _job_id(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[1]


def _plan_only(bulk: BulkApi) -> None:
    """Deliver the orchestrate messages only: jobs get planned and run, their processing work waits."""
    for message in bulk.sender.take():
        if message.actor == "orchestrate":
            deliver(bulk.resources, message)
        else:
            bulk.backlog.append(message)
    bulk.backlog += bulk.sender.take()


def _unknown_answer(client: FlaskClient, status: str, token: str) -> TestResponse:
    """Return the answer to a poll of an id that never existed, at the same place."""
    return client.get(status.rsplit("/", 1)[0] + "/" + "0" * 32, headers=bearer(token))


def _assert_like_unknown(response: TestResponse, unknown: TestResponse, job_id: str) -> None:
    """Check that ``response`` is the 404 of an unknown id, word for word but for the id itself."""
    assert response.status_code == 404, (response.status_code, response.data[:300])
    assert outcome_codes(response) == ["not-found"]
    assert SECRET.encode() not in response.data
    mine = orjson.loads(response.data.replace(job_id.encode(), b"ID"))
    theirs = orjson.loads(unknown.data.replace(b"0" * 32, b"ID"))
    assert [i["diagnostics"] for i in mine["issue"]] == [i["diagnostics"] for i in theirs["issue"]]


def _export(bulk: BulkApi, token: str, partition: str) -> tuple[str, list[str]]:
    """Run an export of ``partition`` with ``token`` to its end; return its status path and file paths."""
    kick = bulk.client.get(f"{base(partition)}/$export", headers={**bearer(token), "Prefer": "respond-async"})
    assert kick.status_code == 202, kick.data
    status = _path(kick.headers["Content-Location"])
    bulk.run(partition)
    manifest = bulk.client.get(status, headers=bearer(token))
    assert manifest.status_code == 200, manifest.data
    files = [_path(item["url"]) for item in manifest.get_json()["output"]]
    assert files
    return status, files


def test_another_clients_tokens_cannot_poll_download_list_cancel_or_delete_a_clients_export(
    bulk: BulkApi, tokens: Tokens, seeded: str, object_store: S3ObjectStore
):
    # Given X's completed export of partition A, and its files in the object store
    partition = seeded
    status, files = _export(bulk, tokens.owner, partition)
    job_id = _job_id(status)
    prefix = object_store.job_prefix(partition, job_id)
    keys = sorted(object_store.list_keys(prefix))
    assert keys
    for token in tokens.strangers:
        unknown = _unknown_answer(bulk.client, status, token)
        # When Y (every scope, then read-only) polls it, downloads each file, cancels it (DELETE) and lists
        responses = [bulk.client.get(status, headers=bearer(token))]
        responses += [bulk.client.get(url, headers=bearer(token)) for url in files]
        responses.append(bulk.client.delete(status, headers=bearer(token)))
        listing = bulk.client.get(f"{base(partition)}/_operations", headers=bearer(token))
        # Then each is the 404 of an unknown id, and the listing does not name the job
        for response in responses:
            _assert_like_unknown(response, unknown, job_id)
        assert listing.status_code == 200 and job_id.encode() not in listing.data
    # And X's export and its files are untouched: X still reads the manifest and every file
    assert sorted(object_store.list_keys(prefix)) == keys
    assert bulk.client.get(status, headers=bearer(tokens.owner)).status_code == 200
    for url in files:
        download = bulk.client.get(url, headers=bearer(tokens.owner))
        assert download.status_code == 200 and SECRET.encode() in download.data


def test_another_clients_tokens_cannot_poll_or_cancel_a_running_bulk_update(
    bulk: BulkApi, tokens: Tokens, seeded: str, database: Database
):
    # Given X's bulk update of partition A, planned and running, its processing work not done yet
    partition = seeded
    kick = bulk.client.patch(
        f"{base(partition)}/Patient/$bulk-update",
        json=PATCH,
        headers={**bearer(tokens.owner), "Content-Type": FHIR},
    )
    assert kick.status_code == 202, kick.data
    status = _path(kick.headers["Content-Location"])
    job_id = _job_id(status)
    _plan_only(bulk)
    before = JobQueue(database).get(partition, job_id)
    assert before is not None and before.status == "running"
    for token in tokens.strangers:
        unknown = _unknown_answer(bulk.client, status, token)
        # When Y polls it and DELETEs it
        poll = bulk.client.get(status, headers=bearer(token))
        cancel = bulk.client.delete(status, headers=bearer(token))
        # Then both are the 404 of an unknown id
        _assert_like_unknown(poll, unknown, job_id)
        _assert_like_unknown(cancel, unknown, job_id)
    # And the job is untouched (no cancel recorded), and runs to its end for X
    after = JobQueue(database).get(partition, job_id)
    assert after is not None and after.status == "running" and not after.cancel_requested
    assert bulk.client.get(status, headers=bearer(tokens.owner)).status_code == 202
    bulk.run(partition)
    done = bulk.client.get(status, headers=bearer(tokens.owner))
    assert done.status_code == 200, done.data
    patient = bulk.client.get(f"{base(partition)}/Patient/p0", headers=bearer(tokens.owner)).get_json()
    assert patient["active"] is False


def test_another_clients_tokens_cannot_poll_or_cancel_a_running_import(
    bulk: BulkApi, tokens: Tokens, partition: str, database: Database, object_store: S3ObjectStore
):
    # Given X's import of a file uploaded under partition A's own prefix, planned and running
    key = object_store.job_prefix(partition, "uploads") + "owner.ndjson"
    lines = [{"resourceType": "Patient", "id": f"i{n}", "name": [{"family": SECRET}]} for n in range(3)]
    object_store.put_bytes(key, b"".join(orjson.dumps(line) + b"\n" for line in lines))
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {
                "name": "input",
                "part": [
                    {"name": "type", "valueCode": "Patient"},
                    {"name": "url", "valueUri": f"s3://{object_store.bucket}/{key}"},
                ],
            },
        ],
    }
    kick = bulk.client.post(
        f"{base(partition)}/$import",
        json=body,
        headers={**bearer(tokens.owner), "Content-Type": FHIR, "Prefer": "respond-async"},
    )
    assert kick.status_code == 202, kick.data
    status = _path(kick.headers["Content-Location"])
    job_id = _job_id(status)
    _plan_only(bulk)
    before = JobQueue(database).get(partition, job_id)
    assert before is not None and before.status == "running"
    for token in tokens.strangers:
        unknown = _unknown_answer(bulk.client, status, token)
        # When Y polls it and DELETEs it
        poll = bulk.client.get(status, headers=bearer(token))
        cancel = bulk.client.delete(status, headers=bearer(token))
        # Then both are the 404 of an unknown id
        _assert_like_unknown(poll, unknown, job_id)
        _assert_like_unknown(cancel, unknown, job_id)
    # And the import is untouched and completes for X
    after = JobQueue(database).get(partition, job_id)
    assert after is not None and after.status == "running" and not after.cancel_requested
    bulk.run(partition)
    done = bulk.client.get(status, headers=bearer(tokens.owner))
    assert done.status_code == 200, done.data
    assert done.get_json()["output"][0]["count"] == 3


def test_an_administrator_polls_downloads_lists_and_cancels_any_clients_jobs(
    bulk: BulkApi, tokens: Tokens, seeded: str, database: Database
):
    # Given X's completed export and X's running bulk update in partition A
    partition = seeded
    status, files = _export(bulk, tokens.owner, partition)
    kick = bulk.client.patch(
        f"{base(partition)}/Patient/$bulk-update",
        json=PATCH,
        headers={**bearer(tokens.owner), "Content-Type": FHIR},
    )
    update = _path(kick.headers["Content-Location"])
    _plan_only(bulk)
    admin = bearer(tokens.admin)
    # When an administrator polls and downloads the export, lists the partition's jobs and cancels the update
    manifest = bulk.client.get(status, headers=admin)
    download = bulk.client.get(files[0], headers=admin)
    listing = bulk.client.get(f"{base(partition)}/_operations", headers=admin)
    cancel = bulk.client.delete(update, headers=admin)
    # Then every request is served, and the cancel took effect
    assert manifest.status_code == 200
    assert download.status_code == 200 and SECRET.encode() in download.data
    assert _job_id(status).encode() in listing.data and _job_id(update).encode() in listing.data
    assert cancel.status_code == 202, cancel.data
    cancelled = JobQueue(database).get(partition, _job_id(update))
    assert cancelled is not None and cancelled.cancel_requested


def test_a_client_lists_only_its_own_jobs_of_a_partition(bulk: BulkApi, tokens: Tokens, seeded: str):
    # Given an export by X and one by Y in the same partition
    partition = seeded
    mine, _ = _export(bulk, tokens.owner, partition)
    theirs, _ = _export(bulk, tokens.strangers[0], partition)
    # When each lists the partition's operations
    by_owner = bulk.client.get(f"{base(partition)}/_operations", headers=bearer(tokens.owner))
    by_stranger = bulk.client.get(f"{base(partition)}/_operations", headers=bearer(tokens.strangers[1]))
    # Then each sees its own job and not the other's
    assert _job_id(mine).encode() in by_owner.data and _job_id(theirs).encode() not in by_owner.data
    assert _job_id(theirs).encode() in by_stranger.data and _job_id(mine).encode() not in by_stranger.data
