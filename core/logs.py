"""Logging for every process: plain text or JSON lines, always with the partition and job id when known.

The API sets ``current_partition`` and ``current_job`` (context variables: each request and each worker
thread has its own) for the request it serves; the job machinery sets them around every message
(``job_log_context``). ``LogContextFilter`` copies them onto records whose call did not name them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from core.settings import Settings

current_partition: ContextVar[str | None] = ContextVar("bulkhead_partition", default=None)
current_job: ContextVar[str | None] = ContextVar("bulkhead_job", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [partition=%(partition)s job=%(job_id)s] %(message)s"


@contextmanager
def job_log_context(partition: str | None, job_id: str | None) -> Iterator[None]:
    """Name ``partition`` and ``job_id`` on every log line written inside the block (this thread only)."""
    p = current_partition.set(partition)
    j = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(j)
        current_partition.reset(p)


class LogContextFilter(logging.Filter):
    """Add ``partition`` and ``job_id`` to a record from the context when the call did not pass them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill the record's partition and job id; keep every record."""
        if getattr(record, "partition", None) in (None, "-"):
            record.partition = current_partition.get() or "-"
        if getattr(record, "job_id", None) in (None, "-"):
            record.job_id = current_job.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, process, partition, job id, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        body = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "partition": getattr(record, "partition", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(settings: Settings) -> None:
    """Log to stderr, as text or JSON lines, with the partition and job id on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(LogContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("pika").setLevel(logging.WARNING)


__all__ = [
    "JsonFormatter",
    "LogContextFilter",
    "configure_logging",
    "current_job",
    "current_partition",
    "job_log_context",
]
