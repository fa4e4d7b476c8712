"""What a partition holds, over HTTP and row by row in SQL: to prove that refused requests changed nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from storage.db import libpq_url
from tests.support.fhir import base


@dataclass(frozen=True)
class StoredState:
    """The history total of some partitions and the list of every partition with its resource count."""

    history_totals: tuple[int, ...]
    partitions: tuple[tuple[str, int], ...]


def stored_state(client: FlaskClient, *partitions: str | None) -> StoredState:
    """Return the history totals of ``partitions`` and the server's partition list."""
    totals = []
    for partition in partitions:
        resp = client.get(f"{base(partition)}/_history?_count=1")
        assert resp.status_code == 200, resp.data
        totals.append(int(resp.get_json(force=True)["total"]))
    listing = client.get("/partitions")
    assert listing.status_code == 200, listing.data
    body: Any = listing.get_json(force=True)
    rows = []
    for parameter in body.get("parameter", []):
        parts = {
            part["name"]: next(v for k, v in part.items() if k.startswith("value"))
            for part in parameter["part"]
        }
        rows.append((str(parts["name"]), int(parts["resourceCount"])))
    return StoredState(tuple(totals), tuple(sorted(rows)))


def assert_outcome(response: TestResponse, status: int, *codes: str) -> dict[str, Any]:
    """Assert an OperationOutcome answer with ``status`` (and issue ``codes``), without a stack trace."""
    assert response.status_code == status, (response.status_code, response.data[:2000])
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    if codes:
        assert [issue["code"] for issue in body["issue"]][: len(codes)] == list(codes), body
    return body


@dataclass(frozen=True)
class StoredRows:
    """Every row a partition holds, read with SQL as the tables' owner: resource versions as stored and the
    number of search-index rows of each table, plus the names of every partition of the server."""

    resources: tuple[tuple[Any, ...], ...]
    index_counts: tuple[tuple[str, int], ...]
    partitions: tuple[str, ...]


_INDEX_TABLES = ("string", "token", "date", "reference", "number", "quantity", "uri")


def stored_rows(connection: psycopg.Connection[Any], partition: str) -> StoredRows:
    """Return what ``partition`` holds, row by row, read on a connection of the tables' owner."""
    resources = connection.execute(
        "SELECT r.surrogate_id, r.resource_type, r.resource_id, r.version, r.last_updated, r.is_history,"
        " r.is_deleted, r.raw FROM resource r JOIN partition p ON p.id = r.partition_id"
        " WHERE p.name = %s ORDER BY r.surrogate_id",
        (partition,),
    ).fetchall()
    counts = []
    for table in _INDEX_TABLES:
        row = connection.execute(
            f"SELECT count(*) FROM search_{table} s JOIN partition p ON p.id = s.partition_id"
            " WHERE p.name = %s",
            (partition,),
        ).fetchone()
        counts.append((table, int(row[0]) if row else 0))
    names = connection.execute("SELECT name FROM partition ORDER BY name").fetchall()
    return StoredRows(tuple(tuple(r) for r in resources), tuple(counts), tuple(str(n[0]) for n in names))


def owner_connection(owner_database_url: str) -> psycopg.Connection[Any]:
    """Open an autocommit connection as the tables' owner (row-level security does not hide rows from it)."""
    return psycopg.connect(libpq_url(owner_database_url), autocommit=True)
