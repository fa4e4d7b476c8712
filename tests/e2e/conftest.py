"""Fixtures of the end-to-end tests: real orchestrator and worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import PUBLIC_BASE, JobCluster, job_environ, unique_namespace
from harness.services import S3Settings
from tests.conftest import IMPORT_SECRET_KEY
from tests.support.http_files import FileServer


@pytest.fixture
def cluster(
    database_url: str, redis_url: str, s3_settings: S3Settings, files: FileServer, tmp_path: Path
) -> Iterator[JobCluster]:
    """Return an orchestrator-and-workers environment (processes started by each test); stop them after."""
    env = job_environ(
        {
            "BULKHEAD_DATABASE_URL": database_url,
            "BULKHEAD_REDIS_URL": redis_url,
            "BULKHEAD_QUEUE_NAMESPACE": unique_namespace(),
            "BULKHEAD_PUBLIC_BASE_URL": PUBLIC_BASE,
            "BULKHEAD_IMPORT_ALLOWED_URLS": files.base_url + "/",
            "BULKHEAD_IMPORT_SECRET_KEY": IMPORT_SECRET_KEY,
            **s3_settings.environ(),
        }
    )
    jobs = JobCluster(env, tmp_path)
    try:
        yield jobs
    finally:
        jobs.stop()
