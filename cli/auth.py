"""Security CLI commands: ``bulkhead token``, ``bulkhead client add``, ``bulkhead partition-config``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from core.errors import BulkheadError
from core.partition import validate_partition_name
from core.settings import Settings
from services.scopes import parse_scope
from services.tokens import mint_token
from storage import Database
from storage.partition_config import (
    LIMIT_NAMES,
    PartitionLimits,
    check_limits,
    delete_overrides,
    list_overrides,
    read_overrides,
    set_overrides,
)
from storage.smart_clients import SmartClient, register_client


def _partition(value: str) -> str:
    if value == "*":
        return value
    try:
        return validate_partition_name(value)
    except BulkheadError as exc:
        raise click.BadParameter(exc.message) from exc


def _database(settings: Settings) -> Database:
    if not settings.database_url:
        raise click.ClickException("BULKHEAD_DATABASE_URL is not set")
    return Database.from_settings(settings)


@click.command("token")
@click.option(
    "--partition", "partitions", multiple=True, required=True, help="Partition (repeat; '*' = all)."
)
@click.option(
    "--scope", default="system/*.cruds", show_default=True, help="SMART system scopes, space-separated."
)
@click.option("--subject", default="bulkhead-cli", show_default=True, help="Client id to put in the token.")
@click.option(
    "--lifetime", type=int, default=3600, show_default=True, help="Seconds until the token expires."
)
def token_command(partitions: tuple[str, ...], scope: str, subject: str, lifetime: int) -> None:
    """Mint a development access token (signed with BULKHEAD_AUTH_SIGNING_KEY_FILE or the HS256 secret)."""
    settings = Settings.from_env()
    names = [_partition(p) for p in partitions]
    if not parse_scope(scope):
        raise click.BadParameter("no recognised SMART system scope (e.g. system/*.rs)", param_hint="--scope")
    try:
        token = mint_token(settings, partitions=names, scope=scope, subject=subject, lifetime=lifetime)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token)


@click.group("client")
def client_group() -> None:
    """Manage SMART Backend Services clients."""


@client_group.command("add")
@click.option("--client-id", required=True, help="The client's id (its assertions' iss and sub).")
@click.option("--partition", required=True, help="The partition its tokens are for ('*' = administrator).")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File with the client's public JWKS.",
)
@click.option("--jwks-url", default=None, help="URL of the client's public JWKS.")
@click.option("--scope", default="system/*.rs", show_default=True, help="Scopes the client may obtain.")
@click.option("--name", default=None, help="A display name.")
def client_add(
    client_id: str, partition: str, jwks_file: Path | None, jwks_url: str | None, scope: str, name: str | None
) -> None:
    """Register (or replace) a backend-services client of one partition."""
    if (jwks_file is None) == (jwks_url is None):
        raise click.UsageError("give exactly one of --jwks and --jwks-url")
    if not parse_scope(scope):
        raise click.BadParameter("no recognised SMART system scope", param_hint="--scope")
    jwks: dict[str, Any] | None = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--jwks") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise click.BadParameter("a JWKS is an object with a 'keys' list", param_hint="--jwks")
    settings = Settings.from_env()
    db = _database(settings)
    try:
        register_client(
            db,
            SmartClient(
                client_id=client_id,
                partition=_partition(partition),
                scope=scope,
                jwks=jwks,
                jwks_url=jwks_url,
                name=name,
            ),
        )
    finally:
        db.dispose()
    click.echo(f"client {client_id} registered for partition {partition}")


@click.group("partition-config")
def partition_config_group() -> None:
    """Show and change per-partition limits (defaults come from BULKHEAD_* settings)."""


def _show(name: str, overrides: PartitionLimits, settings: Settings) -> None:
    effective = overrides.over(PartitionLimits.defaults(settings))
    click.echo(name)
    for field in LIMIT_NAMES:
        own = getattr(overrides, field)
        mark = "" if own is None else "  (override)"
        click.echo(f"  {field}: {getattr(effective, field)}{mark}")


@partition_config_group.command("show")
@click.argument("partition", required=False)
def config_show(partition: str | None) -> None:
    """Show one partition's limits, or every partition that has overrides."""
    settings = Settings.from_env()
    db = _database(settings)
    try:
        if partition is not None:
            _show(_partition(partition), read_overrides(db, _partition(partition)), settings)
        else:
            for name, overrides, _updated in list_overrides(db):
                _show(name, overrides, settings)
    finally:
        db.dispose()


@partition_config_group.command("set")
@click.argument("partition")
@click.option("--max-concurrent-jobs", type=int, default=None)
@click.option("--max-body-bytes", type=int, default=None)
@click.option("--max-transaction-entries", type=int, default=None)
@click.option("--rate-per-second", type=float, default=None)
@click.option("--rate-burst", type=int, default=None)
def config_set(partition: str, **values: Any) -> None:
    """Override some limits of a partition (the others keep their current value)."""
    settings = Settings.from_env()
    name = _partition(partition)
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        raise click.UsageError("name at least one limit to set")
    db = _database(settings)
    try:
        merged = {**read_overrides(db, name).as_dict(), **given}
        try:
            limits = check_limits(merged)
        except BulkheadError as exc:
            raise click.ClickException(exc.message) from exc
        set_overrides(db, name, limits)
        _show(name, limits, settings)
    finally:
        db.dispose()


@partition_config_group.command("unset")
@click.argument("partition")
def config_unset(partition: str) -> None:
    """Remove every override of a partition (back to the defaults)."""
    settings = Settings.from_env()
    db = _database(settings)
    try:
        removed = delete_overrides(db, _partition(partition))
    finally:
        db.dispose()
    click.echo(f"{partition}: {'overrides removed' if removed else 'had no overrides'}")


COMMANDS = [token_command, client_group, partition_config_group]
