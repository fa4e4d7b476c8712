"""Jobs, status and file URLs of partition A from partition B's token, with authentication on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from core.settings import Settings
from harness.services import S3Settings
from harness.tokens import AuthKeys, bearer
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import bulk_api
from tests.support.fhir import FHIR, base, outcome_codes

BASE = "http://bulkhead.test"
SECRET = "SECRET-OF-A"


@pytest.fixture
def api(
    secure_settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FlaskClient]:
    """Yield a client of an app with authentication on and the job machinery run in-process."""
    bulk = bulk_api(s3_settings.apply(secure_settings), database, object_store, monkeypatch)
    bulk.client.application.extensions["test.bulk"] = bulk
    yield bulk.client


@pytest.fixture
def exported(
    api: FlaskClient, auth_keys: AuthKeys, partition: str, other_partition: str
) -> tuple[str, list[str]]:
    """Seed Patient/same in A (with a secret) and B; export A with A's token; return status and file paths."""
    admin = {**bearer(auth_keys.admin()), "Content-Type": FHIR}
    for name, family in ((partition, SECRET), (other_partition, "attacker")):
        body = {"resourceType": "Patient", "id": "same", "name": [{"family": family}]}
        assert api.put(f"{base(name)}/Patient/same", json=body, headers=admin).status_code == 201
    token = auth_keys.hs256([partition], "system/*.rs")
    kick = api.get(f"{base(partition)}/$export", headers={**bearer(token), "Prefer": "respond-async"})
    assert kick.status_code == 202, kick.data
    status = kick.headers["Content-Location"][len(BASE) :]
    api.application.extensions["test.bulk"].run(partition)
    manifest = api.get(status, headers=bearer(token))
    assert manifest.status_code == 200, manifest.data
    files = [item["url"][len(BASE) :] for item in manifest.get_json()["output"]]
    assert files
    return status, files


def _job_id(status: str) -> str:
    return status.rstrip("/").rsplit("/", 1)[1]


def test_a_manifest_requires_an_access_token_when_authentication_is_on(api, auth_keys, partition, exported):
    # Given A's completed export
    status, files = exported
    token = auth_keys.hs256([partition], "system/*.rs")
    # When A reads the manifest and a file with and without its token
    manifest = api.get(status, headers=bearer(token)).get_json()
    with_token = api.get(files[0], headers=bearer(token))
    without = api.get(files[0])
    # Then the manifest says a token is required, and the file needs it
    assert manifest["requiresAccessToken"] is True
    assert with_token.status_code == 200 and SECRET.encode() in with_token.data
    assert without.status_code == 401
    assert SECRET.encode() not in without.data


def test_as_status_and_files_under_as_base_are_forbidden_to_bs_token(
    api, auth_keys, other_partition, exported
):
    # Given A's export and B's token with every scope
    status, files = exported
    token = bearer(auth_keys.hs256([other_partition], "system/*.cruds"))
    # When B polls, downloads and cancels through A's base
    responses = [api.get(status, headers=token), api.delete(status, headers=token)]
    responses += [api.get(url, headers=token) for url in files]
    # Then every request is 403, reveals nothing, and A's export is still there
    for response in responses:
        assert response.status_code == 403
        assert outcome_codes(response) == ["forbidden"]
        assert SECRET.encode() not in response.data


def test_as_job_id_under_bs_base_is_404_for_status_delete_and_files(
    api, auth_keys, partition, other_partition, exported
):
    # Given A's export and B's token
    status, files = exported
    job_id = _job_id(status)
    token = bearer(auth_keys.hs256([other_partition], "system/*.cruds"))
    b_status = f"{base(other_partition)}/_operations/export/{job_id}"
    # When B uses A's job id under its own base: poll, download each file name, cancel
    responses = [api.get(b_status, headers=token)]
    responses += [api.get(f"{b_status}/{url.rsplit('/', 1)[1]}", headers=token) for url in files]
    responses.append(api.delete(b_status, headers=token))
    # Then each is 404 with an OperationOutcome (no existence oracle) and nothing of A
    for response in responses:
        assert response.status_code == 404, response.data
        assert outcome_codes(response) == ["not-found"]
        assert SECRET.encode() not in response.data
    # And A's job is untouched: A still gets its manifest
    a_token = bearer(auth_keys.hs256([partition], "system/*.rs"))
    assert api.get(status, headers=a_token).status_code == 200


def test_bs_job_listing_never_shows_as_jobs(api, auth_keys, other_partition, exported):
    # Given A's export
    status, _files = exported
    # When B lists its operations
    listing = api.get(
        f"{base(other_partition)}/_operations", headers=bearer(auth_keys.hs256([other_partition]))
    )
    # Then A's job id is not in it
    assert listing.status_code == 200
    assert _job_id(status).encode() not in listing.data


@pytest.mark.parametrize(
    "job_id",
    ["0" * 32, secrets.token_hex(16), "..", "%2E%2E", "' OR 1=1 --", "a" * 200, "*", "%25"],
)
def test_forged_job_ids_are_404_from_bs_base(api, auth_keys, other_partition, exported, job_id):
    # Given B's token and forged, malformed or hostile job ids
    token = bearer(auth_keys.hs256([other_partition], "system/*.cruds"))
    # When B polls them
    response = api.get(f"{base(other_partition)}/_operations/export/{job_id}", headers=token)
    # Then the answer is a refusal with an OperationOutcome that reveals nothing of A
    assert response.status_code in {400, 404}, response.data
    assert SECRET.encode() not in response.data


def test_a_replayed_status_url_after_cancel_stays_404(api, auth_keys, partition, exported):
    # Given A's export cancelled by A
    status, files = exported
    token = bearer(auth_keys.hs256([partition], "system/*.rs"))
    assert api.delete(status, headers=token).status_code == 202
    # When the status and file URLs are replayed with A's valid token
    replays = [api.get(status, headers=token), *[api.get(url, headers=token) for url in files]]
    # Then they are gone
    assert all(r.status_code == 404 for r in replays)


def test_export_scopes_gate_the_types_exported(api, auth_keys, partition):
    # Given a token that may read Patients only
    token = auth_keys.hs256([partition], "system/Patient.rs")
    headers = {**bearer(token), "Prefer": "respond-async"}
    # When it exports every type, then Patients only, then Observations
    everything = api.get(f"{base(partition)}/$export", headers=headers)
    patients = api.get(f"{base(partition)}/$export?_type=Patient", headers=headers)
    observations = api.get(f"{base(partition)}/$export?_type=Observation", headers=headers)
    # Then only the export within its scopes is accepted
    assert everything.status_code == 403
    assert patients.status_code == 202
    assert observations.status_code == 403
