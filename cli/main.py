"""The ``bulkhead`` command line."""

from __future__ import annotations

import logging
import signal
from dataclasses import replace
from pathlib import Path
from types import FrameType

import click

from cli.auth import COMMANDS as AUTH_COMMANDS
from cli.jobs import COMMANDS as JOB_COMMANDS
from cli.seed import seed as seed_command
from core.logs import configure_logging
from core.settings import Settings
from storage import Database

log = logging.getLogger("bulkhead")


@click.group()
def main() -> None:
    """Bulkhead: a multi-tenant FHIR R4 server with partition-scoped bulk jobs."""


main.add_command(seed_command)
for _command in AUTH_COMMANDS:
    main.add_command(_command)
for _command in JOB_COMMANDS:
    main.add_command(_command)


@main.command()
def migrate() -> None:
    """Apply database migrations as the owner; force row-level security for the application role."""
    settings = Settings.from_env()
    configure_logging(settings)
    url = settings.migration_database_url or settings.database_url
    if not url:
        raise click.ClickException("BULKHEAD_MIGRATION_DATABASE_URL or BULKHEAD_DATABASE_URL is not set")
    db = Database(url)
    db.migrate(
        app_role=settings.database_app_role,
        app_password=settings.database_app_password,
        admin_role=settings.database_admin_role,
        admin_password=settings.database_admin_password,
    )
    db.dispose()
    click.echo("migrations applied")


@main.command()
@click.option("--port", type=int, default=None, help="Port to listen on (default BULKHEAD_PORT or 8080).")
@click.option("--host", default=None, help="Address to bind (default BULKHEAD_HOST or 127.0.0.1).")
def serve(port: int | None, host: str | None) -> None:
    """Start Bulkhead on one machine: the API, the orchestrator and workers.

    PostgreSQL, Redis and S3 run embedded under BULKHEAD_DATA_DIR unless their URLs are configured.
    Ctrl-C or SIGTERM stops every process it started.
    """
    settings = Settings.from_env()
    if port is not None:
        settings = replace(settings, port=port)
    if host is not None:
        settings = replace(settings, host=host)
    configure_logging(settings)
    from cli.serve.checks import ServeError, StopRequested
    from cli.serve.supervisor import Supervisor

    supervisor = Supervisor(settings, commands=frozenset(main.commands))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        supervisor.request_stop()

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT` should still stop us.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    failure: ServeError | None = None
    try:
        supervisor.start()
        supervisor.wait()
        log.info("stopping")
    except StopRequested:
        log.info("stopping before start-up finished")
    except ServeError as err:
        failure = err
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        supervisor.stop()
    if failure is not None:
        raise click.ClickException(str(failure))


@main.command("export")
@click.option("--base", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8080/partitions/p1.")
@click.option("--type", "types", multiple=True, help="Resource type to export (repeat or comma-join).")
@click.option("--since", default=None, help="Only resources changed after this FHIR instant.")
@click.option("--patient", "patients", multiple=True, help="Patient id or reference (Patient-level export).")
@click.option("--group", default=None, help="Group id (Group-level export).")
@click.option(
    "--type-filter", "type_filters", multiple=True, help="A _typeFilter query, e.g. Patient?active=true."
)
@click.option("--token", default=None, envvar="BULKHEAD_TOKEN", help="Bearer token (or BULKHEAD_TOKEN).")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory."
)
def export_command(
    base: str,
    types: tuple[str, ...],
    since: str | None,
    patients: tuple[str, ...],
    group: str | None,
    type_filters: tuple[str, ...],
    token: str | None,
    out: Path,
) -> None:
    """Run a bulk export: kick off, show progress, download the files and check their line counts."""
    from cli.clients.export import BulkExportClient, ExportFailed, ExportRequest

    request = ExportRequest(
        base=base,
        out=out,
        types=[t for value in types for t in value.split(",") if t],
        since=since,
        patients=list(patients),
        group=group,
        type_filters=list(type_filters),
        token=token,
    )
    try:
        manifest = BulkExportClient(request).run()
    except (ExportFailed, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    total = sum(int(item.get("count") or 0) for item in manifest.get("output", []))
    click.echo(f"{len(manifest.get('output', []))} files, {total} resources, written to {out}")


@main.command("import")
@click.argument("sources", nargs=-1, required=True)
@click.option("--base", required=True, help="FHIR base URL, e.g. http://127.0.0.1:8080/partitions/p1.")
@click.option(
    "--mode",
    type=click.Choice(["IncrementalLoad", "InitialLoad"]),
    default="IncrementalLoad",
    show_default=True,
)
@click.option(
    "--validation", type=click.Choice(["full", "structural", "none"]), default="full", show_default=True
)
@click.option("--type", "resource_type", default=None, help="Resource type every input holds (optional).")
@click.option("--input-source", default=None, help="URI naming where the data comes from (meta.source).")
@click.option(
    "--range-bytes", type=int, default=None, help="Bytes per processing job (default: the server's)."
)
@click.option("--token", default=None, envvar="BULKHEAD_TOKEN", help="Bearer token (or BULKHEAD_TOKEN).")
def import_command(
    sources: tuple[str, ...],
    base: str,
    mode: str,
    validation: str,
    resource_type: str | None,
    input_source: str | None,
    range_bytes: int | None,
    token: str | None,
) -> None:
    """Import NDJSON files (local, s3:// or http(s)://): upload local ones, kick off, follow, print results.

    Exits 1 when the import failed, 2 when it completed with OperationOutcomes (refused lines, empty files).
    """
    from cli.clients.import_ import BulkImportClient, ImportFailed, ImportRequest

    request = ImportRequest(
        base=base,
        sources=list(sources),
        mode=mode,
        validation=validation,
        resource_type=resource_type,
        input_source=input_source,
        range_bytes=range_bytes,
        token=token,
    )
    try:
        result = BulkImportClient(request).run()
    except (ImportFailed, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for item in result.get("output", []):
        click.echo(f"{item['count']:>10} {item['type']:<24} from {item.get('inputUrl', '')}")
    errors = [item for item in result.get("error", []) if int(item.get("count") or 0)]
    for item in errors:
        click.echo(
            f"{item['count']:>10} {'OperationOutcome':<24} from {item.get('inputUrl', '')}: {item.get('url')}"
        )
    if errors:
        raise SystemExit(2)
