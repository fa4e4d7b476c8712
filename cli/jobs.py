"""``bulkhead worker``, ``bulkhead orchestrator`` and ``bulkhead sweep``: the job machinery's processes.

Each reads its settings from the environment (``BULKHEAD_DATABASE_URL``, ``BULKHEAD_REDIS_URL`` or
``BULKHEAD_BROKER_URL``, ``BULKHEAD_QUEUE_NAMESPACE``, ``BULKHEAD_S3_*`` ...), as ``bulkhead serve`` passes
them to its children.
"""

from __future__ import annotations

import sys

import click

from core.settings import Settings


def _settings() -> Settings:
    settings = Settings.from_env()
    if not settings.database_url:
        raise click.ClickException("BULKHEAD_DATABASE_URL is not set")
    if not (settings.redis_url or settings.broker_url):
        raise click.ClickException("BULKHEAD_REDIS_URL (or BULKHEAD_BROKER_URL) is not set")
    return settings


@click.command("worker")
@click.option(
    "--processes", "-p", type=int, default=None, help="Worker processes (BULKHEAD_WORKER_PROCESSES)."
)
@click.option(
    "--threads", "-t", type=int, default=None, help="Threads per process (BULKHEAD_WORKER_THREADS)."
)
@click.option(
    "--queues",
    "-Q",
    multiple=True,
    help="Queues to consume, each in both lanes unless --lane says (repeat or comma-join; default: all).",
)
@click.option(
    "--lane",
    type=click.Choice(["all", "foreground", "background"]),
    default="all",
    show_default=True,
    help="Consume the queues of small jobs (foreground), of large ones (background), or both.",
)
@click.option("--module", "modules", multiple=True, help="Extra operation module to load (repeat).")
def worker_command(
    processes: int | None,
    threads: int | None,
    queues: tuple[str, ...],
    lane: str,
    modules: tuple[str, ...],
) -> None:
    """Run Dramatiq worker processes that take processing jobs from the queues."""
    settings = _settings()
    from core.logs import configure_logging
    from workers.main import run_worker

    configure_logging(settings)
    sys.exit(
        run_worker(settings, processes=processes, threads=threads, queues=queues, modules=modules, lane=lane)
    )


@click.command("orchestrator")
@click.option(
    "--threads", type=int, default=None, help="Orchestrate threads (BULKHEAD_ORCHESTRATOR_THREADS)."
)
@click.option("--module", "modules", multiple=True, help="Extra operation module to load (repeat).")
def orchestrator_command(threads: int | None, modules: tuple[str, ...]) -> None:
    """Plan jobs, release their work to the workers fairly, finish them, and sweep what went stale."""
    settings = _settings()
    from core.logs import configure_logging
    from orchestrator.process import run_orchestrator

    configure_logging(settings)
    run_orchestrator(settings, threads=threads, modules=modules)


@click.command("sweep")
def sweep_command() -> None:
    """Run one round of the job sweeper now and print what it did."""
    settings = _settings()
    from core.logs import configure_logging
    from orchestrator.registry import load_planner_modules
    from orchestrator.sweeper import sweep
    from workers.registry import load_operation_modules, modules_from_setting
    from workers.resources import worker_resources

    configure_logging(settings)
    extra = modules_from_setting(settings.job_modules)
    load_operation_modules(extra)
    load_planner_modules(extra)
    click.echo(str(sweep(worker_resources())))


COMMANDS = [worker_command, orchestrator_command, sweep_command]
