"""Read a request into its typed form the way the server does (routing, then ``services.parse``), with the
built-in search registry: what the authorizer judges, without running anything."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask

from services.parse import RequestParts, bare_endpoint, read_request
from services.requests import FhirRequest, Need
from storage.search import builtin_registry

ROOT = "http://bulkhead.test"


def typed_request(
    app: Flask,
    method: str,
    path: str,
    query: dict[str, list[str]] | list[tuple[str, str]] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> FhirRequest:
    """Route ``method path`` through the app's URL map and read the typed request from its parts."""
    adapter = app.url_map.bind("bulkhead.test")
    endpoint, view_args = adapter.match(path, method=method)
    pairs = list(query) if isinstance(query, list) else []
    if isinstance(query, dict):
        pairs = [(k, v) for k, values in query.items() for v in values]
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    parts = RequestParts(
        endpoint=bare_endpoint(endpoint),
        method=method,
        partition=str(view_args.get("partition", "default")),
        view_args=view_args,
        args=tuple(pairs),
        headers=headers or {},
        body=raw,
        mimetype="application/fhir+json" if raw else "",
        roots=(ROOT,),
    )
    return read_request(parts, builtin_registry)


def needs(
    app: Flask, method: str, path: str, query: Any = None, body: Any = None, headers: Any = None
) -> set[Need]:
    """Return the permissions the typed request of ``method path`` needs."""
    return set(typed_request(app, method, path, query, body, headers).needs)
