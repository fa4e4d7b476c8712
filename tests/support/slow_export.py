"""The real export, slowed down: each export processing job waits 0.3 s (heartbeating) before it runs.

Loaded into worker and orchestrator processes with ``--module tests.support.slow_export`` so that a test can
kill a worker while export processing jobs are certainly running. The planner, the processor and the
manifest are the real ones (``orchestrator/export.py``, ``workers/export.py``).
"""

from __future__ import annotations

import time
from typing import Any

from core.jobs import JobInfo
from orchestrator.export import finish_export, plan_export
from orchestrator.registry import planner_for, register_planner
from workers.export import process_export
from workers.registry import ProcessingContext, register_processor

KIND = "export"
DELAY_SECONDS = 0.3


def slow_process_export(ctx: ProcessingContext, job: JobInfo) -> dict[str, Any]:
    """Wait ``DELAY_SECONDS`` (reporting progress), then run the real export processor."""
    deadline = time.monotonic() + DELAY_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        ctx.heartbeat({})
    return process_export(ctx, job)


register_processor(KIND, slow_process_export)
if planner_for(KIND) is None:
    register_planner(KIND, plan_export, finish_export)
