"""Index rows extracted before a write's transaction opens, so that no FHIRPath runs while it is open.

A partition's own SearchParameters may be costly to evaluate (within the budgets of
``core/fhirpath_limits.py``); evaluated inside the write's transaction, that cost would hold the
transaction, its row locks and a pooled connection. ``prepare_index`` extracts a resource's rows from its
content first, with the partition's registry as this process last saw it in a write (``remember``; read
in a short transaction of its own the first time), and ``storage.search.index.index_resource`` writes
them in the transaction once it has checked that the registry is still the partition's: when a
``$reindex`` changed the partition's parameters in between, the write raises ``StaleIndexRows`` (a
``Conflict``) after remembering the new registry, and the service extracts again and retries
(``services/rest.py``). Writes that cannot extract ahead (entries of a transaction Bundle, conditional
writes) extract in their transaction, within the budgets.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage.search.index import IndexRows, index_rows_for
from storage.search.registry import SearchRegistry, registry_for

if TYPE_CHECKING:
    from storage.versions import UnitsOfWork

log = logging.getLogger(__name__)
_REMEMBERED = 1024
_registries: OrderedDict[tuple[str, str], SearchRegistry] = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True)
class PreparedIndex:
    """A resource's index rows (partition and surrogate id not yet known) and the registry they came from."""

    registry: SearchRegistry
    rows: IndexRows

    @property
    def ahead(self) -> tuple[SearchRegistry, IndexRows]:
        """Return what ``index_resource`` takes as rows extracted ahead."""
        return self.registry, self.rows


def remember(database_url: str, partition: str, registry: SearchRegistry) -> None:
    """Remember ``registry`` as the one a write of ``partition`` found (for the next write's extraction)."""
    key = (database_url, partition)
    with _lock:
        _registries[key] = registry
        _registries.move_to_end(key)
        while len(_registries) > _REMEMBERED:
            _registries.popitem(last=False)


def _registry(database: UnitsOfWork, partition: str) -> SearchRegistry:
    url = str(database.engine.url)
    with _lock:
        found = _registries.get((url, partition))
    if found is not None:
        return found
    with database.unit_of_work(partition) as uow:
        registry = registry_for(uow.session, uow.resources.partition_id())
    remember(url, partition, registry)
    return registry


def prepare_index(
    database: UnitsOfWork, partition: str, resource_type: str, resource: dict[str, Any]
) -> PreparedIndex:
    """Extract the index rows of ``resource`` as it will be stored in ``partition``, outside a transaction."""
    registry = _registry(database, partition)
    rows = index_rows_for(resource_type, 0, 0, resource, registry=registry)
    if rows.skipped:
        log.warning(
            "%s in %s: not indexed, over the evaluation budget: %s",
            resource_type,
            partition,
            ", ".join(sorted(rows.skipped)),
            extra={"partition": partition},
        )
    return PreparedIndex(registry, rows)


__all__ = ["PreparedIndex", "prepare_index", "remember"]
