"""The search blueprint: ``GET [base]/[type]``, ``POST [base]/[type]/_search`` and system search.

Searchset Bundles embed the stored bytes of each resource (``api/bundles.render_bundle``); ``fullUrl``s are
absolute under the partition's base. Paging links carry an opaque keyset cursor (``_cursor``, see
``storage/search/paging.py``); ``next`` and ``previous`` repeat the applied search parameters.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app

from api.http import base_url, fhir_response
from api.typed import current_request
from core.fhirelements import element_names, mandatory_elements, subset
from core.fhirtypes import resource_types
from core.outcome import operation_outcome
from services.render import render_bundle
from services.requests import FhirRequest
from storage import Database, StoredVersion
from storage.search import SearchResult, search

bp = Blueprint("search", __name__)
_PAGING = frozenset({"_count", "_cursor"})


def _db() -> Database:
    database: Database = current_app.extensions["bulkhead.db"]
    return database


def _keep(rtype: str, summary: str | None, elements: tuple[str, ...]) -> frozenset[str] | None:
    if summary == "text":
        return frozenset({"text"}) | mandatory_elements(rtype)
    if summary == "data":
        return element_names(rtype) - {"text"}
    if not elements:
        return None
    names = {e.split(".", 1)[1] if "." in e and e.split(".", 1)[0] == rtype else e for e in elements}
    return frozenset(n for n in names if "." not in n)


def _link(base: str, types: list[str], system: bool, pairs: list[tuple[str, str]]) -> str:
    path = base if system else f"{base}/{types[0]}"
    query = urlencode(pairs)
    return f"{path}?{query}" if query else path


def _entries(
    base: str, result: SearchResult, keep_of: dict[str, frozenset[str] | None]
) -> tuple[list[dict[str, Any]], list[bytes | None]]:
    entries: list[dict[str, Any]] = []
    raws: list[bytes | None] = []
    if result.warnings:
        outcome = operation_outcome(result.warnings)
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
        raws.append(None)
    groups: list[tuple[str, list[StoredVersion]]] = [("match", result.matches), ("include", result.included)]
    for mode, versions in groups:
        for v in versions:
            raw = v.raw
            keep = keep_of.get(v.resource_type) if mode == "match" else None
            if raw is not None and keep is not None:
                raw = subset(raw, keep)
            entries.append(
                {
                    "fullUrl": f"{base}/{v.resource_type}/{v.resource_id}",
                    "resource": "__RAW__",
                    "search": {"mode": mode},
                }
            )
            raws.append(raw)
    return entries, raws


def run(partition: str, typed: FhirRequest, *, system: bool = False) -> Response:
    """Run the typed request's search in ``partition`` and answer with a searchset Bundle."""
    settings = current_app.config["BULKHEAD_SETTINGS"]
    query = typed.search
    assert query is not None
    types = list(query.types)
    base = base_url(partition)
    with _db().unit_of_work(partition) as uow:
        result = search(
            uow,
            query,
            base=base,
            default_count=int(settings.default_page_size),
            include_limit=int(settings.max_page_size),
        )
    applied = [(k, v) for k, v in result.applied if k not in _PAGING]
    if system and len(types) != len(resource_types()):
        applied.insert(0, ("_type", ",".join(types)))
    paging = [("_count", str(query.count))] if query.count is not None else []
    links = [{"relation": "self", "url": _link(base, types, system, [*applied, *paging])}]
    if query.cursor:
        links[0]["url"] = _link(base, types, system, [*applied, *paging, ("_cursor", query.cursor)])
    for relation, token in (("next", result.next_cursor), ("previous", result.previous_cursor)):
        if token:
            links.append(
                {
                    "relation": relation,
                    "url": _link(base, types, system, [*applied, *paging, ("_cursor", token)]),
                }
            )
    keep_of = {t: _keep(t, query.summary, query.elements) for t in types}
    entries, raws = _entries(base, result, keep_of)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    return fhir_response(render_bundle(bundle, entries, raws))


@bp.get("/<rtype:rtype>")
def search_type(partition: str, rtype: str) -> Response:
    """Search one resource type (GET)."""
    return run(partition, current_request())


@bp.post("/<rtype:rtype>/_search")
def search_type_post(partition: str, rtype: str) -> Response:
    """Search one resource type with form-encoded parameters (POST)."""
    return run(partition, current_request())


@bp.get("/")
def search_system(partition: str) -> Response:
    """Search several types (``_type``) or all of them with parameters common to every resource."""
    return run(partition, current_request(), system=True)


@bp.post("/_search")
def search_system_post(partition: str) -> Response:
    """Search several types with form-encoded parameters (POST)."""
    return run(partition, current_request(), system=True)
