"""Per-partition quotas on every request, and the admin endpoint that manages them.

- Request rate: a token bucket per partition (``rate_per_second``, ``rate_burst``; 0 = unlimited). With a
  Redis URL configured the bucket lives in Redis (one atomic script per request), so the limit holds across
  every API process and host; without one, in this process (the limit is then per process).
- Body size (``max_body_bytes``) → 413; entries per batch/transaction (``max_transaction_entries``) → 413.
- Concurrent bulk jobs (``max_concurrent_jobs``) are enforced where jobs are submitted; read them with
  ``partition_limits(partition)`` (API) or ``storage.partition_config.effective_limits`` (elsewhere).

Limits are read from the database at most once per ``partition_config_ttl_seconds`` per partition and process.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any, Protocol

import redis
from flask import Blueprint, Flask, Response, current_app, request

from api.http import fhir_response, json_body
from api.security.auth import request_partition, require_admin
from core.errors import PayloadTooLarge, TooManyRequests
from core.partition import validate_partition_name
from core.settings import Settings
from storage import Database
from storage.partition_config import (
    LIMIT_NAMES,
    PartitionLimits,
    check_limits,
    delete_overrides,
    effective_limits,
    list_overrides,
    read_overrides,
    set_overrides,
)

log = logging.getLogger(__name__)
bp = Blueprint("partition_config", __name__)
MAX_CACHED_PARTITIONS = 10_000
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RateLimiter(Protocol):
    """Take one token from a partition's bucket."""

    def take(self, partition: str, rate: float, burst: int) -> float:
        """Return 0 if the request may go ahead, else the seconds to wait for a token."""


class LocalRateLimiter:
    """Token buckets in this process."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, partition: str, rate: float, burst: int) -> float:
        """Return 0 and take a token, or the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(partition, (float(burst), now))
            tokens = min(float(burst), tokens + (now - stamp) * rate)
            if tokens >= 1.0:
                self._buckets[partition] = (tokens - 1.0, now)
                return 0.0
            self._buckets[partition] = (tokens, now)
            return (1.0 - tokens) / rate


_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every API process; falls back to allowing when Redis is down."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(_BUCKET_SCRIPT)
        self._warned = 0.0

    def take(self, partition: str, rate: float, burst: int) -> float:
        """Return 0 and take a token, or the seconds until one is available."""
        try:
            wait = self.script(keys=[f"bulkhead:rate:{partition}"], args=[rate, burst])
            return float(wait.decode() if isinstance(wait, bytes) else wait)
        except redis.RedisError:
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning(
                    "rate limiting is not enforced: Redis is unreachable", extra={"partition": partition}
                )
            return 0.0


class LimitsCache:
    """Per-partition limits, read from the database at most once per TTL."""

    def __init__(self, database: Database, settings: Settings):
        self.database = database
        self.settings = settings
        self._cache: dict[str, tuple[float, PartitionLimits]] = {}

    def get(self, partition: str) -> PartitionLimits:
        """Return the limits in force in ``partition``."""
        now = time.monotonic()
        hit = self._cache.get(partition)
        if hit is not None and hit[0] > now:
            return hit[1]
        limits = effective_limits(self.database, self.settings, partition)
        if len(self._cache) >= MAX_CACHED_PARTITIONS:
            self._cache.clear()  # many partitions (or many made-up names): start over rather than grow
        self._cache[partition] = (now + self.settings.partition_config_ttl_seconds, limits)
        return limits

    def forget(self, partition: str) -> None:
        """Drop the cached limits of ``partition`` (after a change through this process)."""
        self._cache.pop(partition, None)


def _limits_cache() -> LimitsCache:
    cache: LimitsCache = current_app.extensions["bulkhead.limits"]
    return cache


def partition_limits(partition: str) -> PartitionLimits:
    """Return the limits in force in ``partition`` (cached); for the API's job submission and bundles."""
    return _limits_cache().get(partition)


def enforce_quotas() -> None:
    """Refuse the request when its partition is over its rate or size limits (before_request)."""
    partition = request_partition()
    if partition is None or request.method == "OPTIONS" or not _NAME.fullmatch(partition):
        return  # system endpoints; invalid names are refused by routing
    limits = partition_limits(partition)
    rate = limits.rate_per_second or 0.0
    if rate > 0:
        burst = max(1, limits.rate_burst or math.ceil(rate))
        limiter: RateLimiter = current_app.extensions["bulkhead.rate_limiter"]
        wait = limiter.take(partition, rate, burst)
        if wait > 0:
            raise TooManyRequests(
                f"Partition {partition!r} is over its request rate ({rate:g}/s)",
                retry_after=max(1, math.ceil(wait)),
            )
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    max_body = limits.max_body_bytes
    if max_body is not None:
        length = request.content_length
        if length is not None and length > max_body:
            raise PayloadTooLarge(
                f"The body is larger than partition {partition!r} allows ({max_body} bytes)"
            )
        request.max_content_length = max_body


def _config_resource(partition: str, limits: PartitionLimits, effective: PartitionLimits) -> dict[str, Any]:
    def parts(values: PartitionLimits) -> list[dict[str, Any]]:
        out = []
        for name, value in values.as_dict().items():
            if value is None:
                continue
            key = "valueDecimal" if isinstance(value, float) else "valueInteger"
            out.append({"name": name, key: value})
        return out

    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "partition", "valueString": partition},
            {"name": "override", "part": parts(limits)} if parts(limits) else {"name": "override"},
            {"name": "effective", "part": parts(effective)},
        ],
    }


def _body_values() -> dict[str, Any]:
    _raw, body = json_body()
    if body.get("resourceType") == "Parameters":
        values: dict[str, Any] = {}
        for param in body.get("parameter") or []:
            if isinstance(param, dict) and isinstance(param.get("name"), str):
                value = next((v for k, v in param.items() if k.startswith("value")), None)
                values[param["name"]] = value
        return values
    return {k: v for k, v in body.items() if k != "resourceType"}


def _database() -> Database:
    database: Database = current_app.extensions["bulkhead.db"]
    return database


@bp.get("/_partition-config")
def list_config() -> Response:
    """List every partition's overrides and the defaults (administrators only)."""
    require_admin()
    settings: Settings = current_app.config["BULKHEAD_SETTINGS"]
    defaults = PartitionLimits.defaults(settings)
    items = [
        _config_resource(name, limits, limits.over(defaults))
        for name, limits, _ in list_overrides(_database())
    ]
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": _config_resource("*", PartitionLimits(), defaults)}]
            + [{"resource": item} for item in items],
        }
    )


@bp.get("/_partition-config/<name>")
def get_config(name: str) -> Response:
    """Return one partition's overrides and effective limits (administrators only)."""
    require_admin()
    validate_partition_name(name)
    settings: Settings = current_app.config["BULKHEAD_SETTINGS"]
    overrides = read_overrides(_database(), name)
    return fhir_response(
        _config_resource(name, overrides, overrides.over(PartitionLimits.defaults(settings)))
    )


@bp.put("/_partition-config/<name>")
def put_config(name: str) -> Response:
    """Replace one partition's overrides (absent names fall back to the defaults; administrators only)."""
    require_admin()
    validate_partition_name(name)
    limits = check_limits(_body_values())
    set_overrides(_database(), name, limits)
    _limits_cache().forget(name)
    log.info("partition limits changed: %s", limits.as_dict(), extra={"partition": name})
    return get_config(name)


@bp.delete("/_partition-config/<name>")
def delete_config(name: str) -> Response:
    """Remove one partition's overrides (administrators only)."""
    require_admin()
    validate_partition_name(name)
    delete_overrides(_database(), name)
    _limits_cache().forget(name)
    return Response(b"", status=204)


def init_quotas(app: Flask, settings: Settings, database: Database) -> None:
    """Register the quota hook, the limits cache, the rate limiter and the admin endpoint."""
    app.extensions["bulkhead.limits"] = LimitsCache(database, settings)
    app.extensions["bulkhead.rate_limiter"] = (
        RedisRateLimiter(settings.redis_url) if settings.redis_url else LocalRateLimiter()
    )
    app.register_blueprint(bp)
    app.before_request(enforce_quotas)


__all__ = ["LIMIT_NAMES", "enforce_quotas", "init_quotas", "partition_limits"]
