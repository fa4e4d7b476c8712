"""Which rows of a type an export may return: ``_typeFilter`` matches and Patient-compartment membership.

Each function returns selects of surrogate ids, all scoped to one partition; the reader keeps a row only
when it is in every select it is given.
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from sqlalchemy import Select, select

from core.errors import InvalidRequest
from core.exportspec import SYSTEM, ExportSpec, patient_compartment
from storage.models import ResourceRow
from storage.uow import UnitOfWork


def _search_function(name: str, feature: str) -> Any:
    search = importlib.import_module("storage.search")
    function = getattr(search, name, None)
    if function is None:
        raise InvalidRequest(f"{feature} need the search indexes, which this server does not have")
    return function


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
    members = _search_function("compartment_members", "Patient-compartment exports")
    return cast("Select[Any]", members(uow.session, pid, rtype, params, "Patient", list(patients) or None))


def type_filter_select(
    uow: UnitOfWork, pid: int, rtype: str, queries: list[list[tuple[str, str]]]
) -> Select[Any]:
    """Select the rows of ``rtype`` matching any of the ``_typeFilter`` queries."""
    matching = _search_function("matching_surrogate_ids", "_typeFilter")
    return cast("Select[Any]", matching(uow.session, pid, rtype, queries))


def restrictions(uow: UnitOfWork, pid: int, rtype: str, spec: ExportSpec) -> list[Select[Any]]:
    """Return the selects a row of ``rtype`` must be in for this export (none at system level, no filter)."""
    out: list[Select[Any]] = []
    if spec.level != SYSTEM:
        out.append(compartment_select(uow, pid, rtype, spec.patients))
    queries = spec.type_filters.get(rtype)
    if queries:
        out.append(type_filter_select(uow, pid, rtype, queries))
    return out
