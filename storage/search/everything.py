"""The rows of ``Patient/$everything``: the patients and the resources of their Patient compartment.

One keyset-paged query in the unit of work's partition: the patients themselves, united with every current
resource whose compartment parameters (``core/data/patient_compartment.json``: ``Observation.subject``,
``Encounter.patient`` ...) reference one of them, read from the reference index. ``_type`` narrows the
types, ``_since`` the last update, and ``start``/``end`` the care dates: a resource whose ``date`` parameter
indexes a date outside the range is left out, one without a care date stays in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, or_, select, union

from core.exportspec import patient_compartment
from storage.models import ResourceRow
from storage.search.tables import date_index, reference_index

if TYPE_CHECKING:
    from storage.versions import PartitionSession, StoredVersion

#: The search parameter that carries a resource's care date, where its type defines one.
CARE_DATE = "date"


@dataclass(frozen=True)
class CareRange:
    """The care dates ``start``/``end`` ask for (either may be open)."""

    start: datetime | None = None
    end: datetime | None = None


def compartment_types() -> frozenset[str]:
    """Return every type ``$everything`` may return: Patient and the types of its compartment."""
    return frozenset({"Patient", *patient_compartment()})


def _members(pid: int, patients: Sequence[str] | None, types: Collection[str]) -> Any:
    ref = reference_index.alias()
    links = [
        and_(ref.c.resource_type == rtype, ref.c.param.in_(list(params)))
        for rtype, params in sorted(patient_compartment().items())
        if rtype in types and rtype != "Patient"
    ]
    if not links:
        return None
    where = [
        ref.c.partition_id == pid,
        ref.c.target_type == "Patient",
        ref.c.url.is_(None),
        or_(*links),
    ]
    if patients is not None:
        where.append(ref.c.target_id.in_(list(patients)))
    return select(ref.c.surrogate_id.label("sid")).where(*where)


def _patients(pid: int, patients: Sequence[str] | None) -> Any:
    where = [
        ResourceRow.partition_id == pid,
        ResourceRow.resource_type == "Patient",
        ResourceRow.is_history.is_(False),
    ]
    if patients is not None:
        where.append(ResourceRow.resource_id.in_(list(patients)))
    return select(ResourceRow.surrogate_id.label("sid")).where(*where)


def _in_care_range(pid: int, care: CareRange) -> Any:
    dates = date_index.alias()
    own = [
        dates.c.partition_id == pid,
        dates.c.surrogate_id == ResourceRow.surrogate_id,
        dates.c.param == CARE_DATE,
    ]
    overlapping = list(own)
    if care.start is not None:
        overlapping.append(dates.c.high >= care.start)
    if care.end is not None:
        overlapping.append(dates.c.low <= care.end)
    return or_(~exists().where(*own), exists().where(*overlapping))


def everything_page(
    uow: PartitionSession,
    patients: Sequence[str] | None,
    types: Collection[str],
    *,
    since: datetime | None = None,
    care: CareRange | None = None,
    after: int = 0,
    limit: int = 50,
) -> list[StoredVersion]:
    """Return up to ``limit`` current resources of the patients' compartments (every patient's when
    ``patients`` is None) with a surrogate id above ``after``, in surrogate-id order."""
    pid = uow.resources.partition_id()
    if pid is None or limit <= 0:
        return []
    parts: list[Any] = []
    if "Patient" in types:
        parts.append(_patients(pid, patients))
    members = _members(pid, patients, types)
    if members is not None:
        parts.append(members)
    if not parts:
        return []
    combined: Any = union(*parts) if len(parts) > 1 else parts[0]
    candidates = combined.subquery()
    where = [
        ResourceRow.surrogate_id == candidates.c.sid,
        ResourceRow.partition_id == pid,
        ResourceRow.is_history.is_(False),
        ResourceRow.is_deleted.is_(False),
        ResourceRow.resource_type.in_(sorted(types)),
        ResourceRow.surrogate_id > after,
    ]
    if since is not None:
        where.append(ResourceRow.last_updated >= since)
    if care is not None and (care.start is not None or care.end is not None):
        where.append(_in_care_range(pid, care))
    stmt = (
        select(ResourceRow.surrogate_id)
        .select_from(candidates)
        .join(ResourceRow, ResourceRow.surrogate_id == candidates.c.sid)
        .where(*where)
        .order_by(ResourceRow.surrogate_id)
        .limit(limit)
    )
    ids = list(uow.session.scalars(stmt))
    return uow.resources.by_surrogate_ids(ids) if ids else []


__all__ = ["CARE_DATE", "CareRange", "compartment_types", "everything_page"]
