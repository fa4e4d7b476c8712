"""Local commands find the running ``bulkhead serve`` through its runtime file, and never break it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from cli.serve.checks import ServeError
from cli.serve.runtime_file import RUNTIME_FILE, running_runtime, with_running_serve
from cli.serve.supervisor import Supervisor
from core.settings import Settings

S3 = {
    "BULKHEAD_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    "BULKHEAD_S3_ACCESS_KEY": "key",
    "BULKHEAD_S3_SECRET_KEY": "secret",
    "BULKHEAD_S3_BUCKET": "served-bucket",
}


def _runtime(data_dir: Path, pid: int) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / RUNTIME_FILE
    path.write_text(json.dumps({"pid": pid, "api_url": "http://127.0.0.1:8080", **S3}))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_local_command_takes_the_object_store_of_the_serve_running_in_its_data_directory(
    tmp_path: Path,
) -> None:
    # Given a runtime file written by a live process
    _runtime(tmp_path, os.getpid())
    # When settings without an object store are completed from it
    settings = with_running_serve(Settings(data_dir=tmp_path))
    # Then they name the served S3 endpoint, keys and bucket
    assert (settings.s3_endpoint_url, settings.s3_access_key, settings.s3_bucket) == (
        "http://127.0.0.1:9",
        "key",
        "served-bucket",
    )


def test_a_runtime_file_left_by_a_dead_serve_or_a_configured_endpoint_changes_nothing(tmp_path: Path) -> None:
    # Given a runtime file whose process is gone
    _runtime(tmp_path, _dead_pid())
    # When settings are completed from it
    # Then nothing is taken from the stale file, and a configured endpoint always wins
    assert running_runtime(tmp_path) is None
    assert with_running_serve(Settings(data_dir=tmp_path)).s3_endpoint_url is None
    _runtime(tmp_path, os.getpid())
    configured = Settings(data_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:7")
    assert with_running_serve(configured).s3_endpoint_url == "http://127.0.0.1:7"


def test_a_second_serve_refused_at_the_lock_leaves_the_running_serves_runtime_file(tmp_path: Path) -> None:
    # Given a data directory whose lock a running serve holds, with its runtime file
    path = _runtime(tmp_path, os.getpid())
    with (tmp_path / "serve.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # When a second serve starts there, is refused, and cleans up
        second = Supervisor(Settings(data_dir=tmp_path, port=18080))
        with pytest.raises(ServeError, match="already using"):
            second.start()
        second.stop()
    # Then the running serve's runtime file is still there, unchanged
    assert json.loads(path.read_text())["BULKHEAD_S3_BUCKET"] == "served-bucket"


def test_importing_a_local_file_without_any_object_store_is_a_clear_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no object store configured and no serve running in the data directory
    for name in list(os.environ):
        if name.startswith("BULKHEAD_S3_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BULKHEAD_DATA_DIR", str(tmp_path / "data"))
    local = tmp_path / "patients.ndjson"
    local.write_text('{"resourceType":"Patient","id":"a"}\n')
    # When `bulkhead import` is given the local file
    result = CliRunner().invoke(main, ["import", "--base", "http://127.0.0.1:9/partitions/p1", str(local)])
    # Then it exits 1 with a message that says what to do
    assert result.exit_code == 1
    assert "is a local file" in result.output and "BULKHEAD_S3_ENDPOINT_URL" in result.output
    assert "Traceback" not in result.output
