"""Security overhead: what row-level security, the audit trail and token checks cost per request and per row.

Baselines from the same run: a read served by an app connected as the owner (RLS bypassed) with auditing and
authentication off; a raw COPY of a partition's rows as the owner. Each variant adds one thing:
- RLS: the same app connected as the restricted application role (row-level security enforced);
- + audit: one audit row appended per request (its own transaction, asynchronous commit);
- + auth: an HS256 bearer token validated and the SMART scopes checked on every request;
- COPY under RLS: the application role copying the same rows with the partition set.
Reads go through Flask's test client in this process (no HTTP), so the differences are the server's own.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import replace

import psycopg

from api import create_app
from bench.common import Latencies, bench_database, machine, ms, ratio, record
from core.settings import Settings
from harness.services import app_database
from harness.tokens import AuthKeys, bearer
from storage import Database
from storage.db import libpq_url

PARTITION = "bench"


def _ms3(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _seed_rows(owner_url: str, rows: int) -> None:
    with psycopg.connect(libpq_url(owner_url)) as conn:
        pid = conn.execute(
            "INSERT INTO partition (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
            "RETURNING id",
            (PARTITION,),
        ).fetchone()[0]  # type: ignore[index]
        with conn.cursor().copy(
            "COPY resource (partition_id, resource_type, resource_id, version, last_updated, raw) FROM STDIN"
        ) as copy:
            for i in range(rows):
                body = f'"status":"final","code":{{"text":"x{i}"}}'
                raw = f'{{"resourceType":"Observation","id":"o{i}",{body}}}'
                copy.write_row((pid, "Observation", f"o{i}", 1, "2024-01-01T00:00:00Z", raw))


def _copy_rate(url: str, rows: int, *, app: bool, runs: int) -> float:
    best = 0.0
    with psycopg.connect(libpq_url(url)) as conn:
        for _ in range(runs):
            with conn.transaction():
                if app:
                    conn.execute("SELECT set_config('bulkhead.partition', %s, true)", (PARTITION,))
                pid = conn.execute("SELECT id FROM partition WHERE name = %s", (PARTITION,)).fetchone()[0]  # type: ignore[index]
                sink = io.BytesIO()
                started = time.perf_counter()
                with conn.cursor().copy(
                    "COPY (SELECT raw FROM resource WHERE partition_id = %s AND NOT is_history) TO STDOUT",
                    (pid,),
                ) as copy:
                    for block in copy:
                        sink.write(block)
                elapsed = time.perf_counter() - started
                assert sink.getvalue().count(b"\n") == rows
                best = max(best, rows / elapsed)
    return best


def _direct_costs(owner_url: str, app_url: str, keys: AuthKeys, n: int) -> list[str]:
    """Time each added piece alone: a point read as owner vs app role, one audit INSERT, token checks."""
    from services.tokens import TokenValidator
    from storage.audit import AuditEvent, AuditLog

    def lat(fn) -> Latencies:  # type: ignore[no-untyped-def]
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return Latencies(samples, sum(samples))

    rows: list[str] = []
    read_sql = (
        "SELECT raw FROM resource WHERE partition_id = (SELECT id FROM partition WHERE name = %s) "
        "AND resource_type = 'Observation' AND resource_id = 'o1' AND NOT is_history"
    )
    with psycopg.connect(libpq_url(owner_url)) as owner, psycopg.connect(libpq_url(app_url)) as app:

        def owner_read() -> None:
            with owner.transaction():
                owner.execute("SELECT set_config('bulkhead.partition', %s, true)", (PARTITION,))
                assert owner.execute(read_sql, (PARTITION,)).fetchone() is not None

        def app_read() -> None:
            with app.transaction():
                app.execute("SELECT set_config('bulkhead.partition', %s, true)", (PARTITION,))
                assert app.execute(read_sql, (PARTITION,)).fetchone() is not None

        owner_read()
        app_read()
        base, rls = lat(owner_read), lat(app_read)
        rows.append(f"| point read as the owner (baseline) | {_ms3(base.p50)} | {_ms3(base.p99)} |")
        rows.append(f"| point read as the application role (RLS) | {_ms3(rls.p50)} | {_ms3(rls.p99)} |")
    audit = AuditLog(app_database(app_url))
    event = AuditEvent(operation="read", outcome="success", partition=PARTITION, path="/x", status=200)
    audit.write(event)
    one = lat(lambda: audit.write(event))
    rows.append(f"| one audit INSERT (autocommit, asynchronous commit) | {_ms3(one.p50)} | {_ms3(one.p99)} |")
    audit.dispose()
    validator = TokenValidator(keys.settings(Settings()))
    for alg in ("hs256", "rs256", "es256"):
        token = getattr(keys, alg)([PARTITION], "system/*.rs")
        check = lat(lambda token=token: validator.validate(token))
        rows.append(f"| {alg.upper()} token validation | {_ms3(check.p50)} | {_ms3(check.p99)} |")
    return rows


def _variants(owner_url: str, app_url: str, keys: AuthKeys) -> dict[str, tuple[object, dict[str, str]]]:
    base = Settings(database_url=app_url, public_base_url="http://bench.test", audit_enabled=False)
    owner_db, app_db = Database(owner_url), app_database(app_url)
    token = keys.hs256([PARTITION], "system/*.rs")
    return {
        "owner, no audit, no auth (baseline)": (
            create_app(replace(base, database_url=owner_url), database=owner_db).test_client(),
            {},
        ),
        "RLS (application role)": (create_app(base, database=app_db).test_client(), {}),
        "RLS + audit": (create_app(replace(base, audit_enabled=True), database=app_db).test_client(), {}),
        "RLS + audit + auth (HS256)": (
            create_app(keys.settings(replace(base, audit_enabled=True)), database=app_db).test_client(),
            bearer(token),
        ),
    }


def measure(owner_url: str, app_url: str, requests: int, rows: int, runs: int, tmp: str) -> str:
    """Run every variant and return the report."""
    from pathlib import Path

    keys = AuthKeys.create(Path(tmp))
    _seed_rows(owner_url, rows)
    variants = _variants(owner_url, app_url, keys)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    path = f"/partitions/{PARTITION}/Observation/o1"
    for client, headers in variants.values():
        for _ in range(50):  # warm up pools and caches
            client.get(path, headers=headers)  # type: ignore[attr-defined]
    batch = 20
    for _ in range(requests // batch):
        for name, (client, headers) in variants.items():
            for _ in range(batch):
                started = time.perf_counter()
                response = client.get(path, headers=headers)  # type: ignore[attr-defined]
                samples[name].append(time.perf_counter() - started)
                assert response.status_code == 200, response.data
    base_samples = samples["owner, no audit, no auth (baseline)"]
    baseline = Latencies(base_samples, sum(base_samples))
    lines = [
        f"Reads of one resource, {requests} per variant, interleaved in batches of {batch}:",
        "",
        "| variant | p50 | p99 | p50 added to the baseline |",
        "|---|---|---|---|",
    ]
    for name, values in samples.items():
        lat = Latencies(values, sum(values))
        lines.append(f"| {name} | {ms(lat.p50)} | {ms(lat.p99)} | {ms(lat.p50 - baseline.p50)} |")
    owner_rate = app_rate = 0.0
    for _ in range(runs):  # alternate, so neither side gets the warmer cache
        owner_rate = max(owner_rate, _copy_rate(owner_url, rows, app=False, runs=1))
        app_rate = max(app_rate, _copy_rate(app_url, rows, app=True, runs=1))
    lines += [
        "",
        f"COPY of a partition's raw rows ({rows} rows, best of {runs}):",
        "",
        "| reader | rows/s | ratio to the owner |",
        "|---|---|---|",
        f"| owner (RLS bypassed) | {owner_rate:,.0f} | 1.00x |",
        f"| application role (RLS enforced) | {app_rate:,.0f} | {ratio(app_rate, owner_rate)} |",
    ]
    lines += [
        "",
        f"Each piece alone ({requests} calls each):",
        "",
        "| piece | p50 | p99 |",
        "|---|---|---|",
        *_direct_costs(owner_url, app_url, keys, requests),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print (and with --record, write) the security overhead."""
    import tempfile

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the results into docs/benchmarks.md")
    args = parser.parse_args(argv)
    with bench_database() as db, tempfile.TemporaryDirectory() as tmp:
        facts = machine(db.owner_url)
        body = measure(db.owner_url, db.app_url, args.requests, args.rows, args.runs, tmp)
    command = "python -m bench security_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{facts}\n\n`{command.strip()}`\n\n{body}"
    print(text)
    if args.record:
        record("security_overhead", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
