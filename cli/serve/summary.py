"""The start-up summary of ``bulkhead serve``: what runs where, where its secrets are, whether anyone may
read and write (it prints no secret)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cli.serve.credentials import SECRETS_DIR
from cli.serve.runtime_file import RUNTIME_FILE
from core.settings import Settings


@dataclass
class Placement:
    """Where one service runs, for the start-up summary."""

    name: str
    where: str
    detail: str


def summary(
    placements: list[Placement], settings: Settings, data_dir: Path, seconds: float, *, embedded: bool
) -> str:
    """Return the lines ``serve`` prints once everything answers."""
    width = max(len(p.name) for p in placements)
    lines = [f"Bulkhead is running (started in {seconds:.1f} s, data in {data_dir}):"]
    for p in placements:
        lines.append(f"  {p.name.ljust(width)}  {p.where}  ({p.detail})")
    if embedded:
        lines.append(
            f"  the embedded servers' passwords and keys are in {data_dir / SECRETS_DIR}, "
            f"{data_dir / 's3'} and {data_dir / RUNTIME_FILE} (readable by their owner only)"
        )
    if settings.auth_enabled:
        lines.append("  authentication is ON: requests need a bearer token")
    else:
        lines.append(
            f"  authentication is OFF: anyone who can reach {settings.host}:{settings.port} "
            "can read and write every partition (set BULKHEAD_AUTH_ENABLED=true to require tokens)"
        )
        if settings.host not in {"127.0.0.1", "localhost", "::1"}:
            lines.append(f"  WARNING: {settings.host} is not a loopback address")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


__all__ = ["Placement", "summary"]
