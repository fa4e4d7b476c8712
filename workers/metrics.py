"""Dramatiq's own Prometheus metrics (messages, errors, retries, durations, in progress) for the workers.

They are written to the multiprocess directory every Bulkhead process shares (``PROMETHEUS_MULTIPROC_DIR``,
which ``bulkhead serve`` sets), so the API's ``GET /metrics`` serves them next to its own. Dramatiq's separate
exposition server (a forked HTTP server) runs only when ``dramatiq_prom_port`` is set, bound to
``dramatiq_prom_host`` (default 127.0.0.1): for workers on machines without an API process.
"""

from __future__ import annotations

import os
from typing import Any

from dramatiq import Broker
from dramatiq.middleware import Middleware


def prometheus_middleware() -> list[Middleware]:
    """Return Dramatiq's Prometheus middleware writing to the shared directory, or nothing when unset."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return []
    import dramatiq.middleware.prometheus as dramatiq_prometheus

    dramatiq_prometheus.DB_PATH = directory
    dramatiq_prometheus.HTTP_HOST = os.environ.get("dramatiq_prom_host", "127.0.0.1")  # noqa: SIM112 (Dramatiq's name)

    class SharedPrometheus(dramatiq_prometheus.Prometheus):
        """Dramatiq's Prometheus middleware without its exposition server unless a port is configured."""

        @property
        def forks(self) -> list[Any]:
            """Return the exposition server only when ``dramatiq_prom_port`` asks for one."""
            return list(super().forks) if os.environ.get("dramatiq_prom_port") else []  # noqa: SIM112

    return [SharedPrometheus()]


def boot_metrics(broker: Broker) -> None:
    """Create the Prometheus middleware's metrics in a process the Dramatiq CLI did not boot.

    Dramatiq's middleware makes its metrics in ``after_process_boot``, which only its CLI's worker processes
    emit; in ``bulkhead orchestrator`` every message otherwise logged a CRITICAL AttributeError.
    """
    from dramatiq.middleware.prometheus import Prometheus

    for middleware in broker.middleware:
        if isinstance(middleware, Prometheus):
            middleware.after_process_boot(broker)  # type: ignore[no-untyped-call]
