"""The audit trail: every request is recorded, and only administrators can read it."""

from __future__ import annotations

import gc
import secrets
import time
import weakref
from datetime import datetime, timedelta
from typing import Any

from harness.tokens import AuthKeys, bearer
from storage.audit import AuditEvent, AuditLog
from tests.support.fhir import base, put

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female"}


def _events(client, auth_keys: AuthKeys, **query: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get("/_audit", query_string=query, headers=bearer(auth_keys.admin()))
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["resourceType"] == "Bundle"
    return [entry["resource"] for entry in body.get("entry", [])]


def _partition_of(event: dict[str, Any]) -> str:
    return next(e["valueString"] for e in event["extension"] if e["url"].endswith("/partition"))


def test_every_request_is_recorded_with_partition_client_operation_resource_outcome_and_address(
    secure_client, auth_keys, partition
):
    # Given a client writing then reading a resource from a known address
    token = auth_keys.hs256([partition])
    put(secure_client, f"{base(partition)}/Patient/p1", PATIENT, **bearer(token))
    secure_client.get(
        f"{base(partition)}/Patient/p1", headers=bearer(token), environ_base={"REMOTE_ADDR": "10.1.2.3"}
    )
    # When an administrator queries the partition's audit trail
    events = _events(secure_client, auth_keys, partition=partition)
    # Then both requests are there, newest first, with every field
    operations = [e["subtype"][0]["code"] for e in events]
    assert operations[:2] == ["read", "update"]
    read = events[0]
    assert _partition_of(read) == partition
    assert read["agent"][0]["who"]["identifier"]["value"] == "test-client"
    assert read["agent"][0]["network"]["address"] == "10.1.2.3"
    assert read["outcome"] == "0"
    assert read["outcomeDesc"] == "HTTP 200"
    assert {"what": {"reference": "Patient/p1"}} in read["entity"]
    assert read["action"] == "R"


def test_refused_requests_are_recorded_as_denied(secure_client, auth_keys, partition, other_partition):
    # Given a token for another partition used on this one
    token = auth_keys.hs256([other_partition])
    secure_client.get(f"{base(partition)}/Patient/p1", headers=bearer(token))
    # When the audit trail of this partition is read
    events = _events(secure_client, auth_keys, partition=partition)
    # Then the refusal is there with its status
    assert events[0]["outcomeDesc"] == "HTTP 403"
    assert events[0]["outcome"] == "4"
    assert events[0]["agent"][0]["who"]["identifier"]["value"] == "test-client"


def test_a_tenant_cannot_read_the_audit_trail(secure_client, auth_keys, partition):
    # Given a token for one partition with every scope
    token = auth_keys.hs256([partition])
    # When it asks for the audit trail, of its own partition or of all
    own = secure_client.get("/_audit", query_string={"partition": partition}, headers=bearer(token))
    everything = secure_client.get("/_audit", headers=bearer(token))
    # Then both are forbidden
    assert own.status_code == 403
    assert everything.status_code == 403


def test_the_audit_trail_pages_with_a_next_link(secure_client, auth_keys, partition):
    # Given three requests in a partition
    token = auth_keys.hs256([partition])
    for _ in range(3):
        secure_client.get(f"{base(partition)}/Patient/none", headers=bearer(token))
    # When the trail is read two at a time
    first = secure_client.get(
        "/_audit", query_string={"partition": partition, "_count": "2"}, headers=bearer(auth_keys.admin())
    ).get_json()
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = secure_client.get(next_url, headers=bearer(auth_keys.admin())).get_json()
    # Then the pages do not overlap and together hold the three requests
    ids = [e["resource"]["id"] for e in first["entry"]] + [e["resource"]["id"] for e in second["entry"]]
    assert len(ids) == len(set(ids)) == 3


def test_bad_audit_query_parameters_are_a_bad_request(secure_client, auth_keys):
    # Given an administrator
    # When the count or the time is malformed
    count = secure_client.get("/_audit?_count=many", headers=bearer(auth_keys.admin()))
    since = secure_client.get("/_audit?since=yesterday", headers=bearer(auth_keys.admin()))
    # Then each is a 400
    assert count.status_code == 400
    assert since.status_code == 400


def test_audit_query_values_beyond_their_columns_are_a_bad_request_not_a_database_error(
    secure_client, auth_keys
):
    # Given an administrator
    admin = bearer(auth_keys.admin())
    # When the page cursor is beyond a bigint, the count is in other digits, or a filter holds a NUL
    for query in ("_before=" + "9" * 41, "_count=%C2%B2", "job=%00", "partition=a%00", "since=9999-12-31"):
        response = secure_client.get(f"/_audit?{query}", headers=admin)
        # Then each is a 4xx OperationOutcome (the last, a valid edge date, an empty page)
        if query.startswith("since"):
            assert response.status_code == 200, response.data
        else:
            assert response.status_code == 400, (query, response.data)
            assert response.get_json(force=True)["resourceType"] == "OperationOutcome"


def _job_row(conn, job_id: str, partition: str, status: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        "INSERT INTO job (id, group_id, kind, partition, definition, definition_hash, status, max_attempts) "
        "VALUES (%s, %s, 'export', %s, '{}', repeat('0', 64), %s, 3)",
        (job_id, job_id, partition, status),
    )


def test_every_job_state_change_is_recorded_whatever_code_made_it(
    secure_client, auth_keys, database_url, partition
):
    # Given a job created and moved through its states by the application role, with a heartbeat in between
    import psycopg

    from storage.db import libpq_url

    job_id = secrets.token_hex(8)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        # Each in a transaction of the job's partition, as the job code runs (the job table is under RLS)
        steps = [
            lambda: _job_row(conn, job_id, partition, "queued"),
            lambda: conn.execute(
                "UPDATE job SET status = 'running', worker = 'w-1' WHERE id = %s", (job_id,)
            ),
            lambda: conn.execute("UPDATE job SET heartbeat_at = now() WHERE id = %s", (job_id,)),
            lambda: conn.execute("UPDATE job SET status = 'completed' WHERE id = %s", (job_id,)),
        ]
        for step in steps:
            with conn.transaction():
                conn.execute("SELECT set_config('bulkhead.partition', %s, true)", (partition,))
                step()
    # When an administrator reads the job's audit trail
    events = _events(secure_client, auth_keys, job=job_id)
    # Then each state change is there once, oldest last, with the partition and the worker
    assert [e["subtype"][0]["code"] for e in events] == ["job.completed", "job.running", "job.queued"]
    assert all(_partition_of(e) == partition for e in events)
    assert events[1]["agent"][0]["who"]["identifier"]["value"] == "w-1"


def test_log_lines_written_during_a_request_carry_its_partition_as_json(client, partition, caplog):
    # Given JSON logging
    import json
    import logging

    from core.logs import JsonFormatter, LogContextFilter

    caplog.handler.addFilter(LogContextFilter())
    # When a request in the partition logs something
    with caplog.at_level(logging.DEBUG, logger="api.app"):
        client.get(f"{base(partition)}/Patient/nobody")
    records = [r for r in caplog.records if r.name == "api.app"]
    # Then the JSON line names the partition
    assert records
    record = records[-1]
    line = json.loads(JsonFormatter().format(record))
    assert line["partition"] == partition
    assert line["job_id"] == "-"


def test_each_entry_of_a_bundle_is_its_own_audit_event(secure_client, auth_keys, partition):
    # Given a patient, and a batch that deletes it, creates an Observation and reads a missing one
    token = auth_keys.hs256([partition])
    put(secure_client, f"{base(partition)}/Patient/p1", PATIENT, **bearer(token))
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/p1"}},
            {
                "request": {"method": "PUT", "url": "Observation/o1"},
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "code": {"text": "x"},
                },
            },
            {"request": {"method": "GET", "url": "Patient/missing"}},
        ],
    }
    response = secure_client.post(
        f"{base(partition)}/", json=bundle, headers={**bearer(token), "Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200
    # When an administrator reads the partition's trail
    events = _events(secure_client, auth_keys, partition=partition)
    by_operation = {e["subtype"][0]["code"]: e for e in events}
    # Then the deletion inside the Bundle is attributable: its own event, with type, id, client and outcome
    deleted = by_operation["entry.delete"]
    assert {"what": {"reference": "Patient/p1"}} in deleted["entity"]
    assert deleted["agent"][0]["who"]["identifier"]["value"] == "test-client"
    assert deleted["outcome"] == "0" and deleted["action"] == "D"
    assert by_operation["entry.update"]["outcomeDesc"].startswith("HTTP 201")
    assert by_operation["entry.read"]["outcome"] == "4"
    assert "batch" in by_operation


def test_queued_events_are_stored_in_order_with_the_time_they_happened_and_a_refused_one_holds_none_back(
    database, partition
):
    # Given an audit log whose writer runs off the request path
    audit = AuditLog(database)
    try:
        before = datetime.now().astimezone()
        events = [AuditEvent("read", "success", partition=partition, path=f"/n/{n}") for n in range(50)]
        # One event the table refuses (a status no integer column holds) among them
        poison = AuditEvent("read", "success", partition=partition, path="/poison", status=10**12)
        # When they are submitted (no round trip) and the log is flushed
        audit.submit(events[:25])
        audit.submit([poison])
        audit.submit(events[25:])
        assert audit.flush(timeout=10)
        # Then every good event is stored once, in order, stamped when it was submitted
        stored = [r for r in audit.query(partition=partition, limit=1000) if r.event.path.startswith("/n/")]
        assert [r.event.path for r in reversed(stored)] == [e.path for e in events]
        assert all(
            before - timedelta(seconds=1) <= r.recorded_at <= datetime.now().astimezone() for r in stored
        )
        assert not [r for r in audit.query(partition=partition, limit=1000) if r.event.path == "/poison"]
    finally:
        audit.dispose()


def test_an_event_with_a_nul_character_is_stored_with_a_replacement_character(database, partition):
    audit = AuditLog(database)
    try:
        audit.submit([AuditEvent("read", "failure", partition=partition, path="/Patient/a\x00b")])
        assert audit.flush(timeout=10)
        paths = [r.event.path for r in audit.query(partition=partition)]
        assert paths == ["/Patient/a\ufffdb"]
    finally:
        audit.dispose()


def test_an_idle_writer_ends_and_keeps_no_unused_log_alive(database, partition):
    audit = AuditLog(database)
    audit.submit([AuditEvent("read", "success", partition=partition, path="/gone")])
    assert audit.flush(timeout=10)
    time.sleep(1.5)  # the writer ends once idle
    ref = weakref.ref(audit)
    del audit
    gc.collect()
    # Then nothing holds the log (nor its pooled connections) any more
    assert ref() is None
