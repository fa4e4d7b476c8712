"""Run Bulkhead's benchmarks: ``python -m bench [--list] [NAME [ARGS...]]``.

With no name, every benchmark runs with its defaults, one after the other (what ``make bench`` does). With a
name (``rest``, ``raw_column``, ``export``, …; a trailing ``_`` may be left out, so ``import`` runs
``bench/import_.py``), that one runs and the remaining arguments go to it. Benchmarks are discovered: any
module of the ``bench`` package with a ``main(argv)`` function.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType

import bench

Main = Callable[[list[str] | None], int]
_HELPERS = {"common", "__main__"}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in _HELPERS)


def _load(name: str) -> tuple[ModuleType, Main] | None:
    module = importlib.import_module(f"bench.{name}")
    entry = getattr(module, "main", None)
    return (module, entry) if callable(entry) else None


def _title(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().split("\n", 1)[0]


def _display(name: str) -> str:
    return name.rstrip("_")


def discover() -> tuple[dict[str, tuple[ModuleType, Main]], dict[str, str]]:
    """Return every benchmark by display name, and the modules that failed to import with the reason.

    Modules without ``main`` are helpers and left out.
    """
    found: dict[str, tuple[ModuleType, Main]] = {}
    broken: dict[str, str] = {}
    for name in _modules():
        try:
            loaded = _load(name)
        except Exception as exc:
            broken[_display(name)] = f"{type(exc).__name__}: {exc}"
            continue
        if loaded is not None:
            found[_display(name)] = loaded
    return found, broken


def _run(name: str, entry: Main, argv: list[str] | None) -> int:
    print(f"\n=== bench {name} {' '.join(argv or [])}".rstrip(), flush=True)
    started = time.perf_counter()
    try:
        code = entry(argv)
    except Exception:
        traceback.print_exc()
        code = 1
    print(f"=== bench {name}: exit {code} after {time.perf_counter() - started:.0f}s", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """List or run benchmarks; return non-zero if any failed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    benchmarks, broken = discover()
    for name, reason in broken.items():
        print(f"bench {name} cannot be imported: {reason}", file=sys.stderr)
    if args and args[0] == "--list":
        for name, (module, _) in benchmarks.items():
            print(f"{name:<20} {_title(module)}")
        return 1 if broken else 0
    if args:
        name = _display(args[0])
        if name not in benchmarks:
            print(f"unknown benchmark {args[0]!r}; known: {', '.join(benchmarks)}", file=sys.stderr)
            return 2
        return _run(name, benchmarks[name][1], args[1:])
    failed = [name for name, (_, entry) in benchmarks.items() if _run(name, entry, []) != 0]
    failed.extend(broken)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
