"""Read an export's objects straight from the object store, as the API would serve them (inflated)."""

from __future__ import annotations

from typing import Any

from storage.export_gzip import GZIP, inflate
from storage.objectstore import ObjectStore


def entry_bytes(store: ObjectStore, entry: dict[str, Any]) -> bytes:
    """Return the NDJSON of one manifest entry (``key``, and ``encoding`` when stored gzip-compressed)."""
    chunks = store.get_stream(entry["key"])
    return b"".join(inflate(chunks) if entry.get("encoding") == GZIP else chunks)
