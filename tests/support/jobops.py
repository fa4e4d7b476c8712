"""A test-only bulk operation, ``jobtest``, for exercising the job machinery with real processes.

Worker and orchestrator processes load it with ``--module tests.support.jobops`` (or
``BULKHEAD_JOB_MODULES``). The group definition says how the job behaves:

- ``parts``: how many processing jobs the plan has; ``lines``: lines each part writes (default 3);
- ``steps`` and ``step_seconds``: each part works ``steps`` steps of ``step_seconds``, reporting progress
  after each unless ``report`` is false (then only the machinery's timer heartbeats);
- ``plan_seconds``: planning takes this long (reporting progress every 0.1 s);
- ``fail_attempts``: the first N attempts of every part (or of ``fail_parts``) fail with a transient error;
- ``refuse_part``: that part fails permanently with an ``invalid`` OperationOutcome;
- ``refuse_plan``: planning fails permanently;
- ``write``: false for parts that write no object (the benchmark's no-op work).

Each part writes one object, ``{prefix}/{partition}/{group}/Part-{n}.ndjson``, whose key depends only on the
definition: a retried part overwrites its object. The result lists the object and its line count.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from core.jobs import JobInfo, PermanentJobError
from orchestrator.registry import PlanningContext, register_planner
from workers.registry import ProcessingContext, register_processor

KIND = "jobtest"


def plan(ctx: PlanningContext, job: JobInfo) -> Iterator[dict[str, Any]]:
    """Return one definition per part, after pretending to plan for ``plan_seconds``."""
    spec = job.definition
    if spec.get("refuse_plan"):
        raise PermanentJobError("This job cannot be planned", code="invalid")
    deadline = time.monotonic() + float(spec.get("plan_seconds", 0.0))
    while time.monotonic() < deadline:
        time.sleep(0.1)
        ctx.heartbeat({"planning": 1})
    fail_parts = spec.get("fail_parts")
    for n in range(int(spec.get("parts", 1))):
        yield {
            "n": n,
            "lines": int(spec.get("lines", 3)),
            "steps": int(spec.get("steps", 1)),
            "step_seconds": float(spec.get("step_seconds", 0.0)),
            "report": bool(spec.get("report", True)),
            "fail_attempts": int(spec.get("fail_attempts", 0))
            if fail_parts is None or n in fail_parts
            else 0,
            "refuse": spec.get("refuse_part") == n,
            "write": bool(spec.get("write", True)),
            "estimated_rows": int(spec.get("lines", 3)),  # the plan's size decides its lane
        }


def process(ctx: ProcessingContext, job: JobInfo) -> dict[str, Any]:
    """Work through the part's steps, then write its object; fail as the definition says."""
    spec = job.definition
    n = int(spec["n"])
    if spec.get("refuse"):
        raise PermanentJobError(f"Part {n} refuses to run", code="invalid")
    if job.attempts <= int(spec.get("fail_attempts", 0)):
        raise RuntimeError(f"part {n} failed on attempt {job.attempts}")
    for step in range(int(spec.get("steps", 1))):
        time.sleep(float(spec.get("step_seconds", 0.0)))
        if spec.get("report", True):
            ctx.heartbeat({"steps": step + 1})
    lines = int(spec.get("lines", 3))
    # Where the part ran: the worker's parent process (its pool) and this thread's nice value (its lane).
    ran = {"attempt": job.attempts, "ppid": os.getppid(), "nice": this_thread_nice()}
    if not spec.get("write", True):
        return {"count": lines, **ran}
    body = "".join(f'{{"part":{n},"line":{i}}}\n' for i in range(lines)).encode()
    key = ctx.object_store.ndjson_key(ctx.partition, ctx.group_id, "Part", n)
    ctx.object_store.put_bytes(key, body)
    return {"key": key, "count": lines, **ran}


def this_thread_nice() -> int:
    """Return the calling thread's nice value (Linux: each thread has its own)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def finish(ctx: PlanningContext, job: JobInfo, parts: list[JobInfo]) -> dict[str, Any]:
    """Return the parts' objects and the total line count."""
    files = [part.result or {} for part in parts]
    return {"files": [f.get("key") for f in files], "count": sum(int(f.get("count", 0)) for f in files)}


register_processor(KIND, process)
register_planner(KIND, plan, finish)
