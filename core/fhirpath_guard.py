"""FHIRPath from tenants, evaluated with fhirpathpy within bounds: linear-time regexes and a CPU budget.

Two things make fhirpathpy unsafe on expressions a tenant writes (a custom SearchParameter, the criteria of
a FHIRPath Patch path), and both are fixed here, for every caller:

- ``matches()`` and ``replaceMatches()`` use Python's backtracking ``re``: ``'^(a+)+$'`` on forty ``a``
  and a ``!`` takes a time that doubles with every ``a``, in one C call that holds the interpreter lock,
  so no other thread of the process (a job's heartbeat, another tenant's request) runs meanwhile.
  ``compile_bounded`` registers both functions in the evaluation's user-function table (fhirpathpy looks
  that table up before its own) with implementations on RE2, whose matching time is linear in the input
  and which releases the lock.
- Evaluation time has no bound. fhirpathpy evaluates an expression by recursing through
  ``fhirpathpy.engine.do_eval``, which every evaluator calls through the module attribute; ``_install``
  wraps that attribute once, so that inside ``evaluation_budget(seconds)`` every 16th node checks the
  thread's CPU time (``time.thread_time``: time the thread ran, not time it waited for a core on a busy
  machine) and raises ``TooCostly`` past the deadline. Outside a budget the wrapper just calls through.
  A ``RecursionError`` during a bounded evaluation is a ``TooCostly`` too. ``TransactionBudget`` is the
  same bound started and stopped by a unit of work, for everything its transaction evaluates.

The limits an expression must meet before it is stored or evaluated are in ``core/fhirpath_limits.py``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import re2

#: fhirpathpy's ``replaceMatches`` turns ``$1`` into ``\1``; so do we.
_GROUP_REFERENCE = re.compile(r"\$(\d+)")
_CHECK_EVERY = 16


class TooCostly(Exception):
    """A bounded FHIRPath evaluation ran past its budget (or recursed too deeply)."""


class _State(threading.local):
    deadline: float | None = None
    steps: int = 0


_state = _State()
_installed = threading.Event()
_install_lock = threading.Lock()


def _install() -> None:
    """Wrap fhirpathpy's node evaluator so that budgets are checked as it recurses (once per process)."""
    if _installed.is_set():
        return
    with _install_lock:
        if _installed.is_set():
            return
        from fhirpathpy import engine

        original = engine.do_eval

        def bounded_do_eval(ctx: Any, parent: Any, node: Any) -> Any:
            deadline = _state.deadline
            if deadline is not None:
                _state.steps += 1
                if _state.steps % _CHECK_EVERY == 0 and time.thread_time() > deadline:
                    raise TooCostly("the FHIRPath evaluation ran past its budget")
            return original(ctx, parent, node)  # type: ignore[no-untyped-call]

        engine.do_eval = bounded_do_eval
        _installed.set()


@contextmanager
def evaluation_budget(seconds: float) -> Iterator[None]:
    """Bound the fhirpathpy evaluations of this thread inside the block to ``seconds`` of CPU time.

    Budgets nest: an inner one never reaches past the outer one's deadline. Raises ``TooCostly`` on entry
    when the outer budget is spent already.
    """
    _install()
    now = time.thread_time()
    outer = _state.deadline
    deadline = now + seconds if outer is None else min(outer, now + seconds)
    if deadline <= now:
        raise TooCostly("the evaluation budget is spent")
    _state.deadline = deadline
    try:
        yield
    except RecursionError as exc:
        raise TooCostly("the FHIRPath evaluation recursed too deeply") from exc
    finally:
        _state.deadline = outer


class TransactionBudget:
    """A budget its owner starts and stops (a unit of work: when its transaction begins and ends).

    Every bounded evaluation of the thread between ``start`` and ``stop`` shares it (nested budgets never
    reach past it), so that the FHIRPath one transaction evaluates in total stays well below the database's
    idle-in-transaction limit, however many resources it writes.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._active = False
        self._outer: float | None = None

    def start(self) -> None:
        """Start the budget now (restarting it if it runs)."""
        self.stop()
        _install()
        now = time.thread_time()
        self._outer = _state.deadline
        self._active = True
        mine = now + self.seconds
        _state.deadline = mine if self._outer is None else min(self._outer, mine)

    def stop(self) -> None:
        """End the budget (the enclosing one, if any, applies again)."""
        if self._active:
            _state.deadline = self._outer
            self._active = False


@lru_cache(maxsize=256)
def linear_regex(pattern: str, *, dot_all: bool = False) -> Any:
    """Compile ``pattern`` with RE2 (linear-time matching); raise ValueError if RE2 cannot compile it."""
    options = re2.Options()
    options.log_errors = False
    options.dot_nl = dot_all
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(f"the regular expression {pattern!r} is not supported: {detail}") from None


def _single_string(inputs: list[Any]) -> str:
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        raise TypeError("expected a single string")
    return inputs[0]


def _matches(inputs: list[Any], regex: Any) -> Any:
    """FHIRPath ``matches(regex)``: true when the string contains a match (``.`` matches newlines)."""
    if not regex or not inputs:
        return []
    return linear_regex(str(regex), dot_all=True).search(_single_string(inputs)) is not None


def _replace_matches(inputs: list[Any], regex: Any, substitution: Any) -> Any:
    """FHIRPath ``replaceMatches(regex, substitution)``; ``$1`` in the substitution names a group."""
    if not inputs:
        return []
    text = _single_string(inputs)
    if not isinstance(regex, str) or not isinstance(substitution, str):
        return []
    return linear_regex(regex).sub(_GROUP_REFERENCE.sub(r"\\\1", substitution), text)


#: Entries of fhirpathpy's user-function table (same shape as its own ``invocation_registry``).
USER_FUNCTIONS: dict[str, dict[str, Any]] = {
    "matches": {"fn": _matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": _replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
}


def compile_bounded(
    expression: str, *, model: dict[str, Any] | None = None, seconds: float
) -> Callable[[Any], list[Any]]:
    """Compile ``expression`` with fhirpathpy and RE2 regexes; each call may spend ``seconds`` of CPU.

    The returned function raises ``TooCostly`` past its budget (or an enclosing one) and whatever
    fhirpathpy raises for an expression that does not apply to the data.
    """
    import fhirpathpy

    _install()
    evaluate = fhirpathpy.compile(expression, model, {"userInvocationTable": USER_FUNCTIONS})

    def run(resource: Any) -> list[Any]:
        with evaluation_budget(seconds):
            return list(evaluate(resource, {}))

    return run


__all__ = [
    "USER_FUNCTIONS",
    "TooCostly",
    "TransactionBudget",
    "compile_bounded",
    "evaluation_budget",
    "linear_regex",
]
