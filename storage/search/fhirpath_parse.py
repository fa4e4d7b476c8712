"""Parse the FHIRPath subset used by SearchParameter expressions into nested tuples.

Nodes: ``("union", [branches])`` and ``("path", head, steps)`` where ``head`` is ``("name", identifier)`` or a
sub-expression, and each step is ``("member", name)``, ``("as", type)``, ``("where", condition)``,
``("ext", url)`` or ``("index", n)``. Conditions: ``("resolve_is", type)``, ``("has_ext", url)``,
``("eq" | "ne", [names], literal)``, ``("and" | "or", left, right)``. Anything else raises Unsupported.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)"
    r"|(?P<op>!=|[.()\[\]|=,]))"
)


class Unsupported(Exception):
    """The expression uses FHIRPath outside the compiled subset."""


def _tokens(expression: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = expression.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot read {text[pos:]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "id" and value.startswith("`"):
            value = value[1:-1]
        if kind == "str":
            value = value[1:-1].replace("\\'", "'")
        out.append((kind, value))
        pos = m.end()
    return out


class Parser:
    """Recursive descent over the supported subset; produces nested tuples."""

    def __init__(self, expression: str):
        self.toks = _tokens(expression)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        """Return the token ``offset`` ahead without consuming it."""
        i = self.pos + offset
        return self.toks[i] if i < len(self.toks) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        """Consume the next token, which must be of ``kind`` (and ``value``), and return its text."""
        tok = self.peek()
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise Unsupported(f"expected {value or kind}, found {tok[1]!r}")
        self.pos += 1
        return tok[1]

    def parse(self) -> tuple[Any, ...]:
        """Parse the whole expression."""
        expr = self.union()
        if self.peek()[0] != "end":
            raise Unsupported(f"unexpected {self.peek()[1]!r}")
        return expr

    def union(self) -> tuple[Any, ...]:
        """Parse ``term ("|" term)*``."""
        branches = [self.term()]
        while self.peek() == ("op", "|"):
            self.pos += 1
            branches.append(self.term())
        return ("union", branches) if len(branches) > 1 else branches[0]

    def term(self) -> tuple[Any, ...]:
        """Parse a path, optionally followed by ``as Type``."""
        path = self.path()
        if self.peek() == ("id", "as"):
            self.pos += 1
            return ("path", path[1], [*path[2], ("as", self.take("id"))])
        return path

    def path(self) -> tuple[Any, ...]:
        """Parse a name or a parenthesised expression, then its steps."""
        if self.peek() == ("op", "("):
            self.pos += 1
            head: Any = self.union()
            self.take("op", ")")
            if head[0] == "path":  # (a.b as T).c is a.b.as(T).c
                return ("path", head[1], [*head[2], *self.steps()])
        else:
            head = ("name", self.take("id"))
        return ("path", head, self.steps())

    def steps(self) -> list[tuple[Any, ...]]:
        """Parse ``.invocation`` and ``[n]`` steps."""
        steps: list[tuple[Any, ...]] = []
        while True:
            if self.peek() == ("op", "["):
                self.pos += 1
                steps.append(("index", int(self.take("num"))))
                self.take("op", "]")
            elif self.peek() == ("op", ".") and self.peek(1)[0] == "id":
                self.pos += 1
                steps.append(self.invocation())
            else:
                return steps

    def invocation(self) -> tuple[Any, ...]:
        """Parse a member name or one of the supported functions."""
        name = self.take("id")
        if self.peek() != ("op", "("):
            return ("member", name)
        self.pos += 1
        if name in {"as", "ofType"}:
            step: tuple[Any, ...] = ("as", self.take("id"))
        elif name == "extension":
            step = ("ext", self.take("str"))
        elif name == "where":
            step = ("where", self.condition())
        elif name == "first":
            step = ("index", 0)
        else:
            raise Unsupported(f"function {name}() is not compiled")
        self.take("op", ")")
        return step

    def condition(self) -> tuple[Any, ...]:
        """Parse a ``where`` condition: atoms joined by ``and`` / ``or``."""
        left = self.atom()
        while self.peek() in {("id", "and"), ("id", "or")}:
            op = self.take("id")
            left = (op, left, self.atom())
        return left

    def atom(self) -> tuple[Any, ...]:
        """Parse ``resolve() is T``, ``hasExtension(url)`` or ``path = literal`` / ``path != literal``."""
        if self.peek() == ("id", "resolve"):
            self.pos += 1
            self.take("op", "(")
            self.take("op", ")")
            self.take("id", "is")
            return ("resolve_is", self.take("id"))
        if self.peek() == ("id", "hasExtension") and self.peek(1) == ("op", "("):
            self.pos += 2
            url = self.take("str")
            self.take("op", ")")
            return ("has_ext", url)
        names = [self.take("id")]
        while self.peek() == ("op", ".") and self.peek(1)[0] == "id":
            self.pos += 1
            names.append(self.take("id"))
        op = self.take("op")
        if op not in {"=", "!="}:
            raise Unsupported(f"operator {op} is not compiled")
        kind, value = self.peek()
        self.pos += 1
        if kind == "id" and value in {"true", "false"}:
            literal: Any = value == "true"
        elif kind == "str":
            literal = value
        else:
            raise Unsupported(f"literal {value!r} is not compiled")
        return ("eq" if op == "=" else "ne", names, literal)


def parse(expression: str) -> tuple[Any, ...]:
    """Parse ``expression`` (raise Unsupported outside the subset)."""
    return Parser(expression).parse()
