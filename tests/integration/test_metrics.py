"""``/metrics``: requests by partition and route, job and resource counters, for Prometheus."""

from __future__ import annotations

import secrets

from prometheus_client.parser import text_string_to_metric_families

from core.metrics import count_resources
from harness.tokens import bearer
from tests.support.fhir import base


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((sample.labels, sample.value))
    return out


def test_requests_are_counted_and_timed_by_partition_and_route(client, partition):
    # Given a partition that exists (a resource was written) and two reads in it
    client.put(
        f"{base(partition)}/Patient/p1",
        json={"resourceType": "Patient", "id": "p1"},
        headers={"Content-Type": "application/fhir+json"},
    )
    for _ in range(2):
        client.get(f"{base(partition)}/Patient/nobody")
    # When Prometheus scrapes
    response = client.get("/metrics")
    # Then the requests appear under the partition and the route template, with their latency
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    counts = _samples(text, "bulkhead_http_requests_total")
    mine = [v for labels, v in counts if labels["partition"] == partition and labels["method"] == "GET"]
    assert mine == [2.0]
    routes = {
        labels["route"]
        for labels, _ in counts
        if labels["partition"] == partition and labels["method"] == "GET"
    }
    assert routes == {"/<rtype:rtype>/<fhirid:rid>"}
    latency = _samples(text, "bulkhead_http_request_duration_seconds_count")
    assert [v for labels, v in latency if labels["partition"] == partition and labels["method"] == "GET"] == [
        2.0
    ]


def test_requests_to_partitions_that_do_not_exist_share_one_label_value(client):
    # Given three unauthenticated reads in partitions nobody ever wrote to
    names = [f"ghost-{secrets.token_hex(5)}" for _ in range(3)]
    for name in names:
        assert client.get(f"{base(name)}/Patient/x").status_code == 404
    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)
    # Then no series names any of them; they are counted under one shared value
    labels = {s["partition"] for s, _ in _samples(text, "bulkhead_http_requests_total")}
    assert not labels & set(names)
    assert "unknown" in labels


def test_resources_processed_by_workers_appear_per_partition(client, partition):
    # Given a worker that exported 42 resources of the partition
    count_resources("export", partition, 42)
    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)
    # Then the counter shows them
    samples = _samples(text, "bulkhead_resources_processed_total")
    assert ({"operation": "export", "partition": partition}, 42.0) in samples


def test_job_gauges_are_always_exposed(client):
    # Given the server
    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)
    # Then the job gauges are declared (with values once jobs exist)
    assert "# TYPE bulkhead_jobs gauge" in text
    assert "# TYPE bulkhead_queue_oldest_age_seconds gauge" in text


def test_unmatched_paths_do_not_create_new_label_values(client):
    # Given requests to many random paths
    for i in range(3):
        client.get(f"/no/such/path/{i}")
    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)
    # Then they share one label set
    routes = {labels["route"] for labels, _ in _samples(text, "bulkhead_http_requests_total")}
    assert not any(r.startswith("/no/") for r in routes)
    assert "unmatched" in routes


def test_metrics_need_an_administrator_when_authentication_is_on(secure_client, auth_keys, partition):
    # Given a tenant token and an administrator token
    # When each scrapes
    tenant = secure_client.get("/metrics", headers=bearer(auth_keys.hs256([partition])))
    admin = secure_client.get("/metrics", headers=bearer(auth_keys.admin()))
    # Then only the administrator gets the metrics
    assert tenant.status_code == 403
    assert admin.status_code == 200


def test_jobs_by_kind_status_and_partition_and_the_oldest_queued_age_are_exposed(
    client, database_url, partition
):
    # Given a queued job created a minute ago and a running one in the partition
    import secrets

    import psycopg

    from storage.db import libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        # In a transaction of the partition, as the job code writes (the job table is under RLS)
        conn.execute("SELECT set_config('bulkhead.partition', %s, true)", (partition,))
        for status, age in (("queued", "60 seconds"), ("running", "0 seconds")):
            job_id = secrets.token_hex(8)
            conn.execute(
                "INSERT INTO job (id, group_id, kind, partition, definition, definition_hash, status, "
                "max_attempts, created_at) VALUES (%s, %s, 'export', %s, '{}', repeat('0', 64), %s, 3, "
                "now() - %s::interval)",
                (job_id, job_id, partition, status, age),
            )
    # When Prometheus scrapes
    text = client.get("/metrics").get_data(as_text=True)
    # Then the partition's jobs are counted by status, and the queue shows its oldest age
    jobs = {
        (labels["status"]): v
        for labels, v in _samples(text, "bulkhead_jobs")
        if labels["partition"] == partition
    }
    assert jobs == {"queued": 1.0, "running": 1.0}
    oldest = [
        v for labels, v in _samples(text, "bulkhead_queue_oldest_age_seconds") if labels["kind"] == "export"
    ]
    assert oldest and oldest[0] >= 59
    depth = [v for labels, v in _samples(text, "bulkhead_queue_depth") if labels["kind"] == "export"]
    assert depth and depth[0] >= 1


def test_under_several_processes_metrics_of_every_process_are_summed(tmp_path, database_url, partition):
    # Given two worker processes that each exported resources of the partition, sharing a metrics directory
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "BULKHEAD_DATABASE_URL": database_url}
    count = f"from core.metrics import count_resources; count_resources('export', {partition!r}, 5)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    # When an API process using the same directory is scraped
    scrape = (
        "from api import create_app; from core.settings import Settings; "
        "app = create_app(Settings.from_env()); "
        "print(app.test_client().get('/metrics').get_data(as_text=True))"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    # Then the counter is the sum over the processes
    samples = _samples(out, "bulkhead_resources_processed_total")
    assert ({"operation": "export", "partition": partition}, 10.0) in samples


def test_completed_processing_jobs_count_the_resources_they_report(client, partition):
    # Given processing jobs of each kind completing with their own result shapes
    from core.metrics import count_job_result

    count_job_result("export", partition, {"output": [], "count": 7})
    count_job_result("import", partition, {"counts": {"Patient": 3, "Observation": 4}, "lines": 9})
    count_job_result("reindex", partition, {"planned": 5, "reindexed": 5})
    count_job_result("bulk-update", partition, {"counts": {"Patient": 2}, "matched": 2})
    # When Prometheus scrapes
    samples = _samples(client.get("/metrics").get_data(as_text=True), "bulkhead_resources_processed_total")
    # Then each operation's resources are counted under the partition
    mine = {labels["operation"]: v for labels, v in samples if labels["partition"] == partition}
    assert mine == {"export": 7.0, "import": 7.0, "reindex": 5.0, "bulk-update": 2.0}


_DRAMATIQ_WORKER = """
import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.metrics import prometheus_middleware

broker = StubBroker(middleware=prometheus_middleware())
broker.emit_after("process_boot")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="metrics-test")
def hello() -> None:
    pass


for _ in range(3):
    hello.send()
worker = dramatiq.Worker(broker, worker_timeout=50)
worker.start()
broker.join("metrics-test")
worker.join()
worker.stop()
"""


def test_dramatiqs_own_metrics_from_worker_processes_are_served_by_the_api(tmp_path, database_url):
    # Given a Dramatiq worker process with Bulkhead's middleware that handled three messages
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "BULKHEAD_DATABASE_URL": database_url}
    env.pop("dramatiq_prom_port", None)
    subprocess.run([sys.executable, "-c", _DRAMATIQ_WORKER], env=env, check=True, timeout=120)
    # When an API process sharing the metrics directory is scraped
    scrape = (
        "from api import create_app; from core.settings import Settings; "
        "app = create_app(Settings.from_env()); "
        "print(app.test_client().get('/metrics').get_data(as_text=True))"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, timeout=60, capture_output=True, text=True
    ).stdout
    # Then Dramatiq's message counters are there
    samples = _samples(out, "dramatiq_messages_total")
    assert ({"queue_name": "metrics-test", "actor_name": "hello"}, 3.0) in samples
