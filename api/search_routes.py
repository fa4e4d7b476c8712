"""The search blueprint: ``GET [base]/[type]``, ``POST [base]/[type]/_search`` and system search.

Searchset Bundles embed the stored bytes of each resource (``api/bundles.render_bundle``); ``fullUrl``s are
absolute under the partition's base. Paging links carry an opaque keyset cursor (``_cursor``, see
``storage/search/paging.py``); ``next`` and ``previous`` repeat the applied search parameters.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from api.bundles import render_bundle
from api.errors import operation_outcome
from api.http import base_url, fhir_response
from core.errors import InvalidRequest, UnsupportedMediaType
from core.fhirelements import element_names, mandatory_elements, subset
from core.fhirtypes import resource_types
from storage import Database, StoredVersion
from storage.search import SearchResult, search

bp = Blueprint("search", __name__)
_FORM = "application/x-www-form-urlencoded"
_PAGING = frozenset({"_count", "_cursor"})


def _db() -> Database:
    database: Database = current_app.extensions["bulkhead.db"]
    return database


def _lenient() -> bool:
    for part in request.headers.get("Prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "lenient"
    return False


def _pairs(*, with_body: bool) -> list[tuple[str, str]]:
    pairs = list(request.args.items(multi=True))
    if with_body:
        if request.mimetype not in {_FORM, ""} and request.get_data(cache=True).strip():
            raise UnsupportedMediaType(f"POST _search takes {_FORM}, not {request.mimetype!r}")
        pairs.extend(request.form.items(multi=True))
    return pairs


def _system_types(pairs: list[tuple[str, str]]) -> list[str]:
    names = [t.strip() for name, value in pairs if name == "_type" for t in value.split(",") if t.strip()]
    unknown = [t for t in names if t not in resource_types()]
    if unknown:
        raise InvalidRequest(f"_type names unknown resource types: {', '.join(sorted(unknown))}")
    return sorted(set(names)) if names else sorted(resource_types())


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


def run(partition: str, types: list[str], pairs: list[tuple[str, str]], *, system: bool = False) -> Response:
    """Search ``types`` in ``partition`` and answer with a searchset Bundle."""
    settings = current_app.config["BULKHEAD_SETTINGS"]
    base = base_url(partition)
    with _db().unit_of_work(partition) as uow:
        result = search(
            uow,
            types,
            pairs,
            base=base,
            lenient=_lenient(),
            default_count=int(settings.default_page_size),
            max_count=int(settings.max_page_size),
            include_limit=int(settings.max_page_size),
        )
    applied = [(k, v) for k, v in result.applied if k not in _PAGING]
    if system and any(name == "_type" for name, _ in pairs):
        applied.insert(0, ("_type", ",".join(types)))
    count = next((v for k, v in pairs if k == "_count"), None)
    paging = [("_count", count)] if count else []
    cursor = next((v for k, v in pairs if k == "_cursor"), None)
    links = [{"relation": "self", "url": _link(base, types, system, [*applied, *paging])}]
    if cursor:
        links[0]["url"] = _link(base, types, system, [*applied, *paging, ("_cursor", cursor)])
    for relation, token in (("next", result.next_cursor), ("previous", result.previous_cursor)):
        if token:
            links.append(
                {
                    "relation": relation,
                    "url": _link(base, types, system, [*applied, *paging, ("_cursor", token)]),
                }
            )
    summary = next((v for k, v in pairs if k == "_summary"), None)
    elements = tuple(e.strip() for k, v in pairs if k == "_elements" for e in v.split(",") if e.strip())
    keep_of = {t: _keep(t, summary, elements) for t in types}
    entries, raws = _entries(base, result, keep_of)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    return fhir_response(render_bundle(bundle, entries, raws))


@bp.get("/<rtype:rtype>")
def search_type(partition: str, rtype: str) -> Response:
    """Search one resource type (GET)."""
    return run(partition, [rtype], _pairs(with_body=False))


@bp.post("/<rtype:rtype>/_search")
def search_type_post(partition: str, rtype: str) -> Response:
    """Search one resource type with form-encoded parameters (POST)."""
    return run(partition, [rtype], _pairs(with_body=True))


@bp.get("/")
def search_system(partition: str) -> Response:
    """Search several types (``_type``) or all of them with parameters common to every resource."""
    pairs = _pairs(with_body=False)
    return run(partition, _system_types(pairs), pairs, system=True)


@bp.post("/_search")
def search_system_post(partition: str) -> Response:
    """Search several types with form-encoded parameters (POST)."""
    pairs = _pairs(with_body=True)
    return run(partition, _system_types(pairs), pairs, system=True)
