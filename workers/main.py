"""``bulkhead worker``: the Dramatiq CLI, pointed at Bulkhead's broker and operation modules.

``--lane`` picks the queues of one lane (see ``workers.background``): ``foreground`` (small jobs),
``background`` (large jobs) or ``all`` (the default: every queue of every operation). A queue named with
``--queues`` stands for its lanes too: ``--queues export`` consumes ``export`` and ``export-background``
(``--lane`` narrows that down), so that no large job waits for a pool that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from core.settings import Settings
from workers.broker import BACKGROUND_LANE_SUFFIX, broker_queue, lane_queue
from workers.registry import (
    BUILTIN_OPERATION_MODULES,
    load_operation_modules,
    modules_from_setting,
    registered_processors,
)

LANES = ("all", "foreground", "background")


def lane_queues(lane: str, modules: Iterable[str] = ()) -> list[str]:
    """Return Bulkhead's queues of ``lane`` for every operation (built in, or named in ``modules``)."""
    if lane not in LANES:
        raise ValueError(f"Unknown lane {lane!r}: use one of {', '.join(LANES)}")
    load_operation_modules(modules)
    queues = sorted({p.queue for p in registered_processors()})
    chosen: list[str] = []
    for queue in queues:
        if lane in ("all", "foreground"):
            chosen.append(queue)
        if lane in ("all", "background"):
            chosen.append(lane_queue(queue, background=True))
    return chosen


def queues_in_lane(names: Iterable[str], lane: str) -> list[str]:
    """Return the queues ``names`` (repeated or comma-joined) stand for in ``lane``."""
    chosen: list[str] = []
    for value in names:
        for name in (q.strip() for q in value.split(",")):
            if not name:
                continue
            if name.endswith(BACKGROUND_LANE_SUFFIX):
                chosen.append(name)
                continue
            if lane in ("all", "foreground"):
                chosen.append(name)
            if lane in ("all", "background"):
                chosen.append(lane_queue(name, background=True))
    return list(dict.fromkeys(chosen))


def dramatiq_argv(
    settings: Settings,
    *,
    processes: int | None = None,
    threads: int | None = None,
    queues: Iterable[str] = (),
    modules: Iterable[str] = (),
    lane: str = "all",
) -> list[str]:
    """Return the Dramatiq CLI arguments of a worker: broker module, operation modules and options."""
    operation_modules = dict.fromkeys(
        [*BUILTIN_OPERATION_MODULES, *modules_from_setting(settings.job_modules), *modules]
    )
    if lane not in LANES:
        raise ValueError(f"Unknown lane {lane!r}: use one of {', '.join(LANES)}")
    queues = queues_in_lane(queues, lane)
    if lane != "all" and not queues:
        queues = lane_queues(lane, operation_modules)
    argv = [
        "workers.actors",
        *operation_modules,
        "--processes",
        str(max(1, processes or settings.worker_processes)),
        "--threads",
        str(max(1, threads or settings.worker_threads)),
        "--skip-logging",
        "--worker-shutdown-timeout",
        str(int(max(1.0, settings.job_stale_seconds) * 1000)),
    ]
    chosen = [broker_queue(settings, q) for q in queues]
    if chosen:
        argv += ["--queues", *chosen]
    return argv


def run_worker(
    settings: Settings,
    *,
    processes: int | None = None,
    threads: int | None = None,
    queues: Iterable[str] = (),
    modules: Iterable[str] = (),
    lane: str = "all",
) -> int:
    """Run Dramatiq worker processes until they are stopped; return the exit code."""
    from dramatiq.cli import main, make_argument_parser

    argv = dramatiq_argv(
        settings, processes=processes, threads=threads, queues=queues, modules=modules, lane=lane
    )
    # Worker processes read their settings from the environment: let them know their thread count.
    os.environ["BULKHEAD_WORKER_THREADS"] = argv[argv.index("--threads") + 1]
    code = main(make_argument_parser().parse_args(argv))  # type: ignore[no-untyped-call]
    return int(code or 0)
