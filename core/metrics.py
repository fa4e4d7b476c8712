"""Prometheus metrics shared by every process (API, orchestrator, workers), and helpers to count.

The objects live here, free of Flask, so that workers can count what they do;
``api/security/metrics.py`` serves them. Under gunicorn or several worker processes set
``PROMETHEUS_MULTIPROC_DIR`` (``bulkhead serve`` does) so that every process's counts are summed at scrape
time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "bulkhead_http_requests_total",
    "HTTP requests answered, by partition, route, method and status",
    ["partition", "route", "method", "status"],
)
LATENCY = Histogram(
    "bulkhead_http_request_duration_seconds",
    "Time to answer an HTTP request, by partition, route and method",
    ["partition", "route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOB_TRANSITIONS = Counter(
    "bulkhead_job_transitions_total",
    "Job state changes, by job kind, new status and partition",
    ["kind", "status", "partition"],
)
RESOURCES = Counter(
    "bulkhead_resources_processed_total",
    "Resources processed by bulk operations (exported, imported, reindexed, updated, deleted) by partition",
    ["operation", "partition"],
)


def count_resources(operation: str, partition: str, n: int) -> None:
    """Add ``n`` resources processed by ``operation`` (export, import, reindex, ...) in ``partition``."""
    if n > 0:
        RESOURCES.labels(operation=operation, partition=partition).inc(n)


def count_job_transition(kind: str, status: str, partition: str) -> None:
    """Count one job of ``kind`` in ``partition`` reaching ``status``."""
    JOB_TRANSITIONS.labels(kind=kind, status=status, partition=partition).inc()


def count_job_result(kind: str, partition: str, result: object) -> None:
    """Count the resources a completed processing job reports (``count``, ``reindexed`` or ``counts``)."""
    if not isinstance(result, dict):
        return
    n = 0
    if isinstance(result.get("count"), int):
        n = result["count"]
    elif isinstance(result.get("reindexed"), int):
        n = result["reindexed"]
    elif isinstance(result.get("counts"), dict):
        n = sum(v for v in result["counts"].values() if isinstance(v, int))
    count_resources(kind, partition, n)


def observe_request(partition: str, route: str, method: str, status: int, seconds: float) -> None:
    """Record one answered HTTP request."""
    REQUESTS.labels(partition=partition, route=route, method=method, status=str(status)).inc()
    LATENCY.labels(partition=partition, route=route, method=method).observe(seconds)


__all__ = [
    "JOB_TRANSITIONS",
    "LATENCY",
    "REQUESTS",
    "RESOURCES",
    "count_job_result",
    "count_job_transition",
    "count_resources",
]
