"""The background lane: a large job's work runs in a thread of its own at a lower CPU priority."""

from __future__ import annotations

import contextvars
import ctypes
import os
import threading
import time

import pytest

from core.settings import Settings
from orchestrator.lifecycle import planned_resources
from workers.background import run_in_background
from workers.main import dramatiq_argv, lane_queues

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("MARK", default="-")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_work_runs_in_another_thread_at_a_higher_nice_value_and_returns_its_result() -> None:
    before = _nice()
    MARK.set("partition-a/job-1")

    def work() -> tuple[int, int, str]:
        return threading.get_native_id(), _nice(), MARK.get()

    tid, nice, mark = run_in_background(5, work)
    # The work ran in another thread, five steps nicer, and saw the caller's log context
    assert tid != threading.get_native_id()
    assert nice == min(19, before + 5)
    assert mark == "partition-a/job-1"
    # And the calling thread kept its priority
    assert _nice() == before


def test_an_error_of_the_background_work_is_raised_in_the_calling_thread() -> None:
    def work() -> None:
        raise LookupError("no such range")

    with pytest.raises(LookupError, match="no such range"):
        run_in_background(10, work)


class _Stop(Exception):
    """Stands for Dramatiq's Shutdown, raised asynchronously into a worker thread."""


def test_an_exception_raised_into_the_waiting_thread_stops_the_work_before_it_goes_up() -> None:
    seen: list[str] = []
    started = threading.Event()
    outcome: list[BaseException] = []

    def work() -> None:
        try:
            started.set()
            for _ in range(200):
                time.sleep(0.01)
            seen.append("finished")
        except _Stop:
            seen.append("stopped")
            raise

    def caller() -> None:
        try:
            run_in_background(10, work)
        except _Stop as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(5)
    # When the caller's thread is told to stop, as Dramatiq tells its worker threads
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0), ctypes.py_object(_Stop))
    thread.join(5)
    # Then the work was stopped, and only then did the exception reach the caller
    assert not thread.is_alive()
    assert seen == ["stopped"]
    assert len(outcome) == 1


def test_a_plan_is_sized_from_what_each_planner_records() -> None:
    export = [{"estimated_rows": 60_000}, {"estimated_rows": 50_000}]
    reindex = [{"rows": 5000}, {"rows": 0}]
    imported = [{"start": 0, "stop": 10 * 1024 * 1024}]
    assert planned_resources(export) == 110_000
    assert planned_resources(reindex) == 5000
    assert planned_resources(imported) == 10 * 1024
    assert planned_resources([{"part": "notes"}]) == 0


def test_each_lane_consumes_its_own_queues_of_every_operation() -> None:
    foreground = lane_queues("foreground")
    background = lane_queues("background")
    assert {"export", "import", "reindex"} <= set(foreground)
    assert background == [f"{q}-background" for q in foreground]
    assert sorted(lane_queues("all")) == sorted(foreground + background)
    argv = dramatiq_argv(Settings(), lane="background")
    assert argv[argv.index("--queues") + 1 :] == background
    assert "--queues" not in dramatiq_argv(Settings())
    with pytest.raises(ValueError, match="Unknown lane"):
        lane_queues("urgent")


def test_a_queue_named_for_a_worker_stands_for_both_of_its_lanes_unless_a_lane_is_chosen() -> None:
    def queues(argv: list[str]) -> list[str]:
        return argv[argv.index("--queues") + 1 :]

    assert queues(dramatiq_argv(Settings(), queues=["export,import"])) == [
        "export",
        "export-background",
        "import",
        "import-background",
    ]
    assert queues(dramatiq_argv(Settings(), queues=["export"], lane="foreground")) == ["export"]
    assert queues(dramatiq_argv(Settings(), queues=["export"], lane="background")) == ["export-background"]
    assert queues(dramatiq_argv(Settings(), queues=["reindex-background"])) == ["reindex-background"]
