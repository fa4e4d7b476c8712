"""What a ``$import`` asks for: the validated Parameters body, stored as the import job's definition.

The body follows the Microsoft / HAPI form (bulk-data contract §7 C and D): ``inputFormat`` (required,
``application/fhir+ndjson``), ``mode`` (``InitialLoad`` | ``IncrementalLoad``, default ``IncrementalLoad``),
``inputSource``, ``storageDetail`` (parts ``type``, ``credentialHttpBasic``, ``maxBatchResourceCount``), and
one or more ``input`` with parts ``type`` (optional), ``url`` (required) and ``etag`` (optional). Bulkhead
adds ``validation`` (``full`` | ``structural`` | ``none``, default ``full``) and accepts Microsoft's
``processingUnitBytesToRead`` (the byte-range size). Every value may be any primitive ``value[x]``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from core.errors import InvalidRequest, Issue
from core.fhirtypes import resource_types
from core.importpolicy import display_url, has_secret
from core.importsecrets import Sealer

NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
INITIAL, INCREMENTAL = "InitialLoad", "IncrementalLoad"
FULL, STRUCTURAL, NONE = "full", "structural", "none"
VALIDATION_MODES = (FULL, STRUCTURAL, NONE)
MIN_RANGE_BYTES = 1024
MAX_RANGE_BYTES = 1024 * 1024 * 1024
MAX_INPUTS = 10_000
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

_TOP = frozenset(
    {
        "inputFormat",
        "mode",
        "inputSource",
        "storageDetail",
        "input",
        "validation",
        "processingUnitBytesToRead",
    }
)
# Accepted for compatibility with the Microsoft server's clients; they change nothing here.
_IGNORED = frozenset({"allowNegativeVersions", "eventualConsistency", "errorContainerName", "force"})
_STORAGE_PARTS = frozenset({"type", "credentialHttpBasic", "maxBatchResourceCount", "contentEncoding"})
_STORAGE_TYPES = frozenset({"https", "http", "aws-s3", "s3", "azure-blob", "gcp-bucket"})


@dataclass(frozen=True)
class ImportInput:
    """One input file: where it is, the resource type it holds if declared, the entity tag it must have."""

    url: str
    type: str | None = None
    etag: str | None = None
    # The real URL, sealed, when it carries a secret; ``url`` is then its redacted display form.
    sealed: str | None = None

    def real_url(self, sealer: Sealer) -> str:
        """Return the URL to fetch (the sealed one opened, when there is one)."""
        return sealer.open(self.sealed) if self.sealed else self.url


@dataclass(frozen=True)
class ImportSpec:
    """A validated ``$import`` request."""

    inputs: tuple[ImportInput, ...]
    mode: str = INCREMENTAL
    validation: str = FULL
    input_source: str | None = None
    storage_type: str | None = None
    http_basic: str | None = None
    batch_size: int | None = None
    range_bytes: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    http_basic_sealed: str | None = None

    def sealed(self, sealer: Sealer) -> ImportSpec:
        """Return the form kept in the job table: every secret sealed, URLs shown redacted."""
        inputs = tuple(
            ImportInput(display_url(i.url), i.type, i.etag, sealer.seal(i.url)) if has_secret(i.url) else i
            for i in self.inputs
        )
        basic = sealer.seal(self.http_basic) if self.http_basic else self.http_basic_sealed
        return replace(self, inputs=inputs, http_basic=None, http_basic_sealed=basic)

    def basic(self, sealer: Sealer) -> str | None:
        """Return the ``credentialHttpBasic`` to send (opened from its sealed form)."""
        if self.http_basic_sealed:
            return sealer.open(self.http_basic_sealed)
        return self.http_basic

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form stored as the job's definition."""
        data = asdict(self)
        data["inputs"] = [asdict(i) for i in self.inputs]
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportSpec:
        """Rebuild a spec from its stored JSON form."""
        return cls(
            inputs=tuple(ImportInput(**i) for i in data["inputs"]),
            mode=data.get("mode", INCREMENTAL),
            validation=data.get("validation", FULL),
            input_source=data.get("input_source"),
            storage_type=data.get("storage_type"),
            http_basic=data.get("http_basic"),
            batch_size=data.get("batch_size"),
            range_bytes=data.get("range_bytes"),
            notes=tuple(data.get("notes") or ()),
            http_basic_sealed=data.get("http_basic_sealed"),
        )


def _primitive(param: dict[str, Any], where: str) -> str:
    for key, value in param.items():
        if key.startswith("value") and len(key) > 5 and not isinstance(value, dict | list):
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)
    raise InvalidRequest(f"{where} needs a primitive value[x]")


def _parts(param: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    parts = param.get("part")
    if not isinstance(parts, list) or not parts:
        raise InvalidRequest(f"{where} needs parts")
    out = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise InvalidRequest(f"Each part of {where} needs a name")
        out.append((part["name"], part))
    return out


def parse_input_url(url: str) -> tuple[str, str, str]:
    """Split an input URL into (scheme, bucket or host, key or path); raise InvalidRequest if unusable."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not _BUCKET.fullmatch(bucket) or not key or ".." in key.split("/") or parts.query:
            raise InvalidRequest(
                f"Input url {display_url(url)!r} is not of the form s3://bucket/key or s3://bucket/prefix/"
            )
        return scheme, bucket, key
    if scheme in {"http", "https"}:
        if not parts.netloc:
            raise InvalidRequest(f"Input url {display_url(url)!r} has no host")
        return scheme, parts.netloc, url
    raise InvalidRequest(f"Input url {display_url(url)!r}: use s3://bucket/key or an http(s) URL")


def _input(param: dict[str, Any], n: int) -> ImportInput:
    where = f"input[{n}]"
    values: dict[str, str] = {}
    for name, part in _parts(param, where):
        if name not in {"type", "url", "etag"}:
            raise InvalidRequest(f"{where} has the unknown part {name!r}")
        if name in values:
            raise InvalidRequest(f"{where} repeats the part {name!r}")
        values[name] = _primitive(part, f"{where}.{name}").strip()
    url = values.get("url")
    if not url:
        raise InvalidRequest(f"{where} needs a url")
    parse_input_url(url)
    rtype = values.get("type") or None
    if rtype is not None and rtype not in resource_types():
        raise InvalidRequest(f"{where}.type {rtype!r} is not an R4 resource type")
    etag = values.get("etag") or None
    if etag is not None:
        etag = etag.removeprefix("W/").strip('"')
    return ImportInput(url=url, type=rtype, etag=etag)


def _positive(value: str, where: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidRequest(f"{where} must be an integer from {low} to {high}, not {value!r}")
    return int(value)


def parse_import(body: dict[str, Any]) -> ImportSpec:
    """Validate a ``$import`` Parameters body; raise InvalidRequest when it is bad."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("The body of $import must be a FHIR Parameters resource")
    seen: dict[str, str] = {}
    inputs: list[ImportInput] = []
    notes: list[str] = []
    storage: dict[str, str] = {}
    for n, param in enumerate(body.get("parameter") or []):
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise InvalidRequest(f"Parameters.parameter[{n}] needs a name")
        name = param["name"]
        if name in _IGNORED:
            notes.append(f"The parameter {name!r} has no effect in Bulkhead")
            continue
        if name not in _TOP:
            raise InvalidRequest(
                f"Unknown $import parameter {name!r}",
                issues=[Issue(f"Unknown parameter {name!r}", "not-supported")],
            )
        if name == "input":
            inputs.append(_input(param, len(inputs)))
        elif name == "storageDetail":
            for part_name, part in _parts(param, "storageDetail"):
                if part_name not in _STORAGE_PARTS:
                    raise InvalidRequest(f"storageDetail has the unknown part {part_name!r}")
                storage[part_name] = _primitive(part, f"storageDetail.{part_name}").strip()
        else:
            if name in seen:
                raise InvalidRequest(f"{name} may appear once")
            seen[name] = _primitive(param, name).strip()
    fmt = seen.get("inputFormat")
    if fmt is None:
        raise InvalidRequest("inputFormat is required (application/fhir+ndjson)")
    if fmt.lower() not in NDJSON_FORMATS:
        raise InvalidRequest(
            f"inputFormat {fmt!r} is not supported; use application/fhir+ndjson",
            issues=[
                Issue(f"inputFormat {fmt!r} is not supported; use application/fhir+ndjson", "not-supported")
            ],
        )
    mode = seen.get("mode", INCREMENTAL)
    if mode not in (INITIAL, INCREMENTAL):
        raise InvalidRequest(f"mode {mode!r} is not InitialLoad or IncrementalLoad")
    validation = seen.get("validation", FULL).lower()
    if validation not in VALIDATION_MODES:
        raise InvalidRequest(f"validation {validation!r} is not one of {', '.join(VALIDATION_MODES)}")
    if not inputs:
        raise InvalidRequest("$import needs at least one input")
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequest(f"$import takes at most {MAX_INPUTS} inputs")
    urls = [i.url for i in inputs]
    duplicates = sorted({display_url(u) for u in urls if urls.count(u) > 1})
    if duplicates:
        raise InvalidRequest(f"The same input appears more than once: {', '.join(duplicates)}")
    storage_type = storage.get("type")
    if storage_type is not None and storage_type not in _STORAGE_TYPES:
        raise InvalidRequest(f"storageDetail.type {storage_type!r} is not supported; use https or aws-s3")
    if storage_type in {"azure-blob", "gcp-bucket"}:
        raise InvalidRequest(f"storageDetail.type {storage_type!r} is not supported; use https or aws-s3")
    batch = storage.get("maxBatchResourceCount")
    range_bytes = seen.get("processingUnitBytesToRead")
    return ImportSpec(
        inputs=tuple(inputs),
        mode=mode,
        validation=validation,
        input_source=seen.get("inputSource") or None,
        storage_type=storage_type,
        http_basic=storage.get("credentialHttpBasic") or None,
        batch_size=_positive(batch, "maxBatchResourceCount", 1, 100_000) if batch else None,
        range_bytes=(
            _positive(range_bytes, "processingUnitBytesToRead", MIN_RANGE_BYTES, MAX_RANGE_BYTES)
            if range_bytes
            else None
        ),
        notes=tuple(notes),
    )
