"""The limits on FHIRPath that tenants write, in one place, and the check of an expression against them.

A custom SearchParameter's ``expression`` runs on every write of its partition and on every resource of a
``$reindex``; the criteria of a FHIRPath Patch path run on the elements they filter. Both are checked once,
before they are stored or used (``expression_problems``), against limits that every official R4
SearchParameter expression meets with room to spare (the longest is 1,386 characters, the deepest parse
tree 42 nodes, the most function calls 44):

- at most ``MAX_EXPRESSION_CHARS`` characters, a parse tree at most ``MAX_DEPTH`` nodes deep (fhirpathpy's
  evaluator recurses once per node), at most ``MAX_FUNCTION_CALLS`` function calls;
- none of ``UNBOUNDED_FUNCTIONS``, whose cost grows with something other than the expression (``repeat``
  and ``descendants`` walk a whole tree, ``aggregate`` folds without bound, ``trace`` writes logs), and
  ``resolve()`` only as ``resolve() is Type`` inside ``where`` (the idiom the compiled subset answers);
- the pattern of ``matches()`` / ``replaceMatches()`` a string literal of at most ``MAX_REGEX_CHARS``
  characters that RE2 compiles (no backreferences, no lookaround: matching is linear in the input).

What stays allowed is then bounded while it runs (``core/fhirpath_guard.py``): each evaluation of an
expression outside the compiled subset on one resource gets ``PER_EVALUATION_SECONDS`` of CPU, and all
of a resource's custom parameters together ``PER_RESOURCE_SECONDS``; past either, that parameter is not
indexed for that resource and the skip is counted (``storage/search/index.py``). FHIRPath evaluated inside a
database transaction (what cannot be extracted before it: entries of a transaction Bundle, conditional
writes, import and bulk-update batches) shares ``PER_TRANSACTION_SECONDS`` of the thread's CPU time from the
transaction's start, well below the database's idle-in-transaction limit (``storage/uow.py``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from core.errors import Issue

MAX_EXPRESSION_CHARS = 2048
MAX_DEPTH = 64
MAX_FUNCTION_CALLS = 64
MAX_REGEX_CHARS = 256
UNBOUNDED_FUNCTIONS = frozenset({"repeat", "descendants", "aggregate", "trace"})
REGEX_FUNCTIONS = frozenset({"matches", "replaceMatches"})
PER_EVALUATION_SECONDS = 0.05
PER_RESOURCE_SECONDS = 0.2
PER_TRANSACTION_SECONDS = 10.0


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in node.get("children") or () if isinstance(c, dict)]


def _regex_literal(param: dict[str, Any]) -> str | None:
    """Return the string a regex argument is, when it is a plain string literal."""
    from fhirpathpy.engine.evaluators import string_literal

    node = param
    while node.get("type") in {"TermExpression", "LiteralTerm"} and len(_children(node)) == 1:
        node = _children(node)[0]
    if node.get("type") != "StringLiteral":
        return None
    value = string_literal(None, None, node)  # type: ignore[no-untyped-call]
    return str(value[0] if isinstance(value, list) else value)


def _function_problems(name: str, functn: dict[str, Any], parents: list[dict[str, Any]]) -> list[str]:
    if name in UNBOUNDED_FUNCTIONS:
        return [f"the function {name}() is not allowed (its cost has no bound)"]
    if name == "resolve" and not _resolve_idiom(parents):
        return ["resolve() is only supported as 'resolve() is Type' inside where()"]
    if name not in REGEX_FUNCTIONS:
        return []
    params = [c for c in _children(functn) if c.get("type") == "ParamList"]
    args = _children(params[0]) if params else []
    if not args:
        return []
    pattern = _regex_literal(args[0])
    if pattern is None:
        return [f"the pattern of {name}() must be a string literal"]
    if len(pattern) > MAX_REGEX_CHARS:
        return [f"the pattern of {name}() is longer than {MAX_REGEX_CHARS} characters"]
    from core.fhirpath_guard import linear_regex

    try:
        linear_regex(pattern)
    except ValueError as exc:
        return [f"{exc} (backreferences and lookaround are not; matching must be linear-time)"]
    return []


def _resolve_idiom(parents: list[dict[str, Any]]) -> bool:
    """Return whether a resolve() call (whose ancestors are ``parents``) is ``resolve() is T`` in where()."""
    # resolve's Functn < FunctionInvocation < InvocationTerm < TermExpression < TypeExpression ('is'), then
    # and / or expressions, then where()'s ParamList < Functn.
    if len(parents) < 6 or [p.get("type") for p in parents[-4:]] != [
        "TypeExpression",
        "TermExpression",
        "InvocationTerm",
        "FunctionInvocation",
    ]:
        return False
    test = parents[-4]
    if "is" not in (test.get("terminalNodeText") or ()) or _children(test)[0] is not parents[-3]:
        return False
    i = len(parents) - 5
    while i > 0 and parents[i].get("type") in {"AndExpression", "OrExpression"}:
        i -= 1
    if i < 1 or parents[i].get("type") != "ParamList":
        return False
    names = [c for c in _children(parents[i - 1]) if c.get("type") == "Identifier"]
    return bool(names) and names[0].get("text") == "where"


@lru_cache(maxsize=512)
def expression_problems(expression: str) -> tuple[str, ...]:
    """Return why ``expression`` is refused (empty when it is within every limit)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        return (f"the expression is longer than {MAX_EXPRESSION_CHARS} characters",)
    from fhirpathpy.parser import parse

    try:
        tree = parse(expression)  # type: ignore[no-untyped-call]
    except RecursionError:
        return (f"the expression is nested more than {MAX_DEPTH} levels deep",)
    except Exception as exc:  # fhirpathpy's parser raises assorted ANTLR errors
        return (f"the expression does not parse: {exc or type(exc).__name__}",)
    problems: list[str] = []
    calls = 0
    deepest = 0
    # An explicit stack: the tree of an accepted length can still be too deep to walk by recursion.
    stack: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [(tree, [])]
    while stack:
        node, parents = stack.pop()
        deepest = max(deepest, len(parents) + 1)
        if node.get("type") == "Functn":
            names = [c for c in _children(node) if c.get("type") == "Identifier"]
            name = str(names[0].get("text", "")) if names else ""
            calls += 1
            for problem in _function_problems(name, node, parents):
                if problem not in problems:
                    problems.append(problem)
        below = [*parents, node]
        stack.extend((child, below) for child in _children(node))
    if deepest > MAX_DEPTH:
        problems.insert(0, f"the expression is nested {deepest} levels deep, more than {MAX_DEPTH}")
    if calls > MAX_FUNCTION_CALLS:
        problems.insert(0, f"the expression calls {calls} functions, more than {MAX_FUNCTION_CALLS}")
    return tuple(problems)


def search_parameter_issues(resource: dict[str, Any]) -> list[Issue]:
    """Return the limits a SearchParameter resource's ``expression`` breaks (nothing for other types)."""
    if resource.get("resourceType") != "SearchParameter":
        return []
    expression = resource.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        return []
    return [
        Issue(
            f"SearchParameter.expression is refused: {problem}",
            code="too-costly",
            expression=("SearchParameter.expression",),
        )
        for problem in expression_problems(expression)
    ]


__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_CHARS",
    "MAX_FUNCTION_CALLS",
    "MAX_REGEX_CHARS",
    "PER_EVALUATION_SECONDS",
    "PER_RESOURCE_SECONDS",
    "PER_TRANSACTION_SECONDS",
    "UNBOUNDED_FUNCTIONS",
    "expression_problems",
    "search_parameter_issues",
]
