"""``GET /metrics`` for Prometheus, and the request hooks that count and time every request.

Routes are labelled by their URL rule below the partition base (``/<rtype>/<rid>``), never by the raw path,
so label cardinality stays bounded by partitions times routes. Job gauges are read from the job table at
scrape time. With ``PROMETHEUS_MULTIPROC_DIR`` set, counts of every process sharing the directory are summed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from api.security.auth import request_partition
from core.metrics import observe_request
from storage import Database
from storage.job_metrics import job_summary

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
_PREFIX = "/partitions/<partition>"


class JobCollector(Collector):
    """Job gauges from the job table, computed when Prometheus scrapes."""

    def __init__(self, database: Database):
        self.database = database

    def collect(self) -> Iterator[Metric]:
        """Yield jobs by kind, status and partition; queue depth and oldest queued age by kind."""
        try:
            summary = job_summary(self.database)
        except Exception:
            log.exception("could not read the job table for metrics")
            return
        jobs = GaugeMetricFamily(
            "bulkhead_jobs",
            "Jobs in the job table by kind, status and partition",
            labels=["kind", "status", "partition"],
        )
        depth = GaugeMetricFamily("bulkhead_queue_depth", "Jobs waiting to run, by kind", labels=["kind"])
        oldest = GaugeMetricFamily(
            "bulkhead_queue_oldest_age_seconds",
            "Age of the oldest job waiting to run, by kind",
            labels=["kind"],
        )
        if summary is not None:
            for kind, status, partition, n in summary.counts:
                jobs.add_metric([kind, status, partition], n)
            for kind, n, age in summary.queued:
                depth.add_metric([kind], n)
                oldest.add_metric([kind], age)
        yield jobs
        yield depth
        yield oldest


UNKNOWN_PARTITION = "unknown"


class PartitionLabels:
    """The partition label of a request: the partition's name when it exists, one shared value otherwise.

    Requests to names nobody ever wrote to (anyone can send them) would otherwise mint a new series each.
    Whether a partition exists is cached: for minutes once known, for seconds while unknown.
    """

    def __init__(self, database: Database, *, known_ttl: float = 300.0, unknown_ttl: float = 10.0):
        self.database = database
        self.known_ttl = known_ttl
        self.unknown_ttl = unknown_ttl
        self._seen: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def label(self, partition: str) -> str:
        """Return the label for ``partition``."""
        now = time.monotonic()
        with self._lock:
            found = self._seen.get(partition)
        if found is None or found[1] < now:
            with self.database.unit_of_work(partition) as uow:
                exists = uow.resources.partition_id() is not None
            with self._lock:
                if len(self._seen) > 10_000:
                    self._seen.clear()
                self._seen[partition] = (exists, now + (self.known_ttl if exists else self.unknown_ttl))
            found = (exists, 0.0)
        return partition if found[0] else UNKNOWN_PARTITION


def _route() -> str:
    rule = request.url_rule
    if rule is None:
        return "unmatched"
    path = rule.rule
    return path[len(_PREFIX) :] or "/" if path.startswith(_PREFIX) else path


def _start() -> None:
    g.bulkhead_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.get("bulkhead_started")
    if started is not None:
        partition = request_partition()
        if request.url_rule is None or partition is None:
            label = "-"  # system endpoints, and unmatched paths, which never mint new label values
        else:
            labels: PartitionLabels = current_app.extensions["bulkhead.partition_labels"]
            try:
                label = labels.label(partition)
            except Exception:
                log.exception("could not tell whether partition %s exists", partition)
                label = UNKNOWN_PARTITION
        observe_request(label, _route(), request.method, response.status_code, time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Return every metric in the Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    jobs: CollectorRegistry = current_app.extensions["bulkhead.job_registry"]
    return Response(body + generate_latest(jobs), content_type=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask, database: Database) -> None:
    """Register ``/metrics`` and the request timing hooks."""
    jobs = CollectorRegistry(auto_describe=False)
    jobs.register(JobCollector(database))
    app.extensions["bulkhead.job_registry"] = jobs
    app.extensions["bulkhead.partition_labels"] = PartitionLabels(database)
    app.register_blueprint(bp)
    app.before_request(_start)
    app.after_request(_finish)
