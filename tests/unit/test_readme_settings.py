"""The README's settings table names every setting the code reads."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from core.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings_section() -> str:
    text = README.read_text()
    start = text.index("\n## Settings\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_setting_has_a_row_in_the_readme_settings_table() -> None:
    # Given the Settings dataclass and the README's Settings section
    documented = set(re.findall(r"`(BULKHEAD_[A-Z0-9_]+)`", _settings_section()))
    # When each field's variable is looked up
    variables = {f"BULKHEAD_{f.name.upper()}" for f in fields(Settings)}
    missing = sorted(variables - documented)
    # Then none is missing, and the table names no variable the code does not read
    assert missing == []
    assert sorted(documented - variables) == []


def _rows() -> list[tuple[list[str], list[str]]]:
    """Return each settings row's variables and its default cell split the same way (``a`` / ``b``)."""
    rows = []
    for line in _settings_section().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 2 or not cells[0].startswith("`BULKHEAD_"):
            continue
        names = re.findall(r"`(BULKHEAD_[A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        rows.append((names, defaults if len(defaults) == len(names) else [cells[1]] * len(names)))
    return rows


def _spelled(value: object) -> str | None:
    """Return how the README writes a default (None: a default the table describes in words)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_default_in_the_readme_is_the_one_the_code_uses() -> None:
    # Given each field's default and the README's default for its variable
    defaults = {f"BULKHEAD_{f.name.upper()}": f.default for f in fields(Settings)}
    wrong = []
    for names, cells in _rows():
        for name, cell in zip(names, cells, strict=True):
            if name not in defaults:
                continue
            literal = re.match(r"`([^`]*)`", cell)
            expected = _spelled(defaults[name])
            # Then a literal default is the code's, and a default written in words stands for none
            if literal is not None and not literal.group(1).startswith("BULKHEAD_"):
                if literal.group(1) != expected:
                    wrong.append(f"{name}: README {literal.group(1)!r}, code {expected!r}")
            elif literal is None and expected is not None:
                wrong.append(f"{name}: README {cell!r}, code {expected!r}")
    assert wrong == []
