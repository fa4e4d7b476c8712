"""Operation plug-ins on the orchestrator side: a Planner per job kind.

A planner splits a group job into processing-job definitions (``plan``) and, once they all completed,
builds the group's result from theirs (``finish``). ``orchestrator/export.py`` calls
``register_planner("export", plan_export, finish_export)``.

``plan`` must be deterministic for the same group job: the machinery stores the plan and starts the group in
one transaction, and stores each definition once (by its hash), so planning again after a crash adds nothing.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from core.jobs import JobInfo
from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

#: Modules that register the planners Bulkhead ships (imported by every orchestrator).
BUILTIN_PLANNER_MODULES: tuple[str, ...] = (
    "orchestrator.export",
    "orchestrator.import_",
    "orchestrator.reindex",
    "orchestrator.bulk_edit",
)


class PlanningContext(Protocol):
    """What the job machinery hands a planner for one group job."""

    partition: str
    job_id: str
    group_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress while planning; raise JobCancelled when cancel was requested."""
        ...


class PlanFunction(Protocol):
    """Return the processing-job definitions of a group job (JSON objects; deterministic)."""

    def __call__(self, ctx: PlanningContext, job: JobInfo, /) -> Iterable[dict[str, Any]]: ...


class FinishFunction(Protocol):
    """Return the group's result JSON from its completed processing jobs (in plan order)."""

    def __call__(self, ctx: PlanningContext, job: JobInfo, parts: list[JobInfo], /) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Planner:
    """A registered operation's planning half."""

    kind: str
    plan: PlanFunction
    finish: FinishFunction


_PLANNERS: dict[str, Planner] = {}


def register_planner(kind: str, plan: PlanFunction, finish: FinishFunction) -> Planner:
    """Register how group jobs of ``kind`` are planned and finished."""
    planner = Planner(kind=kind, plan=plan, finish=finish)
    _PLANNERS[kind] = planner
    return planner


def planner_for(kind: str) -> Planner | None:
    """Return the planner registered for ``kind``, if any."""
    return _PLANNERS.get(kind)


def load_planner_modules(extra: Iterable[str] = ()) -> list[str]:
    """Import the built-in planner modules and ``extra`` ones (each registers itself); return their names."""
    names = [*BUILTIN_PLANNER_MODULES, *(m.strip() for m in extra if m.strip())]
    loaded: list[str] = []
    for name in dict.fromkeys(names):
        importlib.import_module(name)
        loaded.append(name)
    log.debug("planner modules loaded: %s", ", ".join(loaded))
    return loaded
