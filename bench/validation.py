"""Benchmark validation: resources/s on one core for each level, next to parsing and R4B alone.

    python -m bench validation [--patients 300] [--record]

Resources are the synthetic records (``tools/synthetic.py``: patients, encounters, vitals and labs,
conditions, prescriptions) plus the official R4 examples shipped with the tests. Each level runs over the same
parsed resources and is timed in CPU time of this process (other load on the machine does not count):

- ``orjson.loads`` of the same bytes (the baseline: the cost of reading the body at all);
- the R4 structural walk (``structural_issues``);
- ``fhir.resources`` R4B ``model_validate`` alone (what the MEASURED figures quote);
- full validation (``full_issues``: the walk, then R4B where R4B matches R4).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import machine, ratio, record, table
from core.validation import full_issues, r4b_model, structural_issues
from tools.synthetic import generate

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "r4-examples"


def _cpu(fn: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def _each(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
    """Return a run of ``fn`` over ``items`` that drops each result (no list of results kept alive)."""

    def run() -> None:
        for item in items:
            fn(item)

    return run


def _r4b_alone(resources: list[dict[str, Any]]) -> None:
    for r in resources:
        model = r4b_model(r["resourceType"])
        if model is not None:
            model.model_validate(r)


def _rates(label: str, raws: list[bytes], rounds: int) -> list[list[object]]:
    resources = [orjson.loads(raw) for raw in raws]
    for r in resources:
        assert not full_issues(r), (r["resourceType"], full_issues(r)[:3])
    n = len(resources)
    levels = [
        ("orjson.loads (baseline)", _each(orjson.loads, raws)),
        ("structural (R4 walk)", _each(structural_issues, resources)),
        ("fhir.resources R4B alone", lambda: _r4b_alone(resources)),
        ("full (walk + R4B)", _each(full_issues, resources)),
    ]
    seconds = {name: _cpu(fn, rounds) for name, fn in levels}
    base = n / seconds["orjson.loads (baseline)"]
    r4b = n / seconds["fhir.resources R4B alone"]
    rows: list[list[object]] = []
    for name, _ in levels:
        rate = n / seconds[name]
        rows.append(
            [label, name, f"{rate:,.0f}", f"{1e6 / rate:,.0f} µs", ratio(rate, base), ratio(rate, r4b)]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and with --record, store) its table."""
    parser = argparse.ArgumentParser(prog="python -m bench validation")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args(argv)
    synthetic = [orjson.dumps(r) for r in generate(args.patients, seed=7)]
    kinds = Counter(orjson.loads(raw)["resourceType"] for raw in synthetic)
    examples = [p.read_bytes() for p in sorted(EXAMPLES.glob("*.json"))]
    clinical = [raw for raw in examples if orjson.loads(raw)["resourceType"] in {"Patient", "Observation"}]
    rows = _rates("synthetic records", synthetic, args.rounds)
    rows += _rates("official examples (all types)", examples, args.rounds)
    rows += _rates("official Patient + Observation examples", clinical, args.rounds)
    mix = ", ".join(f"{n} {t}" for t, n in kinds.most_common())
    command = "python -m bench validation " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            "## Validation speed",
            "",
            f"`{command.strip()}` — {machine()}. One core, CPU time, best of {args.rounds} rounds.",
            f"Synthetic records: {len(synthetic):,} ({mix}); official examples: {len(examples)} files "
            f"({len(clinical)} of them Patient or Observation).",
            "",
            table(
                ["resources", "level", "resources/s", "per resource", "vs orjson.loads", "vs R4B alone"],
                rows,
            ),
        ]
    )
    print(text)
    if args.record:
        record("validation", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
