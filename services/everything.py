"""``Patient/[id]/$everything`` and ``Patient/$everything``: read the request, and answer with its page.

The parameters of R4's definition (``_since``, ``_type``, ``_count``, ``start``, ``end``) come from the query
or, for a POST, from a ``Parameters`` body too; anything else is a 400. The answer is a searchset Bundle of
the stored bytes, paged by surrogate id (``_cursor``), in the URL's partition only: references to patients of
another partition are never followed, because the compartment is read from this partition's index rows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from core.errors import Gone, InvalidRequest, NotFound
from core.fhirdates import parse_instant, parse_range
from core.fhirjson import dumps
from core.urlvalues import bounded_int, capped_int
from services.render import render_bundle
from services.request_parts import Registry, RequestParts, json_object, refuse_unknown_params, typed
from services.requests import Everything, FhirRequest, Interaction
from storage import UnitOfWork
from storage.search.everything import CareRange, compartment_types, everything_page

_PARAMS = frozenset({"_since", "_type", "_count", "start", "end", "_cursor"})
DEFAULT_COUNT = 50


def _body_pairs(parts: RequestParts) -> list[tuple[str, str]]:
    """Return a POST's ``Parameters`` as (name, value) pairs (an empty body has none)."""
    if parts.method != "POST" or not parts.body.strip():
        return []
    body = json_object(parts)
    if body.get("resourceType") != "Parameters":
        raise InvalidRequest("$everything takes a Parameters body")
    pairs = []
    for item in body.get("parameter") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest("Each parameter of $everything needs a name")
        values = [v for k, v in item.items() if k.startswith("value")]
        if len(values) != 1 or not isinstance(values[0], str | int) or isinstance(values[0], bool):
            raise InvalidRequest(f"The parameter {item['name']!r} of $everything needs one simple value")
        pairs.append((item["name"], str(values[0])))
    return pairs


def _types(values: list[str]) -> tuple[str, ...]:
    allowed = compartment_types()
    names = sorted({t.strip() for value in values for t in value.split(",") if t.strip()})
    outside = [t for t in names if t not in allowed]
    if outside:
        raise InvalidRequest(f"_type names types outside the Patient compartment: {', '.join(outside)}")
    return tuple(names) if names else tuple(sorted(allowed))


def _one(pairs: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise InvalidRequest(f"$everything takes {name} once")
    return values[0] if values else None


def read_everything(parts: RequestParts, _registry: Registry) -> FhirRequest:
    """Read a ``$everything`` request (instance level when the route names a patient)."""
    refuse_unknown_params(parts, _PARAMS, "$everything")
    pairs = [(k, v) for k, v in parts.args if k in _PARAMS] + _body_pairs(parts)
    unknown = sorted({k for k, _ in pairs if k not in _PARAMS})
    if unknown and not parts.lenient:
        raise InvalidRequest(f"$everything takes no parameter {', '.join(map(repr, unknown))}")
    since, start, end = (_one(pairs, n) for n in ("_since", "start", "end"))
    count, cursor = _one(pairs, "_count"), _one(pairs, "_cursor")
    spec = Everything(
        patient_id=str(parts.view_args["rid"]) if "rid" in parts.view_args else None,
        types=_types([v for k, v in pairs if k == "_type"]),
        since=parse_instant(since) if since is not None else None,
        start=parse_range(start)[0] if start is not None else None,
        end=parse_range(end)[1] if end is not None else None,
        count=max(1, capped_int(count, "_count", parts.max_page_size))
        if count is not None
        else DEFAULT_COUNT,
        after=bounded_int(cursor, "_cursor") if cursor is not None else 0,
        pairs=tuple((k, v) for k, v in pairs if k in _PARAMS and k not in {"_cursor", "_count"}),
    )
    return typed(parts, Interaction.EVERYTHING, resource_type="Patient", everything=spec)


def _link(base: str, spec: Everything, after: int | None) -> str:
    path = (
        f"{base}/Patient/{spec.patient_id}/$everything" if spec.patient_id else f"{base}/Patient/$everything"
    )
    query = [*spec.pairs, ("_count", str(spec.count))]
    if after:
        query.append(("_cursor", str(after)))
    return f"{path}?{urlencode(query)}"


def everything_bundle(uow: UnitOfWork, spec: Everything, base: str) -> bytes:
    """Return one page of the compartment as a searchset Bundle (404 unknown patient, 410 deleted)."""
    patients = None
    if spec.patient_id is not None:
        stored = uow.resources.current("Patient", spec.patient_id)
        if stored is None:
            raise NotFound(f"Patient/{spec.patient_id} is not known")
        if stored.deleted:
            raise Gone(f"Patient/{spec.patient_id} was deleted")
        patients = [spec.patient_id]
    rows = everything_page(
        uow,
        patients,
        spec.types,
        since=spec.since,
        care=CareRange(spec.start, spec.end),
        after=spec.after,
        limit=spec.count + 1,
    )
    page, more = rows[: spec.count], len(rows) > spec.count
    links = [{"relation": "self", "url": _link(base, spec, spec.after)}]
    if more:
        links.append({"relation": "next", "url": _link(base, spec, page[-1].surrogate_id)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    entries = [
        {
            "fullUrl": f"{base}/{v.resource_type}/{v.resource_id}",
            "resource": "__RAW__",
            "search": {"mode": "match"},
        }
        for v in page
    ]
    if not more and spec.after == 0:
        bundle["total"] = len(page)
    if not page:
        return dumps(bundle)
    return render_bundle(bundle, entries, [v.raw for v in page])


__all__ = ["DEFAULT_COUNT", "everything_bundle", "read_everything"]
