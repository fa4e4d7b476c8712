"""Workers: the Dramatiq broker, middleware, the job runtime and one module per operation's processor."""

from __future__ import annotations

from workers.broker import MessageSender, Outbox, make_broker, outbox_for
from workers.registry import (
    ProcessFunction,
    ProcessingContext,
    Processor,
    load_operation_modules,
    processor_for,
    queue_for,
    register_processor,
)

__all__ = [
    "MessageSender",
    "Outbox",
    "ProcessFunction",
    "ProcessingContext",
    "Processor",
    "load_operation_modules",
    "make_broker",
    "outbox_for",
    "processor_for",
    "queue_for",
    "register_processor",
]
