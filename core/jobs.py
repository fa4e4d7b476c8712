"""Bulk jobs as values: statuses, a job row as the other layers see it, and the errors of job processing.

A bulk operation (export, import, reindex, bulk update, bulk delete) is one **group job** (the orchestrator's
job, whose ``group_id`` is its own ``id``) and the **processing jobs** its planner splits it into. Group jobs
go ``queued → planning → running → completed | failed | cancelled``; processing jobs go
``queued → running → completed | failed | cancelled`` (and back to ``queued`` when they are retried or
taken over from a worker that stopped answering).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from core.errors import BulkheadError, Conflict, Forbidden, InvalidRequest, Issue, NotFound, Unprocessable
from core.outcome import operation_outcome


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    PLANNING = "planning"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses of a job that still has work ahead of it.
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.PLANNING, JobStatus.RUNNING})
#: Statuses a job never leaves.
TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


#: The priority of the processing jobs of a large job: they run in the background lane (docs/architecture.md).
BACKGROUND_PRIORITY = -1


@dataclass(frozen=True)
class JobCaller:
    """On whose behalf a job is submitted or looked up.

    ``client_id`` is recorded on the group jobs the caller submits (None when authentication is off: every
    caller is then the same anonymous client). A lookup finds only jobs recorded with the caller's own client
    id, unless ``every_client`` is set: an administrator (a token for every partition), or the job machinery.
    """

    client_id: str | None
    every_client: bool = False


#: The caller when authentication is off: one anonymous client, owner of every job submitted then.
ANONYMOUS = JobCaller(None)
#: The job machinery itself (planners following up on a job): sees every client's jobs of a partition.
MACHINERY = JobCaller(None, every_client=True)


@dataclass(frozen=True)
class JobInfo:
    """One row of the job table: a group job or one of its processing jobs."""

    id: str
    group_id: str
    kind: str
    partition: str
    definition: dict[str, Any]
    status: JobStatus
    priority: int = 0
    attempts: int = 0
    version: int = 0
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    request_url: str | None = None
    transaction_time: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    expires_at: datetime | None = None
    cancel_requested: bool = False
    max_attempts: int = 0
    ordinal: int = 0
    worker: str | None = None
    heartbeat_at: datetime | None = None
    client_id: str | None = None

    @property
    def is_group(self) -> bool:
        """Return True for the orchestrator (group) job of an operation."""
        return self.id == self.group_id


@dataclass(frozen=True)
class JobStatusView:
    """What a client may learn about a group job, derived from the group's rows when asked."""

    id: str
    kind: str
    partition: str
    state: JobStatus
    request_url: str | None
    transaction_time: datetime | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    expires_at: datetime | None
    parts: int
    parts_done: int
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    @property
    def progress_text(self) -> str:
        """Return a short human-readable progress line (for ``X-Progress``)."""
        if self.state in (JobStatus.QUEUED, JobStatus.PLANNING):
            return "planning" if self.state == JobStatus.PLANNING else "queued"
        text = f"{self.parts_done} of {self.parts} parts done"
        for name, value in sorted(self.progress.items()):
            text += f", {value} {name}"
        return text

    @property
    def http_status(self) -> int:
        """Return the HTTP status that best reports a failed job (500 unless the request was at fault)."""
        return failure_status(self.error)


class JobInterrupted(BaseException):
    """Processing must stop now.

    A BaseException, so that ``except Exception`` in a processor cannot swallow it.
    """

    default_message = "The job was interrupted"

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class JobCancelled(JobInterrupted):
    """The client cancelled the job: stop, leave what was committed, report nothing more."""

    default_message = "The job was cancelled"


class JobFenced(JobInterrupted):
    """Another worker took this job over (its version moved on): stop without writing anything more."""

    default_message = "The job was taken over by another worker"


class PermanentJobError(Exception):
    """A failure that retrying cannot fix: fail the job (and its group) at once with this message.

    ``code`` is the OperationOutcome issue code: ``exception`` (the default) reports a server-side failure
    (HTTP 500 when polled); ``invalid``, ``not-found`` or ``processing`` blame the request (400, 404, 422).
    """

    def __init__(self, message: str, *, code: str = "exception", issues: list[Issue] | None = None):
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue(diagnostics=message, code=code)]


def new_job_id() -> str:
    """Return a fresh, unguessable job id (32 hexadecimal characters)."""
    return uuid.uuid4().hex


def definition_hash(definition: dict[str, Any]) -> str:
    """Return the SHA-256 of a definition's canonical JSON (sorted keys): equal definitions, equal hashes."""
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()


def failure_outcome(message: str, code: str = "exception") -> dict[str, Any]:
    """Return the OperationOutcome of a job that failed for ``message``."""
    return operation_outcome([Issue(diagnostics=message, code=code)])


def outcome_of(exc: BaseException) -> dict[str, Any]:
    """Return the OperationOutcome that describes why ``exc`` failed a job."""
    if isinstance(exc, (BulkheadError, PermanentJobError)):
        return operation_outcome(exc.issues)
    return failure_outcome(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# Request errors keep their status when a job fails because of them; anything else is the server's failure.
_REQUEST_ERRORS: tuple[type[BulkheadError], ...] = (
    InvalidRequest,
    Forbidden,
    NotFound,
    Conflict,
    Unprocessable,
)
_STATUS_BY_CODE = {cls.code: cls.status for cls in _REQUEST_ERRORS}


def failure_status(outcome: dict[str, Any] | None) -> int:
    """Return the HTTP status of a failed job from its OperationOutcome's first error issue."""
    for issue in (outcome or {}).get("issue", []):
        if issue.get("severity") in ("error", "fatal"):
            return _STATUS_BY_CODE.get(str(issue.get("code")), 500)
    return 500
