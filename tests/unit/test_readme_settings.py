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
