"""Measure REST read, create and search latency (p50 / p99) under 1, 8 and 32 concurrent clients.

    python -m bench rest [--patients 1000] [--others 2] [--requests 400] [--clients 1,8,32] [--record]

A real server: the API under gunicorn with the flags ``bulkhead serve`` uses, on a free loopback port,
connected as the application role (row-level security on) to a database of this run. One partition
(``bench``) holds ``--patients`` synthetic patients (about 36 resources each, ``bulkhead seed``'s data);
``--others`` more partitions hold the same ids, so that every lookup has to pick the right partition.

Each operation runs at each concurrency with ``--requests`` requests in all, next to baselines measured in
the same run at the same concurrency:

- read ``GET /partitions/bench/Patient/{id}`` vs the same lookup done directly with psycopg (one statement,
  same role, partition set on the connection);
- create ``POST /partitions/bench/Observation`` vs a direct psycopg INSERT of the same row (autocommit);
- search ``GET /partitions/bench/Patient?name=…`` vs the psycopg lookup — measured only if search answers
  correctly on the seeded data, else reported as not measurable yet;
- the floor request: ``GET`` of an unknown resource type, answered 404 before any resource lookup — HTTP,
  the framework, the security hooks and the per-request audit event (queued for the writer thread), which
  every request pays. (``GET /metadata`` is no floor: its CapabilityStatement is about half a megabyte.)
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import requests

from bench.common import Latencies, api_server, bench_database, machine, ms, peak_rss, ratio, record, table
from harness.services import app_database
from storage import stamp_new, write_new_resources
from storage.db import libpq_url
from tools.synthetic import Population, generate

PARTITION = "bench"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
_READ_SQL = (
    "SELECT r.raw FROM resource r JOIN partition p ON p.id = r.partition_id "
    "WHERE p.name = %s AND r.resource_type = %s AND r.resource_id = %s AND NOT r.is_history"
)
_INSERT_SQL = (
    "INSERT INTO resource (partition_id, resource_type, resource_id, version, last_updated, raw) "
    "VALUES (%s, %s, %s, 1, now(), %s)"
)


class RequestFailed(RuntimeError):
    """A request under measurement did not get the answer it should have."""


@dataclass(frozen=True)
class Row:
    """One measured line: an operation at a concurrency, with the same-run baselines it is compared with."""

    operation: str
    clients: int
    result: Latencies
    direct: Latencies | None = None
    http: Latencies | None = None


def run_clients(
    clients: int,
    total: int,
    make: Callable[[], Any],
    op: Callable[[Any, int], None],
    close: Callable[[Any], None],
) -> Latencies:
    """Run ``total`` calls of ``op(state, n)`` spread over ``clients`` threads; return their latencies."""
    per = max(1, total // clients)
    samples: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    ready = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        state = make()
        local: list[float] = []
        try:
            ready.wait()
            for j in range(per):
                started = time.perf_counter()
                op(state, k * per + j)
                local.append(time.perf_counter() - started)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            close(state)
            with lock:
                samples.extend(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return Latencies(samples, wall)


def _session() -> requests.Session:
    return requests.Session()


def _close_session(s: requests.Session) -> None:
    s.close()


def _expect(response: requests.Response, status: int) -> None:
    if response.status_code != status:
        raise RequestFailed(
            f"{response.request.method} {response.url}: {response.status_code} {response.text[:200]}"
        )


def seed(app_url: str, patients: int, others: int) -> dict[str, int]:
    """Bulk-write the benchmark partition and the other partitions (same seed, so the same ids)."""
    database = app_database(app_url)
    counts: dict[str, int] = {}
    try:
        for name in [PARTITION, *(f"bench-other-{n}" for n in range(1, others + 1))]:
            now = datetime.now(UTC)
            result = write_new_resources(
                database, name, (stamp_new(r, now) for r in generate(patients, seed=1))
            )
            counts[name] = result.resources
    finally:
        database.dispose()
    with psycopg.connect(libpq_url(app_url), autocommit=True) as conn:
        conn.execute("ANALYZE")
    return counts


def search_works(base: str, population: Population) -> tuple[bool, str]:
    """Return whether ``Patient?name=`` finds a seeded patient by family name, and only matching ones."""
    target = f"{base}/partitions/{PARTITION}/Patient/{population.patient_id(0)}"
    family = requests.get(target, timeout=30).json()["name"][0]["family"]
    found = requests.get(f"{base}/partitions/{PARTITION}/Patient", params={"name": family}, timeout=60)
    if found.status_code != 200:
        return False, f"GET Patient?name= answered {found.status_code}"
    bundle = found.json()
    entries = bundle.get("entry") or []
    ids = {e.get("resource", {}).get("id") for e in entries}
    wrong = [e for e in entries if e.get("resource", {}).get("name", [{}])[0].get("family") != family]
    if population.patient_id(0) not in ids and bundle.get("total", 0) <= len(entries):
        return False, "Patient?name= does not find a seeded patient (bulk-written resources not indexed yet)"
    if wrong:
        return False, "Patient?name= returns patients with other names"
    return True, family


def measure(
    base: str, app_url: str, population: Population, levels: list[int], total: int
) -> tuple[list[Row], str]:
    """Measure every operation and baseline at every concurrency; return the rows and the search note."""
    rng = random.Random(7)
    patient_ids = [population.patient_id(rng.randrange(population.patients)) for _ in range(total)]
    bodies = []
    for resource in generate(max(1, total // 20), seed=99):
        if resource["resourceType"] == "Observation":
            bodies.append(orjson.dumps({k: v for k, v in resource.items() if k != "id"}))
    partition_pid = _partition_id(app_url)
    searchable, note = search_works(base, population)
    families = []
    if searchable:
        families = [
            requests.get(f"{base}/partitions/{PARTITION}/Patient/{pid}", timeout=30).json()["name"][0][
                "family"
            ]
            for pid in patient_ids[:50]
        ]

    def read(s: requests.Session, n: int) -> None:
        _expect(s.get(f"{base}/partitions/{PARTITION}/Patient/{patient_ids[n % len(patient_ids)]}"), 200)

    def create(s: requests.Session, n: int) -> None:
        _expect(
            s.post(f"{base}/partitions/{PARTITION}/Observation", data=bodies[n % len(bodies)], headers=FHIR),
            201,
        )

    def search(s: requests.Session, n: int) -> None:
        _expect(
            s.get(f"{base}/partitions/{PARTITION}/Patient", params={"name": families[n % len(families)]}), 200
        )

    def floor(s: requests.Session, n: int) -> None:
        _expect(s.get(f"{base}/partitions/{PARTITION}/Unknowntype/{n}"), 404)

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(libpq_url(app_url), autocommit=True)
        conn.execute("SELECT set_config('bulkhead.partition', %s, false)", (PARTITION,))
        return conn

    def pg_read(conn: psycopg.Connection[Any], n: int) -> None:
        row = conn.execute(_READ_SQL, (PARTITION, "Patient", patient_ids[n % len(patient_ids)])).fetchone()
        if row is None:
            raise RequestFailed("psycopg lookup found nothing")

    def pg_insert(conn: psycopg.Connection[Any], n: int) -> None:
        conn.execute(
            _INSERT_SQL,
            (partition_pid, "Observation", f"pg-{n}-{time.monotonic_ns()}", bodies[n % len(bodies)].decode()),
        )

    def http(op: Callable[[requests.Session, int], None], clients: int) -> Latencies:
        return run_clients(clients, total, _session, op, _close_session)

    def pg(op: Callable[[psycopg.Connection[Any], int], None], clients: int) -> Latencies:
        return run_clients(clients, total, connect, op, lambda c: c.close())

    for op in (read, floor):  # warm both paths: connection pools, caches, imports in the workers
        http(op, 4)
    rows: list[Row] = []
    for clients in levels:
        print(f"  {clients} client(s)...", flush=True)
        lookup = pg(pg_read, clients)
        insert = pg(pg_insert, clients)
        bare = http(floor, clients)
        rows.append(Row("baseline: psycopg lookup", clients, lookup))
        rows.append(Row("baseline: psycopg INSERT", clients, insert))
        rows.append(Row("baseline: floor request", clients, bare))
        rows.append(Row("read Patient/{id}", clients, http(read, clients), lookup, bare))
        rows.append(Row("create Observation", clients, http(create, clients), insert, bare))
        if searchable:
            rows.append(Row("search Patient?name=", clients, http(search, clients), lookup, bare))
    return rows, ("" if searchable else note)


def _partition_id(app_url: str) -> int:
    with psycopg.connect(libpq_url(app_url)) as conn:
        conn.execute("SELECT set_config('bulkhead.partition', %s, false)", (PARTITION,))
        row = conn.execute("SELECT id FROM partition WHERE name = %s", (PARTITION,)).fetchone()
        assert row is not None
        return int(row[0])


def report(rows: list[Row], counts: dict[str, int], note: str, rss: int, command: str, facts: str) -> str:
    """Return the results as Markdown."""
    body = table(
        ["clients", "operation", "p50", "p99", "req/s", "p50 / psycopg", "p99 / psycopg", "p50 / floor"],
        [
            [
                r.clients,
                r.operation,
                ms(r.result.p50),
                ms(r.result.p99),
                f"{r.result.throughput:,.0f}",
                ratio(r.result.p50, r.direct.p50) if r.direct else "",
                ratio(r.result.p99, r.direct.p99) if r.direct else "",
                ratio(r.result.p50, r.http.p50) if r.http else "",
            ]
            for r in rows
        ],
    )
    seeded = ", ".join(f"`{name}` {n:,}" for name, n in counts.items())
    lines = [
        "## REST latency under concurrency",
        "",
        f"`{command}` — {facts}.",
        f"Resources per partition (same ids in each): {seeded}. Server: gunicorn, 2 processes x 4 threads "
        f"(as `bulkhead serve`), peak RSS of the server's processes {rss / 1e6:.0f} MB. Clients are threads "
        "of one Python process on the same 2 cores, each with a keep-alive connection.",
        "Baselines, same run and concurrency: the same lookup (or INSERT of the same row) done directly with "
        "psycopg as the same role; and the floor request, `GET` of an unknown resource type (404 before any "
        "resource lookup): HTTP, the framework, the security hooks and the audit event every request queues.",
        "Reading it: p50 / psycopg is what HTTP, the framework, the unit of work and the security hooks add "
        "to the bare lookup; p50 / floor is what the operation costs beyond a request that does no resource "
        "work. Gunicorn serves 8 requests at a time, so at 32 clients most of the latency is queueing.",
        "",
        body,
    ]
    if note:
        lines += ["", f"Search: not measurable yet — {note}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Seed, start the server, measure and print (with --record, write) the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--others", type=int, default=2, help="other partitions holding the same ids")
    parser.add_argument("--requests", type=int, default=400, help="requests per operation and concurrency")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c]
    population = Population(seed=1, patients=args.patients)
    with bench_database() as db:
        facts = machine(db.owner_url)
        print(facts)
        started = time.perf_counter()
        counts = seed(db.app_url, args.patients, args.others)
        print(f"seeded {sum(counts.values()):,} resources in {time.perf_counter() - started:.0f}s")
        with api_server(db.app_url) as server:
            rows, note = measure(server.base, db.app_url, population, levels, args.requests)
            rss = peak_rss(server.pid)
    command = "python -m bench rest " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, counts, note, rss, command.strip(), facts)
    print(text)
    if args.record:
        record("rest", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
