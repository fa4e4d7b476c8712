"""``bulkhead seed``: fill a partition with realistic synthetic patients through the bulk writer."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from tqdm import tqdm

from cli.serve.credentials import embedded_database_settings, embedded_postgres
from cli.serve.runtime_file import running_runtime
from core.errors import BulkheadError
from core.partition import DEFAULT_PARTITION
from core.settings import Settings
from storage import Database, NewResource, stamp_new, write_new_resources
from tools.synthetic import generate

log = logging.getLogger(__name__)


def _running_serve_url(data_dir: Path) -> str | None:
    """Return the database URL a running ``bulkhead serve`` recorded in ``data_dir``, if one runs."""
    runtime = running_runtime(data_dir)
    return runtime.get("BULKHEAD_DATABASE_URL") or None if runtime else None


@contextmanager
def seed_database(settings: Settings) -> Iterator[tuple[str, str]]:
    """Yield (database URL, where) for seeding: the configured database, the running ``bulkhead serve``'s,
    or the embedded PostgreSQL under the data directory, started (and migrated) for the time of the block."""
    if settings.database_url:
        yield settings.database_url, "BULKHEAD_DATABASE_URL"
        return
    data_dir = settings.data_dir.resolve()
    running = _running_serve_url(data_dir)
    if running:
        yield running, f"the running 'bulkhead serve' in {data_dir}"
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with _serve_lock(data_dir):
        yield from _embedded(settings, data_dir)


@contextmanager
def _serve_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's ``bulkhead serve`` lock: no server starts on the same files meanwhile."""
    with (data_dir / "serve.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                f"a 'bulkhead serve' is starting in {data_dir}; try again once it answers"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _embedded(settings: Settings, data_dir: Path) -> Iterator[tuple[str, str]]:
    server = embedded_postgres(data_dir)
    owner_url = server.start()
    try:
        embedded = embedded_database_settings(settings, data_dir, owner_url)
        owner = Database(owner_url)
        try:
            owner.migrate(
                app_role=embedded.database_app_role,
                app_password=embedded.database_app_password,
                admin_role=embedded.database_admin_role,
                admin_password=embedded.database_admin_password,
            )
        finally:
            owner.dispose()
        assert embedded.database_url is not None
        yield embedded.database_url, f"embedded PostgreSQL in {server.data_dir}"
    finally:
        server.stop()


@click.command("seed")
@click.option("--partition", default=DEFAULT_PARTITION, show_default=True, help="Partition to fill.")
@click.option("--patients", type=click.IntRange(min=1), required=True, help="Number of patients.")
@click.option(
    "--seed",
    "seed_value",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Random seed; the same seed gives the same data (and ids) in every partition.",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Resources per COPY batch (one transaction each).",
)
def seed(partition: str, patients: int, seed_value: int, batch_rows: int) -> None:
    """Create synthetic patients with encounters, observations, conditions and prescriptions.

    Writes with COPY into the partition given (creating it), against BULKHEAD_DATABASE_URL, else the
    database of a running 'bulkhead serve', else the embedded PostgreSQL under the data directory.
    Resources are new: seeding the same --seed twice into one partition is refused.
    """
    settings = Settings.from_env()
    bar = tqdm(total=patients, unit="patients", desc=f"seeding {partition}", disable=None)
    written = 0

    def stamped() -> Iterator[NewResource]:
        for resource in generate(patients, seed=seed_value):
            yield stamp_new(resource, datetime.now(UTC))

    def progress(batch: Sequence[NewResource]) -> None:
        nonlocal written
        written += len(batch)
        bar.update(sum(1 for item in batch if item.resource_type == "Patient"))
        bar.set_postfix(resources=written, refresh=False)

    try:
        with seed_database(settings) as (url, where):
            click.echo(f"seeding partition {partition!r} in {where}", err=True)
            database = Database(url)
            try:
                result = write_new_resources(
                    database, partition, stamped(), batch_rows=batch_rows, on_batch=progress
                )
            finally:
                database.dispose()
    except BulkheadError as err:
        hint = " (seed another --seed, or another partition)" if err.status == 409 else ""
        raise click.ClickException(f"{err.message}{hint}") from None
    finally:
        bar.close()
    for rtype, count in sorted(result.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"{rtype:<20} {count:>10}")
    click.echo(f"{'total':<20} {result.resources:>10}")
    click.echo(
        f"{result.resources} resources ({result.bytes / 1e6:.1f} MB) in {result.seconds:.1f} s: "
        f"{result.rate:,.0f} resources/s"
    )
