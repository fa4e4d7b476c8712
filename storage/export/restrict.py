"""Which rows of a type an export may return: ``_typeFilter`` matches and Patient-compartment membership.

Each function returns selects of surrogate ids, all scoped to one partition (the search indexes of
``storage.search``); the reader keeps a row only when it is in every select it is given. Deleted resources
have no index rows, so ``deleted_filter`` decides their compartment from their last live version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Select, select

from core.errors import InvalidRequest
from core.exportspec import SYSTEM, ExportSpec, patient_compartment
from storage.models import ResourceRow
from storage.search import compartment_members, index_rows_for, matching_surrogate_ids
from storage.uow import UnitOfWork


def patient_select(pid: int, patients: tuple[str, ...]) -> Select[Any]:
    """Select the current Patient rows with these ids (all Patients when ``patients`` is empty)."""
    conds = [
        ResourceRow.partition_id == pid,
        ResourceRow.resource_type == "Patient",
        ResourceRow.is_history.is_(False),
    ]
    if patients:
        conds.append(ResourceRow.resource_id.in_(list(patients)))
    return select(ResourceRow.surrogate_id).where(*conds)


def compartment_select(uow: UnitOfWork, pid: int, rtype: str, patients: tuple[str, ...]) -> Select[Any]:
    """Select the rows of ``rtype`` in the Patient compartment of ``patients`` (of any patient if empty)."""
    if rtype == "Patient":
        return patient_select(pid, patients)
    params = patient_compartment().get(rtype)
    if not params:
        raise InvalidRequest(f"{rtype} is not in the Patient compartment")
    return compartment_members(uow.session, pid, rtype, params, "Patient", list(patients) or None)


def type_filter_select(
    uow: UnitOfWork, pid: int, rtype: str, queries: list[list[tuple[str, str]]]
) -> Select[Any]:
    """Select the rows of ``rtype`` matching any of the ``_typeFilter`` queries (in the partition only)."""
    return matching_surrogate_ids(uow.session, pid, rtype, queries)


def restrictions(uow: UnitOfWork, pid: int, rtype: str, spec: ExportSpec) -> list[Select[Any]]:
    """Return the selects a row of ``rtype`` must be in for this export (none at system level, no filter)."""
    out: list[Select[Any]] = []
    if spec.level != SYSTEM:
        out.append(compartment_select(uow, pid, rtype, spec.patients))
    queries = spec.type_filters.get(rtype)
    if queries:
        out.append(type_filter_select(uow, pid, rtype, queries))
    return out


def _last_live(uow: UnitOfWork, pid: int, rtype: str, rid: str) -> bytes | None:
    r = ResourceRow
    raw = uow.session.scalar(
        select(r.raw)
        .where(
            r.partition_id == pid,
            r.resource_type == rtype,
            r.resource_id == rid,
            r.is_deleted.is_(False),
            r.raw.is_not(None),
        )
        .order_by(r.version.desc())
        .limit(1)
    )
    return raw.encode() if isinstance(raw, str) else raw


def deleted_filter(uow: UnitOfWork, pid: int, spec: ExportSpec) -> Callable[[str, str], bool] | None:
    """Return whether a deleted resource belongs in a Patient/Group export's ``deleted`` (None: all do).

    A deleted resource belongs when its last live version was in the Patient compartment of the export's
    patients (of any patient when the export names none), read through the same compartment parameters.
    """
    if spec.level == SYSTEM:
        return None
    patients = set(spec.patients)
    compartment = patient_compartment()

    def keep(rtype: str, rid: str) -> bool:
        if rtype == "Patient":
            return not patients or rid in patients
        params = compartment.get(rtype)
        raw = _last_live(uow, pid, rtype, rid) if params else None
        if not params or raw is None:
            return False
        rows = index_rows_for(rtype, 0, pid, orjson.loads(raw)).by_table["reference"]
        return any(
            row[2] in params
            and row[4] == "Patient"
            and row[6] is None
            and (not patients or row[5] in patients)
            for row in rows
        )

    return keep
