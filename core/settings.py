"""Settings: one frozen dataclass, read once from ``BULKHEAD_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything Bulkhead can be configured with; see the README for each variable."""

    database_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "bulkhead"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = "bulkhead"
    s3_public_endpoint_url: str | None = None
    data_dir: Path = Path(".bulkhead")
    public_base_url: str | None = None
    # How many proxies in front of the API may set X-Forwarded-For/-Proto/-Host/-Port; 0 trusts none.
    trusted_proxies: int = 0
    host: str = "127.0.0.1"
    port: int = 8080
    partitions_enabled: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    max_transaction_entries: int = 1000
    default_page_size: int = 20
    max_page_size: int = 1000
    api_workers: int = 2
    worker_processes: int = 1
    worker_threads: int = 4
    export_file_max_bytes: int = 256 * 1024 * 1024
    export_chunk_bytes: int = 64 * 1024 * 1024
    export_max_concurrent_per_partition: int = 4
    export_gzip: bool = True
    export_settle_seconds: float = 0.1
    job_window_per_job: int = 4
    job_window_per_partition: int = 8
    # A job planned at this many resources or more runs its processing jobs in the background lane
    # (threads at a lower CPU priority); 0 puts every job in the foreground.
    job_background_resources: int = 100_000
    job_background_nice: int = 10
    job_heartbeat_seconds: float = 5.0
    job_stale_seconds: float = 60.0
    job_max_attempts: int = 5
    job_expiry_hours: int = 24
    # Job machinery (see docs/architecture.md "Job machinery" and docs/operations.md).
    queue_namespace: str = "bulkhead"
    # Idle Redis consumers wait for a published wake-up (workers/wake.py); false: they poll every 200 ms.
    redis_wake: bool = True
    job_modules: str = ""
    job_sweep_seconds: float = 5.0
    job_retry_backoff_seconds: float = 2.0
    job_retry_backoff_max_seconds: float = 60.0
    job_message_retries: int = 3
    job_time_limit_seconds: float = 6 * 3600.0
    orchestrator_threads: int = 2
    presigned_urls: bool = False
    log_level: str = "INFO"
    log_json: bool = False
    # Security (see README "Authentication"): off unless auth_enabled.
    auth_enabled: bool = False
    auth_hs256_secret: str | None = None
    auth_jwks_file: Path | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_signing_key_file: Path | None = None
    auth_token_lifetime_seconds: int = 300
    auth_leeway_seconds: int = 30
    auth_partitions_claim: str = "partitions"
    tenant_source: str = "url"
    tenant_header: str = "X-Tenant-ID"
    metrics_require_auth: bool = True
    migration_database_url: str | None = None
    # Server-side limits on every application connection (storage/db.py); 0 switches one off.
    database_statement_timeout_seconds: float = 300.0
    database_idle_in_transaction_timeout_seconds: float = 60.0
    database_app_role: str = "bulkhead_app"
    database_app_password: str | None = None
    # The administrative connection (cross-partition work after an administrator check, the job machinery's
    # scans): its own role; by default BULKHEAD_DATABASE_URL with that role and password.
    database_admin_url: str | None = None
    database_admin_role: str = "bulkhead_admin"
    database_admin_password: str | None = None
    audit_enabled: bool = True
    # An update whose content equals the current version's stores no new version (as HAPI FHIR does);
    # true keeps every write as a version of its own.
    update_keep_identical: bool = False
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 0
    partition_config_ttl_seconds: float = 5.0
    # Import, reindex, bulk update and bulk delete (see docs/bulk-operations.md).
    import_range_bytes: int = 64 * 1024 * 1024
    import_batch_size: int = 5000
    import_max_line_bytes: int = 64 * 1024 * 1024
    import_max_concurrent_per_partition: int = 2
    # The input policy (core/importpolicy.py): URL prefixes or hosts, and buckets, an import may read
    # beyond public addresses; the key that seals import credentials in the job table.
    import_allowed_urls: str = ""
    import_allowed_buckets: str = ""
    import_secret_key: str | None = None
    reindex_chunk_rows: int = 50_000
    reindex_batch_size: int = 5000
    bulk_edit_chunk_rows: int = 10_000
    bulk_edit_batch_size: int = 500

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``BULKHEAD_*`` variables, then apply ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"BULKHEAD_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if kind == "bool":
                values[f.name] = _bool(raw)
            elif kind == "int":
                values[f.name] = int(raw)
            elif kind == "float":
                values[f.name] = float(raw)
            elif kind in ("Path", "Path | None"):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return replace(cls(**values), **overrides)
