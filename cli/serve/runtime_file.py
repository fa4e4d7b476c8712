"""The runtime file of a running ``bulkhead serve`` (``serve.json`` in its data directory, mode 0600): where
its services run, with the URLs (passwords included) and keys its processes use, so that other local
commands (``seed``, ``import``) reach them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.settings import Settings

RUNTIME_FILE = "serve.json"


def write_runtime(data_dir: Path, doc: dict[str, Any]) -> None:
    """Write the runtime file, readable by its owner only (it holds passwords and the S3 keys)."""
    fd = os.open(data_dir / RUNTIME_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # also when an older file was left with another mode
        json.dump(doc, f, indent=2)


def read_runtime(data_dir: Path) -> dict[str, str] | None:
    """Return what a running ``bulkhead serve`` recorded about its services in ``data_dir``, if any."""
    path = data_dir / RUNTIME_FILE
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return {str(k): str(v) for k, v in doc.items()}


def running_runtime(data_dir: Path) -> dict[str, str] | None:
    """Return the runtime record of the ``bulkhead serve`` running in ``data_dir``; None if none runs."""
    runtime = read_runtime(data_dir)
    if not runtime:
        return None
    try:
        pid = int(runtime.get("pid") or 0)
        if pid <= 0:
            return None
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return None
    return runtime


def with_running_serve(settings: Settings) -> Settings:
    """Return ``settings`` completed with the object store of the ``bulkhead serve`` running in its data
    directory, when the environment names none (so local commands reach the embedded S3 server)."""
    if settings.s3_endpoint_url:
        return settings
    runtime = running_runtime(settings.data_dir.resolve())
    if not runtime or not runtime.get("BULKHEAD_S3_ENDPOINT_URL"):
        return settings
    environ = {**os.environ, **{k: v for k, v in runtime.items() if k.startswith("BULKHEAD_S3_")}}
    return Settings.from_env(environ)
