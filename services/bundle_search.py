"""Search entries of a batch or transaction (``GET Type?params``): a searchset Bundle as the entry's resource.

The search runs in the unit of work of the entry (inside a transaction it sees the transaction's own writes).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from core.outcome import operation_outcome
from core.settings import Settings
from services.render import render_bundle
from storage import UnitOfWork
from storage.search import SearchQuery, search


def searchset(uow: UnitOfWork, query: SearchQuery, base: str, settings: Settings) -> bytes:
    """Run an entry's parsed search in the unit of work's partition; return the searchset Bundle."""
    rtype = query.types[0]
    result = search(
        uow,
        query,
        base=base,
        default_count=int(settings.default_page_size),
        include_limit=int(settings.max_page_size),
    )
    entries: list[dict[str, Any]] = []
    raws: list[bytes | None] = []
    if result.warnings:
        entries.append({"resource": operation_outcome(result.warnings), "search": {"mode": "outcome"}})
        raws.append(None)
    for mode, versions in (("match", result.matches), ("include", result.included)):
        for v in versions:
            url = f"{base}/{v.resource_type}/{v.resource_id}"
            entries.append({"fullUrl": url, "resource": "__RAW__", "search": {"mode": mode}})
            raws.append(v.raw)
    applied = [(k, v) for k, v in result.applied if k != "_cursor"]
    links = [{"relation": "self", "url": f"{base}/{rtype}?{urlencode(applied)}".rstrip("?")}]
    if result.next_cursor:
        after = urlencode([*applied, ("_cursor", result.next_cursor)])
        links.append({"relation": "next", "url": f"{base}/{rtype}?{after}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    if not entries:
        from core.fhirjson import dumps

        return dumps(bundle)
    return render_bundle(bundle, entries, raws)


__all__ = ["searchset"]
