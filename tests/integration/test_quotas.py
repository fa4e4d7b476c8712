"""Per-partition quotas: request rate, body size, Bundle entries, managed by administrators."""

from __future__ import annotations

import secrets

from harness.tokens import AuthKeys, bearer
from storage.partition_config import PartitionLimits, effective_limits, set_overrides
from tests.support.fhir import base, outcome_codes, post, put

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}


def _configure(client, auth_keys: AuthKeys, partition: str, **limits: float) -> None:  # type: ignore[no-untyped-def]
    response = client.put(f"/_partition-config/{partition}", json=limits, headers=bearer(auth_keys.admin()))
    assert response.status_code == 200, response.data


def test_a_partition_over_its_request_rate_gets_429_with_retry_after_and_others_do_not(
    secure_client, auth_keys, partition, other_partition
):
    # Given a partition limited to 2 requests in a burst and 0.5 per second after that
    _configure(secure_client, auth_keys, partition, rate_per_second=0.5, rate_burst=2)
    token = auth_keys.hs256([partition, other_partition])
    # When it makes three quick requests, and the other partition makes three too
    mine = [secure_client.get(f"{base(partition)}/Patient/p1", headers=bearer(token)) for _ in range(3)]
    theirs = [
        secure_client.get(f"{base(other_partition)}/Patient/p1", headers=bearer(token)) for _ in range(3)
    ]
    # Then the third of the limited partition is throttled, with an OperationOutcome and Retry-After
    assert [r.status_code for r in mine] == [404, 404, 429]
    assert outcome_codes(mine[2]) == ["throttled"]
    assert 1 <= int(mine[2].headers["Retry-After"]) <= 2
    # And the other partition is not affected
    assert [r.status_code for r in theirs] == [404, 404, 404]


def test_a_body_over_the_partitions_limit_is_refused_with_413_and_stores_nothing(
    secure_client, auth_keys, partition, other_partition
):
    # Given a partition whose bodies may not exceed 200 bytes
    _configure(secure_client, auth_keys, partition, max_body_bytes=200)
    token = auth_keys.hs256([partition, other_partition])
    big = {**PATIENT, "name": [{"text": "x" * 300}]}
    # When a larger resource is written there and in the other partition
    refused = put(secure_client, f"{base(partition)}/Patient/p1", big, **bearer(token))
    accepted = put(secure_client, f"{base(other_partition)}/Patient/p1", big, **bearer(token))
    # Then it is refused in the limited partition only, and nothing was stored there
    assert refused.status_code == 413
    assert outcome_codes(refused) == ["too-costly"]
    assert accepted.status_code == 201
    assert secure_client.get(f"{base(partition)}/Patient/p1", headers=bearer(token)).status_code == 404


def test_a_bundle_with_more_entries_than_the_partition_allows_is_refused(secure_client, auth_keys, partition):
    # Given a partition that allows two entries per Bundle
    _configure(secure_client, auth_keys, partition, max_transaction_entries=2)
    token = auth_keys.hs256([partition])
    entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry, entry, entry]}
    # When a transaction of three entries is posted
    response = post(secure_client, f"{base(partition)}/", bundle, **bearer(token))
    # Then it is refused before anything runs
    assert response.status_code == 413
    assert "3 entries" in response.get_json()["issue"][0]["diagnostics"]


def test_only_administrators_change_partition_limits(secure_client, auth_keys, partition):
    # Given a token for the partition itself
    token = auth_keys.hs256([partition])
    # When it tries to lift its own limits, and to read them
    put_response = secure_client.put(
        f"/_partition-config/{partition}", json={"rate_per_second": 1000}, headers=bearer(token)
    )
    get_response = secure_client.get(f"/_partition-config/{partition}", headers=bearer(token))
    # Then both are forbidden
    assert put_response.status_code == 403
    assert get_response.status_code == 403


def test_the_admin_endpoint_shows_overrides_over_defaults_and_forgets_them(
    secure_client, auth_keys, partition
):
    # Given an override of the concurrent job limit, sent as Parameters
    admin = bearer(auth_keys.admin())
    body = {"resourceType": "Parameters", "parameter": [{"name": "max_concurrent_jobs", "valueInteger": 1}]}
    assert secure_client.put(f"/_partition-config/{partition}", json=body, headers=admin).status_code == 200
    # When it is read, listed, then removed
    shown = secure_client.get(f"/_partition-config/{partition}", headers=admin).get_json()
    listed = secure_client.get("/_partition-config", headers=admin).get_json()
    removed = secure_client.delete(f"/_partition-config/{partition}", headers=admin)
    after = secure_client.get(f"/_partition-config/{partition}", headers=admin).get_json()
    # Then the effective limits show the override, and the defaults once it is gone
    effective = {p["name"]: p for p in shown["parameter"][2]["part"]}
    assert effective["max_concurrent_jobs"]["valueInteger"] == 1
    assert partition in [e["resource"]["parameter"][0]["valueString"] for e in listed["entry"]]
    assert removed.status_code == 204
    effective_after = {p["name"]: p for p in after["parameter"][2]["part"]}
    assert effective_after["max_concurrent_jobs"]["valueInteger"] != 1


def test_invalid_limits_are_a_bad_request(secure_client, auth_keys, partition):
    # Given an administrator
    admin = bearer(auth_keys.admin())
    # When limits are unknown, negative or not numbers
    cases = [{"max_widgets": 3}, {"max_body_bytes": -1}, {"rate_per_second": "fast"}, {"max_body_bytes": 0}]
    responses = [secure_client.put(f"/_partition-config/{partition}", json=c, headers=admin) for c in cases]
    # Then each is a 400 and nothing is stored
    assert [r.status_code for r in responses] == [400, 400, 400, 400]
    shown = secure_client.get(f"/_partition-config/{partition}", headers=admin).get_json()
    assert shown["parameter"][1] == {"name": "override"}


def test_effective_limits_are_the_overrides_over_the_settings_defaults(database, settings):
    # Given a partition with one override
    name = f"q-{secrets.token_hex(4)}"
    set_overrides(database, name, PartitionLimits(max_concurrent_jobs=2))
    # When its limits and another partition's are read
    limits = effective_limits(database, settings, name)
    other = effective_limits(database, settings, name + "x")
    # Then the override applies to it alone
    assert limits.max_concurrent_jobs == 2
    assert limits.max_body_bytes == settings.max_body_bytes
    assert other.max_concurrent_jobs == settings.export_max_concurrent_per_partition


def test_the_redis_rate_limiter_shares_one_bucket_per_partition(redis_url):
    # Given two limiters (two API processes) on the same Redis
    from api.security.quotas import RedisRateLimiter

    first, second = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    name = f"r-{secrets.token_hex(4)}"
    # When they take tokens from a bucket of 3 refilled at 0.1/s
    waits = [limiter.take(name, 0.1, 3) for limiter in (first, second, first, second)]
    # Then the fourth request must wait, whichever process serves it
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 5 < waits[3] <= 10


def test_the_partitions_concurrent_job_limit_gives_429_with_retry_after_at_kick_off(
    settings, s3_settings, database, object_store, monkeypatch, partition, other_partition
):
    # Given a partition allowed one bulk job at a time, with one export accepted and not yet run
    from tests.support.bulkapi import bulk_api

    bulk = bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch)
    set_overrides(database, partition, PartitionLimits(max_concurrent_jobs=1))
    prefer = {"Prefer": "respond-async"}
    first = bulk.client.get(f"{base(partition)}/$export", headers=prefer)
    assert first.status_code == 202, first.data
    # When a second export is kicked off there, and one in another partition
    second = bulk.client.get(f"{base(partition)}/$export", headers=prefer)
    elsewhere = bulk.client.get(f"{base(other_partition)}/$export", headers=prefer)
    # Then the partition at its limit gets 429 with Retry-After and an OperationOutcome; the other does not
    assert second.status_code == 429
    assert outcome_codes(second) == ["throttled"]
    assert int(second.headers["Retry-After"]) >= 1
    assert elsewhere.status_code == 202
