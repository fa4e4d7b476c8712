"""Dramatiq's own metrics in a real ``bulkhead orchestrator`` process (not booted by Dramatiq's CLI)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from harness.cluster import JobCluster, job_environ, unique_namespace, wait_for
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.fhir import base
from workers.broker import ORCHESTRATE_ACTOR


@pytest.fixture
def cluster(
    database_url: str, redis_url: str, s3_settings: S3Settings, tmp_path: Path
) -> Iterator[JobCluster]:
    """Return an orchestrator-and-workers environment sharing a Prometheus directory; stop it after."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": database_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            **s3_settings.environ(),
        }
    )
    jobs = JobCluster(env, tmp_path)
    try:
        yield jobs
    finally:
        jobs.stop()


def test_the_orchestrator_counts_its_messages_without_logging_middleware_failures(
    cluster: JobCluster, database: Database, object_store: S3ObjectStore, partition: str
):
    # Given a running orchestrator and worker sharing a metrics directory, and a reindex kicked off
    orchestrator = cluster.orchestrator()
    cluster.worker()
    app = create_app(cluster.settings, database=database)
    app.extensions["bulkhead.objectstore"] = object_store
    client = app.test_client()
    kicked = client.post(f"{base(partition)}/$reindex", headers={"Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.get_json()
    status = "/" + str(kicked.headers["Content-Location"]).split("/", 3)[3]
    # When the job completes
    wait_for(lambda: client.get(status).status_code == 200, timeout=60, interval=0.3, what=status)
    cluster.stop()
    # Then the orchestrator's log has no middleware failure, and its orchestrate messages were counted
    log = orchestrator.log_tail(400)
    assert "Unexpected failure" not in log, log
    scrape = (
        "from api import create_app; from core.settings import Settings; "
        "print(create_app(Settings.from_env()).test_client().get('/metrics').get_data(as_text=True))"
    )
    scraped = subprocess.run(
        [sys.executable, "-c", scrape], env=cluster.env, timeout=60, capture_output=True, text=True
    )
    assert scraped.returncode == 0, scraped.stderr
    out = scraped.stdout
    counted = [
        sample.value
        for family in text_string_to_metric_families(out)
        for sample in family.samples
        if sample.name == "dramatiq_messages_total" and sample.labels.get("actor_name") == ORCHESTRATE_ACTOR
    ]
    assert counted and counted[0] >= 1


def test_the_orchestrator_stops_on_a_burst_of_signals_without_hanging(cluster: JobCluster) -> None:
    # Given a running orchestrator that has started consuming
    orchestrator = cluster.orchestrator()
    wait_for(
        lambda: "orchestrator running" in orchestrator.log_tail(),
        timeout=60,
        interval=0.2,
        what="orchestrator start",
    )
    assert orchestrator.popen is not None
    pid = orchestrator.popen.pid
    # When it receives a stop signal about every millisecond for a second (each handled inside the others)
    burst = (
        "import os, signal, time\n"
        f"for _ in range(1000):\n    os.kill({pid}, signal.SIGHUP)\n    time.sleep(0.001)\n"
    )
    subprocess.run([sys.executable, "-c", burst], check=False, timeout=30)
    # Then it exits by itself, cleanly, within the time a worker stop takes
    try:
        code = orchestrator.popen.wait(timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the orchestrator hung after stop signals:\n" + orchestrator.log_tail()) from exc
    assert code == 0, orchestrator.log_tail()
    assert "orchestrator stopped" in orchestrator.log_tail()
