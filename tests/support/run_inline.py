"""Run a bulk operation's planner, processors and finish in this thread (real PostgreSQL and S3, no queue).

Pipeline tests use it to check what an operation stores and reports independently of the job machinery;
tests with worker processes go through the real machinery.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from core.settings import Settings
from storage import Database


@dataclass
class InlineContext:
    """The context planners and processors get: partition, job id, settings, database, object store."""

    partition: str
    job_id: str
    settings: Settings
    database: Database
    object_store: Any
    progress: list[dict[str, Any]] = field(default_factory=list)
    cancel_after: int | None = None

    def heartbeat(self, progress: dict[str, Any]) -> None:
        """Record progress; raise once ``cancel_after`` heartbeats have been seen."""
        self.progress.append(progress)
        if self.cancel_after is not None and len(self.progress) >= self.cancel_after:
            raise Cancelled


class Cancelled(Exception):
    """Raised by a heartbeat when the test asks for a cancel."""


def run_inline(
    settings: Settings,
    database: Database,
    store: Any,
    partition: str,
    definition: dict[str, Any],
    plan: Callable[[Any, Any], Iterable[dict[str, Any]]],
    process: Callable[[Any, Any], dict[str, Any]],
    finish: Callable[[Any, Any, list[Any]], dict[str, Any]],
    *,
    repeat: Iterable[int] = (),
    job_id: str | None = None,
) -> dict[str, Any]:
    """Plan, process every part (the parts in ``repeat`` twice, as a retried chunk) and finish one job."""
    group_id = job_id or secrets.token_hex(16)
    ctx = InlineContext(partition, group_id, settings, database, store)
    group = SimpleNamespace(id=group_id, definition=definition, partition=partition)
    again = set(repeat)
    parts = []
    for n, part in enumerate(plan(ctx, group)):
        job = SimpleNamespace(id=f"{group_id}-{n}", group_id=group_id, definition=part, partition=partition)
        result = process(ctx, job)
        if n in again:
            result = process(ctx, job)
        parts.append(SimpleNamespace(result=result, definition=part))
    return finish(ctx, group, parts)
