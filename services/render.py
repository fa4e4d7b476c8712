"""Bundles that embed stored resources as their stored bytes, without parsing them again."""

from __future__ import annotations

from typing import Any

from core.fhirjson import dumps

_PLACEHOLDER = b'"__RAW__"'


def render_bundle(bundle: dict[str, Any], entries: list[dict[str, Any]], raws: list[bytes | None]) -> bytes:
    """Serialise ``bundle`` with ``entries``; each entry's ``"__RAW__"`` resource becomes the stored bytes."""
    parts: list[bytes] = []
    pending = iter(raw for raw in raws)
    for entry in entries:
        raw = next(pending, None)
        data = dumps(entry)
        if raw is not None and _PLACEHOLDER in data:
            data = data.replace(_PLACEHOLDER, raw, 1)
        parts.append(data)
    head = dumps({**bundle, "entry": []})
    assert head.endswith(b"[]}")
    return head[:-3] + b"[" + b",".join(parts) + b"]}"
