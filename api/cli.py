"""The ``bulkhead`` command line."""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from types import FrameType

import click

from api.logs import configure_logging
from core.settings import Settings
from storage import Database

log = logging.getLogger("bulkhead")


@click.group()
def main() -> None:
    """Bulkhead: a multi-tenant FHIR R4 server with partition-scoped bulk jobs."""


@main.command()
def migrate() -> None:
    """Apply database migrations to BULKHEAD_DATABASE_URL."""
    settings = Settings.from_env()
    configure_logging(settings)
    if not settings.database_url:
        raise click.ClickException("BULKHEAD_DATABASE_URL is not set")
    db = Database(settings.database_url)
    db.migrate()
    db.dispose()
    click.echo("migrations applied")


@main.command()
@click.option("--port", type=int, default=None, help="Port to listen on (default BULKHEAD_PORT or 8080).")
@click.option("--host", default=None, help="Address to bind (default BULKHEAD_HOST or 127.0.0.1).")
def serve(port: int | None, host: str | None) -> None:
    """Start Bulkhead; with no BULKHEAD_DATABASE_URL, start an embedded PostgreSQL in the data directory."""
    settings = Settings.from_env()
    if port is not None:
        settings = replace(settings, port=port)
    if host is not None:
        settings = replace(settings, host=host)
    configure_logging(settings)
    from api.supervisor import Supervisor

    supervisor = Supervisor(settings)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        supervisor.start()
        supervisor.wait()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
