"""The orchestrator process (``bulkhead orchestrator``): the ``orchestrate`` actor's consumer and the sweeper.

It consumes only the orchestrator queue, with ``orchestrator_threads`` threads, and sweeps every
``job_sweep_seconds``. Several orchestrators may run at once: every step is a conditional update, releases
are serialised by a database lock, and only one sweeper sweeps at a time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType

import dramatiq

from core.settings import Settings
from core.stopping import StopFlag
from orchestrator.registry import load_planner_modules
from orchestrator.sweeper import Sweeper
from workers.broker import ORCHESTRATOR_QUEUE, broker_description, broker_queue
from workers.metrics import boot_metrics
from workers.registry import load_operation_modules, modules_from_setting
from workers.resources import worker_resources

log = logging.getLogger(__name__)


def run_orchestrator(
    settings: Settings,
    *,
    threads: int | None = None,
    modules: Iterable[str] = (),
    stop: threading.Event | None = None,
) -> None:
    """Consume orchestrate messages and sweep until SIGTERM or SIGINT (or until ``stop`` is set).

    ``settings`` must be the environment's: the broker is built from it (``workers.actors``).
    """
    if threads:
        os.environ["BULKHEAD_ORCHESTRATOR_THREADS"] = str(threads)  # sizes the connection pool
    import orchestrator.actors  # noqa: F401 - declares the orchestrate actor
    from workers.actors import broker

    extra = [*modules_from_setting(settings.job_modules), *modules]
    load_operation_modules(extra)
    load_planner_modules(extra)
    stop = stop or threading.Event()
    # A signal handler must not call Event.set (it takes a lock the interrupted main thread may hold inside
    # Event.wait): it raises a lock-free flag, and the loop below watches both.
    signalled = StopFlag()
    if threading.current_thread() is threading.main_thread():

        def _stop(signum: int, _frame: FrameType | None) -> None:
            signalled.set()

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _stop)
    boot_metrics(broker)
    worker = dramatiq.Worker(
        broker,
        queues={broker_queue(settings, ORCHESTRATOR_QUEUE)},
        worker_threads=max(1, threads or settings.orchestrator_threads),
        worker_timeout=200,  # ms an idle consumer waits between polls: orchestrate messages are latency-bound
    )
    sweeper = Sweeper(worker_resources())
    worker.start()
    sweeper.start()
    log.info(
        "orchestrator running: %s threads on queue %r of %s; sweeping every %.1f s",
        worker.worker_threads,
        ORCHESTRATOR_QUEUE,
        broker_description(settings),
        sweeper.interval,
    )
    try:
        while not (signalled.wait(0.5) or stop.is_set()):
            pass
        log.info("stopping (%s)", "signal" if signalled.is_set() else "stop requested")
    finally:
        if threading.current_thread() is threading.main_thread():
            # Stopping already: later signals change nothing (and must not kill the process mid-stop).
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_IGN)
        sweeper.stop()
        worker.stop(timeout=int(settings.job_stale_seconds * 1000))
        broker.close()
        log.info("orchestrator stopped")
