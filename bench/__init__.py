"""Benchmarks: each prints its rates next to a baseline measured in the same run, and their ratio.

Run them with ``make bench`` (all) or ``python -m bench NAME [ARGS]`` (one); ``python -m bench --list``
names them. A benchmark is a module of this package with a ``main(argv) -> int`` function; ``bench.common``
holds the helpers they share. None of them runs in ``make test``.
"""

from __future__ import annotations

__all__: list[str] = []
