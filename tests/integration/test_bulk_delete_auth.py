"""Bulk operations with authentication on, from the attacker's side: other partitions, scopes, admin."""

from __future__ import annotations

import pytest

from api import create_app
from core.settings import Settings
from harness.services import S3Settings
from harness.tokens import AuthKeys, bearer
from orchestrator import service
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base
from tests.support.jobinproc import RecordingSender

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def secured(
    secure_settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[object, RecordingSender]:
    """Return a client of an application that requires tokens, and the recorder of its job messages."""
    sender = RecordingSender()
    monkeypatch.setattr(service, "outbox_for", lambda _settings: sender)
    app = create_app(s3_settings.apply(secure_settings), database=database)
    app.extensions["bulkhead.objectstore"] = object_store
    return app.test_client(), sender


def test_a_token_for_another_partition_cannot_start_or_see_bulk_jobs(
    secured: tuple[object, RecordingSender], auth_keys: AuthKeys, partition: str, other_partition: str
):
    client, sender = secured
    # Given a bulk delete started in A with A's token
    mine = bearer(auth_keys.hs256([partition]))
    theirs = bearer(auth_keys.hs256([other_partition]))
    kick = client.delete(f"{base(partition)}/Patient/$bulk-delete?gender=male", headers=mine)  # type: ignore[attr-defined]
    assert kick.status_code == 202
    status = kick.headers["Content-Location"].split("bulkhead.test", 1)[1]
    # When B's token asks to start one in A, or to read or cancel A's job
    start = client.delete(f"{base(partition)}/Patient/$bulk-delete", headers=theirs)  # type: ignore[attr-defined]
    read = client.get(status, headers=theirs)  # type: ignore[attr-defined]
    cancel = client.delete(status, headers=theirs)  # type: ignore[attr-defined]
    # Then it is refused and A's job is untouched
    assert start.status_code == 403 and read.status_code == 403 and cancel.status_code == 403
    assert client.get(status, headers=mine).status_code == 202  # type: ignore[attr-defined]
    assert len(sender.sent) == 1


def test_read_only_scopes_cannot_bulk_delete_bulk_update_or_reindex(
    secured: tuple[object, RecordingSender], auth_keys: AuthKeys, partition: str
):
    client, sender = secured
    reader = bearer(auth_keys.hs256([partition], scope="system/*.rs"))
    patch = {"resourceType": "Parameters", "parameter": []}
    responses = [
        client.delete(f"{base(partition)}/Patient/$bulk-delete", headers=reader),  # type: ignore[attr-defined]
        client.patch(f"{base(partition)}/Patient/$bulk-update", json=patch, headers={**reader, **FHIR}),  # type: ignore[attr-defined]
        client.post(f"{base(partition)}/$reindex", headers=reader),  # type: ignore[attr-defined]
    ]
    assert [r.status_code for r in responses] == [403, 403, 403]
    assert sender.sent == []


def test_only_an_administrator_may_reindex_every_partition(
    secured: tuple[object, RecordingSender], auth_keys: AuthKeys, partition: str
):
    client, _sender = secured
    tenant = client.post("/_reindex", headers=bearer(auth_keys.hs256([partition])))  # type: ignore[attr-defined]
    anonymous = client.post("/_reindex")  # type: ignore[attr-defined]
    admin = client.post("/_reindex", headers=bearer(auth_keys.admin()))  # type: ignore[attr-defined]
    assert tenant.status_code == 403 and anonymous.status_code == 401
    assert admin.status_code == 202
