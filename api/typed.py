"""The typed request of the current HTTP request: read once (``services.parse``), kept for the request.

The authorizer judges it and the views run it; ``current_request()`` is the only way a view learns what
was asked. The search registry (a partition's own SearchParameters) is loaded only when a reader needs it.
"""

from __future__ import annotations

from flask import current_app, g, request

from api.http import server_roots
from core.partition import DEFAULT_PARTITION
from core.settings import Settings
from services.parse import RequestParts, bare_endpoint, read_request
from services.requests import FhirRequest
from storage import Database
from storage.search import SearchRegistry, registry_for

_FORM = "application/x-www-form-urlencoded"


def routed_partition() -> str:
    """Return the partition the router found in the URL (``default`` at the root)."""
    return str((request.view_args or {}).get("partition", DEFAULT_PARTITION))


def request_parts() -> RequestParts:
    """Return the parts of the current request that a typed request is read from."""
    settings: Settings = current_app.config["BULKHEAD_SETTINGS"]
    partition = routed_partition()
    max_entries = int(settings.max_transaction_entries)
    limits = current_app.extensions.get("bulkhead.limits")
    if limits is not None:
        own = limits.get(partition).max_transaction_entries
        max_entries = min(max_entries, own) if own is not None else max_entries
    form = tuple(request.form.items(multi=True)) if request.mimetype == _FORM else ()
    return RequestParts(
        endpoint=bare_endpoint(request.endpoint or ""),
        method=request.method,
        partition=partition,
        view_args=dict(request.view_args or {}),
        args=tuple(request.args.items(multi=True)),
        form=form,
        headers=dict(request.headers),
        body=request.get_data(cache=True) if request.method in {"POST", "PUT", "PATCH", "DELETE"} else b"",
        mimetype=request.mimetype,
        roots=server_roots(),
        max_page_size=int(settings.max_page_size),
        max_transaction_entries=max_entries,
    )


def _registry_loader(partition: str):  # type: ignore[no-untyped-def]
    loaded: list[SearchRegistry] = []

    def load() -> SearchRegistry:
        if not loaded:
            database: Database = current_app.extensions["bulkhead.db"]
            with database.unit_of_work(partition) as uow:
                loaded.append(registry_for(uow.session, uow.resources.partition_id()))
        return loaded[0]

    return load


def current_request() -> FhirRequest:
    """Return (and keep) the typed request of this request; the reader's errors are the client's (4xx)."""
    found: FhirRequest | None = g.get("bulkhead_request")
    if found is None:
        parts = request_parts()
        found = read_request(parts, _registry_loader(parts.partition))
        g.bulkhead_request = found
    return found


def has_reader() -> bool:
    """Return whether the routed endpoint is one a typed request is read for."""
    from services.parse import READERS

    return bare_endpoint(request.endpoint or "") in READERS
