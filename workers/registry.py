"""Operation plug-ins on the worker side: a Processor per job kind, and the queue its messages go to.

An operation registers itself from its own module (``workers/export.py`` calls
``register_processor("export", process_export)``); ``load_operation_modules`` imports the built-in ones and
those ``BULKHEAD_JOB_MODULES`` or ``bulkhead worker --module`` name.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from core.jobs import JobInfo
from core.settings import Settings
from storage import Database
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

#: Modules that register the operations Bulkhead ships (imported by every worker and orchestrator).
BUILTIN_OPERATION_MODULES: tuple[str, ...] = (
    "workers.export",
    "workers.import_",
    "workers.reindex",
    "workers.bulk_edit",
)
_QUEUE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class ProcessingContext(Protocol):
    """What the job machinery hands a processor for one processing job."""

    partition: str
    job_id: str
    group_id: str
    settings: Settings
    database: Database
    object_store: ObjectStore

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Report progress; raise JobCancelled when cancel was requested, JobFenced when taken over."""
        ...


class ProcessFunction(Protocol):
    """Run one processing job and return its result JSON (idempotent: a retry overwrites, never adds)."""

    def __call__(self, ctx: ProcessingContext, job: JobInfo, /) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Processor:
    """A registered operation: its kind, the function that runs one processing job, and its queue."""

    kind: str
    process: ProcessFunction
    queue: str


_PROCESSORS: dict[str, Processor] = {}
_LISTENERS: list[Callable[[Processor], None]] = []


def register_processor(kind: str, process: ProcessFunction, *, queue: str | None = None) -> Processor:
    """Register the processor of ``kind``; its messages go to ``queue`` (default: the kind's name)."""
    name = queue or kind
    if not _QUEUE_NAME.fullmatch(name):
        raise ValueError(f"Invalid queue name {name!r}: use lower-case letters, digits, '_' and '-'")
    processor = Processor(kind=kind, process=process, queue=name)
    _PROCESSORS[kind] = processor
    for listener in list(_LISTENERS):
        listener(processor)
    return processor


def processor_for(kind: str) -> Processor | None:
    """Return the processor registered for ``kind``, if any."""
    return _PROCESSORS.get(kind)


def registered_processors() -> list[Processor]:
    """Return every registered processor."""
    return list(_PROCESSORS.values())


def queue_for(kind: str) -> str:
    """Return the queue that processing jobs of ``kind`` go to."""
    processor = _PROCESSORS.get(kind)
    return processor.queue if processor is not None else kind


def on_register(listener: Callable[[Processor], None]) -> None:
    """Call ``listener`` for every processor registered from now on (and every one registered so far)."""
    _LISTENERS.append(listener)
    for processor in list(_PROCESSORS.values()):
        listener(processor)


def load_operation_modules(extra: Iterable[str] = ()) -> list[str]:
    """Import the built-in operation modules and ``extra`` ones (each registers itself); return names."""
    names = [*BUILTIN_OPERATION_MODULES, *(m.strip() for m in extra if m.strip())]
    loaded: list[str] = []
    for name in dict.fromkeys(names):
        importlib.import_module(name)
        loaded.append(name)
    log.debug("operation modules loaded: %s", ", ".join(loaded))
    return loaded


def modules_from_setting(value: str) -> list[str]:
    """Split a comma- or space-separated list of module names (the ``job_modules`` setting)."""
    return [m for m in re.split(r"[,\s]+", value) if m]
