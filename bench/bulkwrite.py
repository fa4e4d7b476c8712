"""Measure the bulk writer against a bare COPY FROM STDIN of the same rows, in the same run.

    python -m bench bulkwrite [--resources 100000] [--batch 5000] [--record]

The same synthetic resources (``tools/synthetic.py``), generated ahead in chunks and not timed, are written
three ways, in rotation chunk by chunk, each into a partition of its own:

- baseline: a bare ``COPY resource (…) FROM STDIN`` of the rows, as the table owner (no row-level security,
  no staging, no surrogate-id reservation, no index rows), one transaction per batch;
- the bulk writer (``storage/bulkwrite.py``) as the application role, without search-index rows
  (``index=False``);
- the bulk writer with its search-index rows (what ``bulkhead seed`` does).

Each rate is resources per second; ratios are to the baseline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg

from bench.common import bench_database, machine, ratio, record, table, timed
from harness.services import app_database
from storage import NewResource, stamp_new, write_new_resources
from storage.db import libpq_url
from tools.synthetic import Population, organization, patient_resources, practitioner

_COPY = (
    "COPY resource (partition_id, resource_type, resource_id, version, last_updated, is_deleted, is_history, "
    "raw) FROM STDIN"
)


def bare_copy(conn: psycopg.Connection[Any], pid: int, items: Sequence[NewResource], batch: int) -> None:
    """COPY the rows into partition ``pid``, one transaction per ``batch`` rows."""
    for start in range(0, len(items), batch):
        lines = []
        for item in items[start : start + batch]:
            raw = item.raw.replace(b"\\", b"\\\\")
            lines.append(
                b"%d\t%s\t%s\t1\t%s\tf\tf\t%s\n"
                % (
                    pid,
                    item.resource_type.encode(),
                    item.resource_id.encode(),
                    item.last_updated.isoformat().encode(),
                    raw,
                )
            )
        with conn.cursor() as cur, cur.copy(_COPY) as copy:
            copy.write(b"".join(lines))
        conn.commit()


def chunks(resources: int, size: int) -> list[tuple[int, int]]:
    """Return (first patient, end patient) slices of a population of about ``resources`` resources."""
    patients = max(1, resources // 36)
    per = max(1, size // 36)
    return [(first, min(first + per, patients)) for first in range(0, patients, per)]


def _slice(population: Population, first: int, end: int) -> Iterator[dict[str, Any]]:
    """Yield patients ``first`` to ``end - 1`` of the population (and the shared resources with the first)."""
    if first == 0:
        for index in range(population.organizations):
            yield organization(population, index)
        for index in range(population.practitioners):
            yield practitioner(population, index)
    for index in range(first, end):
        yield from patient_resources(population, index)


def main(argv: list[str] | None = None) -> int:
    """Run the three variants and print (with --record, write) the rates and ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="rows per transaction, in every variant")
    parser.add_argument("--chunk", type=int, default=10_000, help="resources generated ahead at a time")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    seconds = {"bare": 0.0, "plain": 0.0, "indexed": 0.0}
    rows = size = 0
    with bench_database() as db:
        facts = machine(db.owner_url)
        print(facts)
        app = app_database(db.app_url)
        with psycopg.connect(libpq_url(db.owner_url)) as owner:
            found = owner.execute(
                "INSERT INTO partition (name) VALUES ('bench-bare') RETURNING id"
            ).fetchone()
            assert found is not None
            bare_pid = int(found[0])
            owner.commit()
            slices = chunks(args.resources, args.chunk)
            patients = slices[-1][1]
            data = Population(seed=1, patients=patients)
            for first, end in slices:
                now = datetime.now(UTC)
                items = [stamp_new(r, now) for r in _slice(data, first, end)]
                rows += len(items)
                size += sum(len(i.raw) for i in items)
                runs: dict[str, Callable[[], object]] = {
                    "bare": partial(bare_copy, owner, bare_pid, items, args.batch),
                    "plain": partial(
                        write_new_resources, app, "bench-plain", items, batch_rows=args.batch, index=False
                    ),
                    "indexed": partial(
                        write_new_resources, app, "bench-indexed", items, batch_rows=args.batch
                    ),
                }
                for name, run in runs.items():
                    seconds[name] += timed(run)[1]
                print(f"  {rows:,} resources ({end} of {patients} patients)", flush=True)
        app.dispose()
    base = rows / seconds["bare"]
    results = [
        ("bare `COPY FROM STDIN` (owner, baseline)", rows / seconds["bare"]),
        ("bulk writer, no index rows", rows / seconds["plain"]),
        ("bulk writer with search-index rows", rows / seconds["indexed"]),
    ]
    command = "python -m bench bulkwrite " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Bulk writer vs bare COPY",
            "",
            f"`{command.strip()}` — {facts}.",
            f"{rows:,} synthetic resources ({size / 1e6:.0f} MB of raw JSON), {args.batch:,} rows per "
            "transaction in every variant; each variant writes into a partition of its own.",
            "",
            table(
                ["variant", "resources/s", "ratio to bare COPY"],
                [[name, f"{rate:,.0f}", ratio(rate, base)] for name, rate in results],
            ),
        ]
    )
    print(text)
    if args.record:
        record("bulkwrite", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
