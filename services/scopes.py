"""SMART system scopes: parse them and answer what a token may do with which resource types.

Supported: SMART v2 ``system/<Type|*>.<cruds>`` (the letters in any subset, in the spec's order) and the v1
forms ``system/<Type|*>.read`` (= ``rs``), ``.write`` (= ``cud``) and ``.*`` (= ``cruds``). ``patient/`` and
``user/`` scopes and v2 scopes with query constraints (``system/Observation.rs?category=…``) grant nothing:
Bulkhead serves backend services, and does not enforce constraints it cannot check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

PERMISSIONS = "cruds"
_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]{0,63})\.(\*|read|write|c?r?u?d?s?)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class Grant:
    """Permissions (letters of ``cruds``) on one resource type or on every type (``*``)."""

    resource_type: str
    permissions: frozenset[str]


def parse_scope(scope: str | Iterable[str] | None) -> tuple[Grant, ...]:
    """Return the grants of a space-separated scope string (or a list); ignore what grants nothing."""
    if scope is None:
        return ()
    items = scope.split() if isinstance(scope, str) else [s for s in scope if isinstance(s, str)]
    grants = []
    for item in items:
        m = _SCOPE.fullmatch(item)
        if m is None or not m.group(2):
            continue
        letters = _V1.get(m.group(2), m.group(2))
        grants.append(Grant(m.group(1), frozenset(letters)))
    return tuple(grants)


@dataclass(frozen=True)
class Permissions:
    """What a set of grants allows."""

    grants: tuple[Grant, ...] = field(default_factory=tuple)

    @classmethod
    def everything(cls) -> Permissions:
        """Return permissions that allow every interaction on every type."""
        return cls((Grant("*", frozenset(PERMISSIONS)),))

    def allows(self, permission: str, resource_type: str) -> bool:
        """Return True if ``permission`` (one of c r u d s) is granted on ``resource_type`` (or ``*``).

        ``*`` as the type asks for the permission on every type at once: only a wildcard grant gives it.
        """
        for grant in self.grants:
            if permission not in grant.permissions:
                continue
            if grant.resource_type in {"*", resource_type}:
                return True
        return False

    def types_with(self, permission: str) -> frozenset[str] | None:
        """Return the types on which ``permission`` is granted, or None when it is granted on every type."""
        types = set()
        for grant in self.grants:
            if permission in grant.permissions:
                if grant.resource_type == "*":
                    return None
                types.add(grant.resource_type)
        return frozenset(types)

    def scope_string(self) -> str:
        """Return the grants as a SMART v2 scope string."""
        return " ".join(
            f"system/{g.resource_type}.{''.join(p for p in PERMISSIONS if p in g.permissions)}"
            for g in self.grants
        )


def narrow(requested: tuple[Grant, ...], allowed: tuple[Grant, ...]) -> tuple[Grant, ...]:
    """Return the part of ``requested`` that ``allowed`` covers (scope down-scoping at the token endpoint)."""
    out = []
    allowed_perms = Permissions(allowed)
    for grant in requested:
        if grant.resource_type == "*":
            # A wildcard request keeps the wildcard letters granted, plus nothing type-specific.
            letters = frozenset(p for p in grant.permissions if allowed_perms.allows(p, "*"))
            if letters:
                out.append(Grant("*", letters))
            specific = [a for a in allowed if a.resource_type != "*"]
            for a in specific:
                extra = (a.permissions & grant.permissions) - letters
                if extra:
                    out.append(Grant(a.resource_type, extra))
            continue
        letters = frozenset(p for p in grant.permissions if allowed_perms.allows(p, grant.resource_type))
        if letters:
            out.append(Grant(grant.resource_type, letters))
    return tuple(out)
