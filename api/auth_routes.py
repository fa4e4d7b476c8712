"""What a request needs: classify a FHIR request path into SMART permissions on resource types.

The classification works on the path below the partition base, so it covers every blueprint (REST,
search, bundles, bulk operations) without each one declaring its scopes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from core.fhirtypes import resource_types

# Paths outside every partition base, and whether they need an administrator.
SYSTEM_PATHS = {
    "/partitions": True,
    "/_audit": True,
    "/_partition-config": True,
    "/_reindex": True,
    "/metrics": True,
    "/auth/token": False,
    "/.well-known/smart-configuration": False,
}
PUBLIC_SEGMENTS = {("metadata",), (".well-known", "smart-configuration")}
_RESULT_PARAMS = {"_include", "_revinclude", "_include:iterate", "_revinclude:iterate"}


@dataclass(frozen=True)
class Need:
    """One permission (c r u d s) on one resource type (``*``: every type)."""

    permission: str
    resource_type: str


@dataclass(frozen=True)
class Requirement:
    """What a request needs: nothing (public), an administrator, or a partition token with these needs."""

    public: bool = False
    admin: bool = False
    needs: tuple[Need, ...] = field(default_factory=tuple)
    interaction: str = "unknown"
    resource_type: str | None = None
    resource_id: str | None = None


def system_path(path: str) -> str | None:
    """Return the system path ``path`` falls under (``/partitions`` itself, ``/_audit``, …), or None."""
    for prefix in SYSTEM_PATHS:
        if path == prefix or path.startswith(prefix + "/"):
            if prefix == "/partitions" and path != prefix and path != prefix + "/":
                return None
            return prefix
    return None


def split_partition(path: str) -> tuple[str | None, str]:
    """Return (partition named in the URL or None for the root base, path below the base)."""
    if path.startswith("/partitions/"):
        rest = path[len("/partitions/") :]
        name, _, below = rest.partition("/")
        return name, "/" + below
    return None, path


def _types(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(t.strip() for t in value.split(",") if t.strip())
    return out


def _search_needs(rtype: str, args: Mapping[str, list[str]]) -> list[Need]:
    needs = [Need("s", rtype)]
    for key, values in args.items():
        if key in _RESULT_PARAMS:
            for value in values:
                parts = value.split(":")
                if key.startswith("_revinclude"):
                    needs.append(Need("r", parts[0] if parts[0] else "*"))
                elif len(parts) >= 3 and parts[2]:
                    needs.append(Need("r", parts[2]))
                else:
                    needs.append(Need("r", "*"))
        elif key.startswith("_has:"):
            parts = key.split(":")
            needs.append(Need("s", parts[1] if len(parts) > 1 and parts[1] else "*"))
        elif "." in key and not key.startswith("_"):
            # A chained parameter reads the referenced resources: subject:Patient.name or subject.name.
            head = key.split(".", 1)[0]
            target = head.split(":", 1)[1] if ":" in head else "*"
            needs.append(Need("s", target if target in resource_types() else "*"))
    return needs


def _each(permission: str, types: list[str]) -> list[Need]:
    return [Need(permission, t) for t in types] or [Need(permission, "*")]


def _parameters_types(body: Any, name: str) -> list[str]:
    """Return the comma-separated type lists of Parameters.parameter[name] (valueString/valueCode)."""
    out: list[str] = []
    if isinstance(body, dict):
        for param in body.get("parameter") or []:
            if isinstance(param, dict) and param.get("name") == name:
                for key in ("valueString", "valueCode"):
                    if isinstance(param.get(key), str):
                        out.extend(_types([param[key]]))
    return out


def _import_types(body: Any) -> list[str]:
    out: list[str] = []
    if isinstance(body, dict):
        for param in body.get("parameter") or []:
            if isinstance(param, dict) and param.get("name") == "input":
                for part in param.get("part") or []:
                    if isinstance(part, dict) and part.get("name") == "type":
                        value = part.get("valueCode") or part.get("valueString")
                        out.append(value if isinstance(value, str) else "*")
    return out


def classify(
    method: str,
    below: str,
    args: Mapping[str, list[str]],
    body: Any = None,
    headers: Mapping[str, Any] | None = None,
) -> Requirement:
    """Return what a request (method, path below its partition base, query, parsed body) needs."""
    headers = headers or {}
    segs = tuple(s for s in below.split("/") if s)
    if segs in PUBLIC_SEGMENTS:
        return Requirement(public=True, interaction="capabilities")
    types = set(resource_types())
    if not segs:
        if method == "POST":
            return _bundle(body)
        return Requirement(
            needs=tuple(Need("s", t) for t in _types(args.get("_type", [])) or ["*"]),
            interaction="search-system",
        )
    head = segs[0]
    if head in {"_search"}:
        return Requirement(
            needs=tuple(Need("s", t) for t in _types(args.get("_type", [])) or ["*"]),
            interaction="search-system",
        )
    if head == "_history":
        return Requirement(needs=(Need("s", "*"),), interaction="history-system")
    if head.startswith("$"):
        return _operation(head, None, None, args, body)
    if head not in types:
        # Job status, files and listings (``_operations``, poll URLs): a token for the partition is enough;
        # the job itself answers 404 from any other partition.
        return Requirement(interaction=head.lstrip("_$") or "unknown")
    rtype = head
    if len(segs) == 1:
        if method in {"GET", "HEAD"}:
            return Requirement(
                needs=tuple(_search_needs(rtype, args)), interaction="search-type", resource_type=rtype
            )
        if method == "POST":
            needs = [Need("c", rtype)]
            if "If-None-Exist" in headers:
                needs.append(Need("s", rtype))
            return Requirement(needs=tuple(needs), interaction="create", resource_type=rtype)
        perm = {"PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "r")
        return Requirement(
            needs=(Need(perm, rtype), Need("s", rtype)),
            interaction={"PUT": "conditional-update", "PATCH": "conditional-patch"}.get(
                method, f"conditional-{method.lower()}"
            ),
            resource_type=rtype,
        )
    second = segs[1]
    if second == "_search":
        return Requirement(
            needs=tuple(_search_needs(rtype, args)), interaction="search-type", resource_type=rtype
        )
    if second == "_history":
        return Requirement(needs=(Need("s", rtype),), interaction="history-type", resource_type=rtype)
    if second.startswith("$"):
        return _operation(second, rtype, None, args, body)
    rid = second
    if len(segs) == 2:
        interaction = {
            "GET": "read",
            "HEAD": "read",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method, method.lower())
        perm = {"read": "r", "update": "u", "patch": "u", "delete": "d"}.get(interaction, "r")
        return Requirement(
            needs=(Need(perm, rtype),), interaction=interaction, resource_type=rtype, resource_id=rid
        )
    third = segs[2]
    if third == "_history":
        interaction = "vread" if len(segs) > 3 else "history-instance"
        return Requirement(
            needs=(Need("r", rtype),), interaction=interaction, resource_type=rtype, resource_id=rid
        )
    if third.startswith("$"):
        return _operation(third, rtype, rid, args, body)
    return Requirement(needs=(Need("r", rtype),), interaction="read", resource_type=rtype, resource_id=rid)


def _operation(
    name: str, rtype: str | None, rid: str | None, args: Mapping[str, list[str]], body: Any
) -> Requirement:
    op = name[1:]
    needs: list[Need]
    if op == "export":
        listed = _types(args.get("_type", [])) + _parameters_types(body, "_type")
        needs = _each("r", listed)
        if rtype is not None:
            needs.append(Need("r", rtype))
    elif op == "import":
        needs = [*_each("c", _import_types(body)), *_each("u", _import_types(body))]
    elif op == "reindex":
        needs = [Need("u", "*")]
    elif op == "bulk-update":
        needs = [Need("u", rtype or "*"), Need("s", rtype or "*")]
    elif op == "bulk-delete":
        needs = [Need("d", rtype or "*"), Need("s", rtype or "*")]
    elif op.endswith("-status") or op.startswith("export-poll"):
        needs = []
    else:
        needs = [Need("r", rtype or "*")]
    return Requirement(needs=tuple(needs), interaction=op, resource_type=rtype, resource_id=rid)


def _bundle(body: Any) -> Requirement:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return Requirement(interaction="batch")
    kind = body.get("type") if isinstance(body.get("type"), str) else "batch"
    needs: list[Need] = []
    for entry in body.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        raw_req = entry.get("request")
        req: dict[str, Any] = raw_req if isinstance(raw_req, dict) else {}
        method = str(req.get("method") or "GET").upper()
        url = str(req.get("url") or "")
        parts = urlsplit(url)
        path = parts.path
        if "/partitions/" in path:
            path = split_partition(path[path.find("/partitions/") :])[1]
        query: dict[str, list[str]] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            query.setdefault(k, []).append(v)
        entry_headers = {"If-None-Exist": ""} if req.get("ifNoneExist") else {}
        if not path.strip("/"):
            needs.append(Need("r", "*"))
            continue
        inner = classify(method, "/" + path.lstrip("/"), query, entry.get("resource"), entry_headers)
        needs.extend(inner.needs)
        resource = entry.get("resource")
        if method == "POST" and isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            needs.append(Need("c", resource["resourceType"]))
    return Requirement(needs=tuple(dict.fromkeys(needs)), interaction=str(kind))


def bundle_entry_count(body: Any) -> int:
    """Return the number of entries of a Bundle body (0 for anything else)."""
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        entries = body.get("entry")
        return len(entries) if isinstance(entries, list) else 0
    return 0
