"""``bulkhead serve`` as a user runs it: a real subprocess, everything embedded, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis
import requests

from core.settings import Settings
from harness.services import S3Settings, ServeProcess, serve_data_dir, serve_process
from storage.objectstore import S3ObjectStore, object_store_from_settings

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Yield a data directory that does not exist yet, in a temporary directory of its own."""
    with serve_data_dir() as path:
        yield path


def _gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """Return the processes still alive after waiting up to ``timeout`` s (zombies count as gone)."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _store(runtime: dict[str, str]) -> S3ObjectStore:
    """Return the object store a running server recorded in its runtime file."""
    settings = Settings(
        s3_endpoint_url=runtime["BULKHEAD_S3_ENDPOINT_URL"],
        s3_access_key=runtime["BULKHEAD_S3_ACCESS_KEY"],
        s3_secret_key=runtime["BULKHEAD_S3_SECRET_KEY"],
        s3_bucket=runtime["BULKHEAD_S3_BUCKET"],
    )
    return object_store_from_settings(settings)


def test_serve_runs_everything_embedded_keeps_data_across_a_restart_and_leaves_no_process_behind(
    data_dir: Path, partition: str
) -> None:
    # Given a fresh data directory and no service URLs at all
    serve = ServeProcess(data_dir)
    try:
        # When bulkhead serve starts
        serve.wait_until_answering(timeout=30)
        serve.wait_until_started()
        # Then it writes and reads a resource in a partition
        put = requests.put(
            f"{serve.base_url}/partitions/{partition}/Patient/p1",
            json={"resourceType": "Patient", "id": "p1", "gender": "female"},
            headers=FHIR_JSON,
            timeout=10,
        )
        assert put.status_code == 201, put.text
        # And its processes hold the administrative connection, which lists every partition
        runtime = serve.runtime()
        assert "bulkhead_admin" in runtime["BULKHEAD_DATABASE_ADMIN_URL"]
        listed = requests.get(f"{serve.base_url}/partitions", timeout=10)
        assert listed.status_code == 200 and partition in listed.text, listed.text
        # And its Redis and S3 hold what is written to them
        redis_url = urlsplit(runtime["BULKHEAD_REDIS_URL"])
        assert (redis_url.scheme, redis_url.hostname) == ("redis", "127.0.0.1")
        assert redis_url.password == (data_dir / "secrets" / "redis").read_text().strip()
        redis.Redis.from_url(runtime["BULKHEAD_REDIS_URL"]).set(f"{partition}:kept", b"yes")
        store = _store(runtime)
        key = store.ndjson_key(partition, "job1", "Patient", 1)
        store.put_bytes(key, b'{"resourceType":"Patient","id":"p1"}\n')
        processes = serve.processes()
        names = " ".join(" ".join(p.cmdline()) for p in processes)
        for part in (
            "gunicorn",
            "redis-server",
            "weed",
            "postgres",
            "bulkhead orchestrator",
            "bulkhead worker",
        ):
            assert part in names
        # When it gets SIGTERM
        code = serve.stop()
    finally:
        serve.stop()
    # Then it exits cleanly, and every process it started is gone, with its runtime file
    assert code == 0, serve.log()[-3000:]
    assert _gone(processes) == []
    assert serve.leftovers() == []
    assert not (data_dir / "serve.json").exists()

    # When it starts again on the same data directory
    with serve_process(data_dir) as again:
        # Then the resource, the Redis key and the S3 object are still there
        read = requests.get(f"{again.base_url}/partitions/{partition}/Patient/p1", timeout=10)
        assert read.status_code == 200
        assert read.json()["gender"] == "female"
        runtime = again.runtime()
        assert redis.Redis.from_url(runtime["BULKHEAD_REDIS_URL"]).get(f"{partition}:kept") == b"yes"
        store = _store(runtime)
        assert b"".join(store.get_stream(key)) == b'{"resourceType":"Patient","id":"p1"}\n'
        processes = again.processes()
    assert _gone(processes) == []
    assert again.leftovers() == []


def test_a_stop_during_start_up_leaves_no_process_behind(data_dir: Path) -> None:
    # Given a server that has started its embedded servers but not yet its API
    serve = ServeProcess(data_dir)
    try:
        deadline = time.monotonic() + 60
        while "embedded PostgreSQL listening" not in serve.log():
            assert serve.process.running() and time.monotonic() < deadline, serve.log()[-3000:]
            time.sleep(0.05)
        # When it gets SIGTERM
        code = serve.stop()
    finally:
        serve.stop()
    # Then it exits cleanly, having stopped whatever it had started
    assert code == 0, serve.log()[-3000:]
    assert _gone(serve.leftovers()) == []
    assert "stopping" in serve.log()


@pytest.fixture(scope="module")
def served() -> Iterator[ServeProcess]:
    """Yield one fully embedded ``bulkhead serve`` shared by the tests that only look at it."""
    with serve_data_dir() as data_dir, serve_process(data_dir) as serve:
        yield serve


def test_the_start_up_summary_says_where_each_service_runs_and_that_authentication_is_off(
    served: ServeProcess,
) -> None:
    # Given a running server / When its output is read
    out = served.log()
    # Then one summary names every service and warns that anyone may read and write
    assert "Bulkhead is running" in out
    for name in ("PostgreSQL", "Redis", "S3", "API"):
        assert f"  {name} " in out
    assert f"http://127.0.0.1:{served.port}" in out
    assert "authentication is OFF" in out
    # And it says where the embedded servers' passwords are, but prints none of them nor the S3 secret key
    assert f"passwords and keys are in {served.data_dir / 'secrets'}" in out
    kept = [f.read_text().strip() for f in (served.data_dir / "secrets").iterdir()]
    assert len(kept) == 5  # PostgreSQL superuser, application and administrative roles, Redis, import key
    for secret in [*kept, served.runtime()["BULKHEAD_S3_SECRET_KEY"]]:
        assert secret not in out


def test_every_embedded_server_listens_on_loopback_only(served: ServeProcess) -> None:
    # Given the processes of a running server
    listening = []
    for process in served.processes():
        try:
            conns = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    # When their listening sockets are listed / Then every one is bound to 127.0.0.1
    assert len(listening) >= 5
    assert {addr.ip for addr in listening} == {"127.0.0.1"}


def test_a_second_serve_on_the_same_data_directory_refuses_to_start(served: ServeProcess) -> None:
    # Given a server running on a data directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    env |= {"BULKHEAD_DATA_DIR": str(served.data_dir), "BULKHEAD_PORT": str(served.port + 1)}
    # When a second one starts on the same directory
    result = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it refuses, says why, and the first one still answers
    assert result.returncode != 0
    assert "already using" in result.stderr
    assert requests.get(f"{served.base_url}/metadata", timeout=10).status_code == 200


def _api_master(served: ServeProcess) -> psutil.Process | None:
    """Return the running gunicorn master among the server's children, if there is one."""
    for p in psutil.Process(served.process.pid).children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any("gunicorn" in part for part in p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def test_an_api_server_that_dies_is_started_again(served: ServeProcess) -> None:
    # Given the running API server (gunicorn's master process)
    master = _api_master(served)
    assert master is not None
    # When it is killed
    master.send_signal(signal.SIGKILL)
    # Then a new one answers within a few seconds
    deadline = time.monotonic() + 30
    while True:
        new_master = _api_master(served)
        if new_master is not None and new_master.pid != master.pid:
            try:
                if requests.get(f"{served.base_url}/metadata", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
        assert time.monotonic() < deadline, served.log()[-3000:]
        time.sleep(0.2)
    assert "api exited" in served.log()


def test_configured_redis_and_s3_are_used_instead_of_embedded_ones(
    data_dir: Path, redis_url: str, s3_settings: S3Settings, partition: str
) -> None:
    # Given Redis and S3 URLs in the environment, but no database URL
    environ = {
        "BULKHEAD_REDIS_URL": redis_url,
        "BULKHEAD_QUEUE_NAMESPACE": f"serve-{partition}",
        **s3_settings.environ(),
    }
    # When bulkhead serve starts
    with serve_process(data_dir, environ=environ) as serve:
        runtime = serve.runtime()
        put = requests.put(
            f"{serve.base_url}/partitions/{partition}/Patient/p1",
            json={"resourceType": "Patient", "id": "p1"},
            headers=FHIR_JSON,
            timeout=10,
        )
        names = " ".join(" ".join(p.cmdline()) for p in serve.processes())
    # Then it used them, started only PostgreSQL itself, and still served requests
    assert put.status_code == 201
    assert runtime["BULKHEAD_REDIS_URL"] == redis_url
    assert runtime["BULKHEAD_S3_ENDPOINT_URL"] == s3_settings.s3_endpoint_url
    assert runtime["BULKHEAD_S3_BUCKET"] == s3_settings.s3_bucket
    assert "redis-server" not in names and "weed" not in names
    assert "postgres" in names
    # (metrics/ holds the processes' Prometheus counters, secrets/ the embedded PostgreSQL's passwords)
    assert sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p.name != "metrics") == [
        "postgres",
        "secrets",
    ]
    assert sorted(p.name for p in (data_dir / "secrets").iterdir()) == [
        "import-key",
        "postgres",
        "postgres-bulkhead_admin",
        "postgres-bulkhead_app",
    ]
