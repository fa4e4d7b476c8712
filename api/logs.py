"""Logging set-up: plain text or JSON lines, always with partition and job id when known."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar

from core.settings import Settings

current_partition: ContextVar[str | None] = ContextVar("bulkhead_partition", default=None)
current_job: ContextVar[str | None] = ContextVar("bulkhead_job", default=None)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.partition = getattr(record, "partition", None) or current_partition.get() or "-"
        record.job_id = getattr(record, "job_id", None) or current_job.get() or "-"
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "partition": getattr(record, "partition", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_logging(settings: Settings) -> None:
    """Configure the root logger once for this process."""
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    if settings.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [partition=%(partition)s job=%(job_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
