"""Dramatiq middleware of the job machinery."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from core.logs import current_job, current_partition


class JobLogContext(Middleware):
    """Put the message's partition and job id on every log line written while it is processed."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[Token[str | None], Token[str | None]]] = {}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        """Set the log context of this worker thread from the message's keyword arguments."""
        kwargs = message.kwargs or {}
        partition = kwargs.get("partition")
        job_id = kwargs.get("job_id")
        self._tokens[message.message_id] = (
            current_partition.set(str(partition) if partition is not None else None),
            current_job.set(str(job_id) if job_id is not None else None),
        )

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Clear the log context of this worker thread."""
        self._clear(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Clear the log context of this worker thread."""
        self._clear(message)

    def _clear(self, message: MessageProxy) -> None:
        tokens = self._tokens.pop(message.message_id, None)
        if tokens is not None:
            current_job.reset(tokens[1])
            current_partition.reset(tokens[0])
