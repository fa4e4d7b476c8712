"""The house as its rooms promise: what a person runs imports no Flask, no module is too large."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cli", "api", "services", "orchestrator", "workers", "storage", "core")


def test_the_bulkhead_commands_import_no_flask() -> None:
    # Given a fresh interpreter / When it loads the commands (``bulkhead worker`` among them)
    code = "import sys, cli.main; print(sorted(m for m in ('flask', 'werkzeug') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    # Then neither Flask nor werkzeug was imported
    assert out.stdout.strip() == "[]"


def test_no_product_module_is_over_four_hundred_lines() -> None:
    # Given every module of the product (migrations aside)
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for room in PRODUCT
        for path in (ROOT / room).rglob("*.py")
        if "migrations" not in path.parts
    }
    # Then none has grown past the size at which it should be split by noun
    assert {name: n for name, n in sizes.items() if n > 400} == {}
