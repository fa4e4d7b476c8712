"""Measure the raw resource column as text, json and jsonb: COPY in, COPY out and a server-side cursor.

    python -m bench raw_column [--resources 200000] [--runs 2] [--record]

The same synthetic resources (``tools/synthetic.py``) go into three copies of the ``resource`` table that
differ only in the type of ``raw``, with the same indexes. For each type, in one run on this machine:

- COPY in: ``COPY … FROM STDIN`` of the same lines (read from one file, so every type gets the same bytes);
- COPY out: ``COPY (SELECT raw … WHERE partition_id = …) TO STDOUT``, the raw export path;
- cursor: a server-side cursor of ``raw::text`` read with ``fetchmany(10000)``, the read path of a driver;
- whether the bytes that come back are the bytes that went in, and the table's size on disk.

Variants run in rotation (text, json, jsonb, text, …) and the best run counts (``--runs`` rotations for COPY
in, twice as many for the reads). Ratios are to text.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.common import bench_database, machine, ratio, record, table, timed
from storage import stamp_new
from storage.db import libpq_url
from tools.synthetic import generate

KINDS = ("text", "json", "jsonb")
_COLUMNS = "partition_id, resource_type, resource_id, version, last_updated, is_deleted, is_history, raw"
_BLOCK = 1 << 20


@dataclass
class Result:
    """Rates of one column type (rows per second), its size on disk and whether it kept the bytes."""

    kind: str
    copy_in: float = 0.0
    copy_out: float = 0.0
    cursor: float = 0.0
    out_mb_s: float = 0.0
    size: int = 0
    preserved: bool = False


def write_lines(path: Path, resources: int) -> tuple[int, int, list[bytes]]:
    """Write COPY text lines of ``resources`` synthetic resources to ``path``; return rows, raw bytes, a
    sample of raw values (the first hundred) to compare against what comes back."""
    now = datetime.now(UTC)
    rows = size = 0
    sample: list[bytes] = []
    patients = resources // 30 + 1
    with path.open("wb") as out:
        for resource in generate(patients, seed=1):
            item = stamp_new(resource, now)
            raw = item.raw
            if len(sample) < 100:
                sample.append(raw)
            field = raw.replace(b"\\", b"\\\\")
            out.write(
                b"1\t%s\t%s\t1\t%s\tf\tf\t%s\n"
                % (item.resource_type.encode(), item.resource_id.encode(), now.isoformat().encode(), field)
            )
            rows += 1
            size += len(raw)
            if rows >= resources:
                break
    return rows, size, sample


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            yield block


def create_tables(conn: psycopg.Connection[Any]) -> None:
    """Create one copy of the resource table per column type (same columns and indexes)."""
    for kind in KINDS:
        conn.execute(f"CREATE TABLE raw_{kind} (LIKE resource INCLUDING ALL)")
        conn.execute(f"ALTER TABLE raw_{kind} ALTER COLUMN raw TYPE {kind} USING raw::{kind}")
    conn.commit()


def copy_in(conn: psycopg.Connection[Any], kind: str, path: Path) -> None:
    """Empty the table of ``kind`` and COPY the lines of ``path`` into it."""
    conn.execute(f"TRUNCATE raw_{kind}")
    conn.commit()
    with conn.cursor() as cur, cur.copy(f"COPY raw_{kind} ({_COLUMNS}) FROM STDIN") as copy:
        for block in _blocks(path):
            copy.write(block)
    conn.commit()


def copy_out(conn: psycopg.Connection[Any], kind: str) -> tuple[int, int]:
    """COPY the raw column out in text format; return rows and bytes read."""
    rows = size = 0
    sql = f"COPY (SELECT raw FROM raw_{kind} WHERE partition_id = 1 ORDER BY surrogate_id) TO STDOUT"
    with conn.cursor() as cur, cur.copy(sql) as copy:
        for block in copy:
            rows += bytes(block).count(b"\n")
            size += len(block)
    conn.commit()
    return rows, size


def cursor_read(conn: psycopg.Connection[Any], kind: str) -> int:
    """Read the raw column as text through a server-side cursor; return rows read."""
    rows = 0
    with conn.cursor(name=f"bench_{kind}") as cur:
        cur.execute(f"SELECT raw::text FROM raw_{kind} WHERE partition_id = 1 ORDER BY surrogate_id")
        while batch := cur.fetchmany(10000):
            rows += len(batch)
    conn.commit()
    return rows


def first_values(conn: psycopg.Connection[Any], kind: str, count: int) -> list[bytes]:
    """Return the first ``count`` raw values as the server gives them back, encoded."""
    got = conn.execute(
        f"SELECT raw::text FROM raw_{kind} ORDER BY surrogate_id LIMIT %s", (count,)
    ).fetchall()
    conn.commit()
    return [str(row[0]).encode() for row in got]


def measure(url: str, resources: int, runs: int) -> tuple[int, int, dict[str, Result]]:
    """Run every measurement; return rows, raw bytes and the results per column type."""
    results = {kind: Result(kind) for kind in KINDS}
    with (
        tempfile.TemporaryDirectory(prefix="bulkhead-bench-") as tmp,
        psycopg.connect(libpq_url(url)) as conn,
    ):
        path = Path(tmp) / "lines.copy"
        rows, size, sample = write_lines(path, resources)
        print(f"{rows:,} resources, {size / 1e6:.0f} MB of raw JSON ({size / rows:.0f} bytes each)")
        create_tables(conn)
        for _ in range(runs):
            for kind in KINDS:
                _, seconds = timed(partial(copy_in, conn, kind, path))
                results[kind].copy_in = max(results[kind].copy_in, rows / seconds)
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        conn.autocommit = False
        for _ in range(runs * 2):  # reads are short: more rotations for the same noise
            for kind in KINDS:
                (got, out_bytes), seconds = timed(partial(copy_out, conn, kind))
                assert got == rows, (kind, got, rows)
                results[kind].copy_out = max(results[kind].copy_out, rows / seconds)
                results[kind].out_mb_s = max(results[kind].out_mb_s, out_bytes / seconds / 1e6)
                read, seconds = timed(partial(cursor_read, conn, kind))
                assert read == rows
                results[kind].cursor = max(results[kind].cursor, rows / seconds)
        for kind in KINDS:
            results[kind].preserved = first_values(conn, kind, len(sample)) == sample
            found = conn.execute(f"SELECT pg_total_relation_size('raw_{kind}')").fetchone()
            results[kind].size = int(found[0]) if found else 0
        conn.commit()
    return rows, size, results


def report(rows: int, size: int, results: dict[str, Result], command: str, facts: str) -> str:
    """Return the results as Markdown: rates, ratios to text, size and byte preservation."""
    base = results["text"]
    lines = [
        table(
            ["raw column", "COPY in", "COPY out", "cursor (`fetchmany`)", "on disk", "bytes kept"],
            [
                [
                    f"`{r.kind}`",
                    f"{r.copy_in:,.0f}/s ({ratio(r.copy_in, base.copy_in)})",
                    f"{r.copy_out:,.0f}/s ({ratio(r.copy_out, base.copy_out)}, {r.out_mb_s:.0f} MB/s)",
                    f"{r.cursor:,.0f}/s ({ratio(r.cursor, base.cursor)})",
                    f"{r.size / 1e6:,.0f} MB",
                    "yes" if r.preserved else "no (keys reordered, spaces added)",
                ]
                for r in results.values()
            ],
        )
    ]
    return "\n".join(
        [
            "## Raw resource column: text, json or jsonb",
            "",
            f"`{command}` — {facts}.",
            f"{rows:,} synthetic resources, {size / 1e6:.0f} MB of raw JSON; "
            "rates in rows/s, ratios to `text`.",
            "",
            *lines,
            "",
            'Decision: `text` (see `docs/architecture.md`, "Raw resource column").',
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Measure the three column types and print (and with --record, write) the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=200_000)
    parser.add_argument(
        "--runs",
        type=int,
        default=2,
        help="rotations over the three types (reads: twice as many); the best counts",
    )
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    with bench_database() as db:
        facts = machine(db.owner_url)
        print(facts)
        rows, size, results = measure(db.owner_url, args.resources, args.runs)
    command = "python -m bench raw_column " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, size, results, command.strip(), facts)
    print(text)
    if args.record:
        record("raw_column", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
