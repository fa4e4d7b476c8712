"""Secrets of the embedded servers: one file per name, in a directory only its owner may enter."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def new_secret() -> str:
    """Return a fresh random secret (256 bits, URL-safe: it goes into URLs and configuration files)."""
    return secrets.token_urlsafe(32)


def private_directory(path: Path) -> Path:
    """Create ``path`` if needed and make it enterable by its owner only (mode 0700); return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600, also when the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def secret_file(directory: Path, name: str) -> str:
    """Return the secret kept in ``directory/name``; make a random one (mode 0600) the first time.

    The file is created whole or not at all, so two processes asking at once get the same secret.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid secret name {name!r}")
    private_directory(directory)
    path = directory / name
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    scratch = directory / f".{name}.{secrets.token_hex(4)}"
    write_private(scratch, new_secret() + "\n")
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass
    finally:
        scratch.unlink()
    return _read(path)


def _read(path: Path) -> str:
    with path.open() as f:
        if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
            os.fchmod(f.fileno(), 0o600)
        value = f.read().strip()
    if not value:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise FileNotFoundError(path)
    return value
