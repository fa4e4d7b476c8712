"""Embedded servers for a single-node install and the test suite: PostgreSQL, Redis and S3 (SeaweedFS)."""

from __future__ import annotations

from cli.embedded.postgres import EmbeddedPostgres
from cli.embedded.process import (
    ManagedProcess,
    free_port,
    free_port_pair,
    free_ports,
    reserve_port,
    wait_for_port,
)
from cli.embedded.redis_server import EmbeddedRedis
from cli.embedded.seaweedfs import EmbeddedS3, S3Endpoint

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedS3",
    "ManagedProcess",
    "S3Endpoint",
    "free_port",
    "free_port_pair",
    "free_ports",
    "reserve_port",
    "wait_for_port",
]
