"""Another user of the machine knocks on every port the embedded servers of ``bulkhead serve`` listen on.

The servers are started by the supervisor itself (``Supervisor.start_services``, as ``bulkhead serve`` does)
in a fresh data directory. Every TCP port of each server's process tree is found with psutil, not taken
from what we think we opened, and each is tried with nothing: no password, a wrong one, plain HTTP, TLS
without a certificate, an unsigned S3 request. Each refusal is paired with the same request made with the
kept credentials succeeding, so that a server that is merely down cannot pass.
"""

from __future__ import annotations

import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import botocore.exceptions
import psycopg
import pytest
import redis
import requests

from cli.embedded import free_port, wait_for_port
from cli.embedded.postgres import PG_HBA
from cli.serve.credentials import SECRETS_DIR, embedded_postgres
from cli.serve.supervisor import Supervisor
from core.settings import Settings
from harness.services import serve_data_dir
from storage import Database
from storage.objectstore import object_store_from_settings
from storage.objectstore.s3 import s3_client
from tests.support.ports import (
    http_get,
    listening_ports,
    postgres_login,
    postmaster_pid,
    redis_exchange,
    tls_exchange,
)

#: Paths an attacker tries on every SeaweedFS port (``{bucket}`` and ``{key}``: the object's).
_PATHS = (
    "/",
    "/dir/status",
    "/cluster/status",
    "/vol/status",
    "/dir/assign",
    "/status",
    "/ui/index.html",
    "/buckets/",
    "/buckets/{bucket}/",
    "/buckets/{bucket}/{key}",
    "/buckets/{bucket}/{key}?metadata=true",
    "/1,01637037d6",
)


@dataclass(frozen=True)
class Embedded:
    """The embedded servers of one data directory, as the supervisor started them, with one stored object."""

    supervisor: Supervisor
    settings: Settings
    data_dir: Path
    key: str
    body: bytes


def _start(data_dir: Path) -> tuple[Supervisor, Settings]:
    supervisor = Supervisor(Settings(data_dir=data_dir, port=free_port()), echo=lambda line: None)
    try:
        settings = supervisor.start_services()
        assert settings.migration_database_url is not None
        db = Database(settings.migration_database_url)
        try:
            db.migrate(app_role=settings.database_app_role, app_password=settings.database_app_password)
        finally:
            db.dispose()
    except BaseException:
        supervisor.stop()
        raise
    return supervisor, settings


@pytest.fixture(scope="module")
def embedded() -> Iterator[Embedded]:
    """Yield the embedded servers of a fresh data directory, every port of theirs listening."""
    with serve_data_dir() as data_dir:
        supervisor, settings = _start(data_dir)
        try:
            assert supervisor.s3 is not None and supervisor.s3.process is not None
            for port in supervisor.s3.ports.values():  # the admin server starts after the gateway
                wait_for_port(supervisor.s3.process, port, timeout=30)
            store = object_store_from_settings(settings)
            body = b'{"resourceType":"Patient","id":"' + secrets.token_hex(16).encode() + b'"}\n'
            key = store.ndjson_key("victim", "job1", "Patient", 1)
            store.put_bytes(key, body)
            yield Embedded(supervisor, settings, data_dir, key, body)
        finally:
            supervisor.stop()


def _postgres_ports(embedded: Embedded) -> set[int]:
    assert embedded.supervisor.postgres is not None
    return listening_ports(postmaster_pid(embedded.supervisor.postgres.data_dir))


def test_postgresql_refuses_every_login_without_the_password_on_every_port_and_its_socket(
    embedded: Embedded,
) -> None:
    # Given the ports the embedded PostgreSQL listens on, and its unix socket
    postgres = embedded.supervisor.postgres
    assert postgres is not None
    ports = _postgres_ports(embedded)
    assert ports == {postgres.port}
    app = urlsplit(embedded.settings.database_url or "")
    for port in ports:
        targets: list[dict[str, str | int]] = [
            {"host": "127.0.0.1", "port": port},
            {"host": str(postgres.data_dir), "port": port},
        ]
        for target in targets:
            for user in ("postgres", app.username or ""):
                # When a client logs in as the superuser or the application role with no password, or a
                # wrong one
                without = postgres_login(**target, user=user, dbname="postgres")
                wrong = postgres_login(**target, user=user, dbname="postgres", password="postgres")
                # Then both are refused for want of the password
                assert without is not None and "password" in str(without), (target, user, without)
                assert wrong is not None and "password authentication failed" in str(wrong), (target, user)
    # And the kept passwords do log in, as the owner and as the application role
    assert postgres_login(conninfo=postgres.url) is None
    assert postgres_login(conninfo=embedded.settings.database_url or "") is None


def test_redis_answers_noauth_to_a_client_without_the_password_on_every_port(embedded: Embedded) -> None:
    # Given every port of the embedded Redis
    server = embedded.supervisor.redis
    assert server is not None and server.process is not None
    ports = listening_ports(server.process.pid)
    assert ports == {server.port}
    for port in ports:
        # When a client sends commands without authenticating, or with a wrong password
        answers = redis_exchange(
            port, b"PING", b"GET anything", b"CONFIG GET *", b"AUTH wrong", b"AUTH default wrong"
        )
        # Then every command is refused
        assert [a.split(b" ")[0] for a in answers] == [b"-NOAUTH"] * 3 + [b"-WRONGPASS"] * 2, answers
    # And with the kept password (in the URL the processes get) it answers
    assert redis.Redis.from_url(embedded.settings.redis_url or "").ping() is True


def test_an_authenticated_redis_client_still_cannot_reconfigure_or_stop_the_server(
    embedded: Embedded,
) -> None:
    # Given a client that holds the password
    server = embedded.supervisor.redis
    assert server is not None
    auth = f"AUTH {server.password}".encode()
    # When it tries to reconfigure, inspect, replicate or stop the server
    answers = redis_exchange(
        server.port,
        auth,
        b"CONFIG SET dir /tmp",
        b"ACL LIST",
        b"DEBUG SLEEP 0",
        b"MODULE LIST",
        b"REPLICAOF 127.0.0.1 1",
        b"SHUTDOWN NOSAVE",
        b"PING",
    )
    # Then each is refused, and the server still runs
    assert answers[0] == b"+OK"
    assert all(a.startswith(b"-NOPERM") for a in answers[1:-1]), answers
    assert answers[-1] == b"+PONG"


def test_no_seaweedfs_port_but_the_s3_gateway_answers_a_plain_http_client(embedded: Embedded) -> None:
    # Given every port the SeaweedFS process listens on (the gateway's aside)
    s3 = embedded.supervisor.s3
    assert s3 is not None and s3.process is not None
    ports = listening_ports(s3.process.pid)
    assert set(s3.ports.values()) <= ports
    internal = ports - {s3.s3_port}
    paths = [p.format(bucket=embedded.settings.s3_bucket, key=embedded.key) for p in _PATHS]
    for port in sorted(internal):
        for path in paths:
            # When a client GETs the status pages, directory listings and the object's filer URL
            answer = http_get(port, path)
            # Then it is turned away, and never gets the object's bytes
            assert answer.refused(), (port, path, answer.status, answer.body[:200])
            assert embedded.body not in answer.body


def test_every_internal_seaweedfs_port_demands_a_certificate_only_its_components_hold(
    embedded: Embedded,
) -> None:
    # Given every SeaweedFS port but the gateway's, and the certificate its components share
    s3 = embedded.supervisor.s3
    assert s3 is not None and s3.process is not None and s3.tls is not None
    internal = listening_ports(s3.process.pid) - {s3.s3_port}
    assert len(internal) >= 8  # master, volume, filer and admin: HTTP and gRPC each
    for port in sorted(internal):
        # When a client speaks TLS to it without a client certificate
        refusal = tls_exchange(port)
        # Then the server refuses it for want of a certificate, while its own components get in
        assert refusal is not None and "CERTIFICATE_REQUIRED" in str(refusal).upper(), (port, refusal)
        assert tls_exchange(port, (s3.tls.cert, s3.tls.key)) is None, port


def test_the_s3_gateway_refuses_unsigned_and_wrongly_signed_requests(embedded: Embedded) -> None:
    # Given the S3 gateway and the object stored through it
    settings = embedded.settings
    url = f"{settings.s3_endpoint_url}/{settings.s3_bucket}/{embedded.key}"
    # When the object and the bucket listing are asked for without a signature
    unsigned = [requests.get(url, timeout=10), requests.get(url.rsplit("/", 1)[0] + "/", timeout=10)]
    # Then both are forbidden and carry nothing of the object
    assert [r.status_code for r in unsigned] == [403, 403]
    assert all(embedded.body not in r.content for r in unsigned)
    # When they are signed with the right access key but a wrong secret
    forged = s3_client(
        settings.s3_endpoint_url,
        access_key=settings.s3_access_key,
        secret_key="wrong" + (settings.s3_secret_key or ""),
        region=settings.s3_region,
    )
    # Then they are refused too
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        forged.get_object(Bucket=settings.s3_bucket, Key=embedded.key)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # And the kept keys read it
    store = object_store_from_settings(settings)
    assert b"".join(store.get_stream(embedded.key)) == embedded.body


def _password(settings: Settings, name: str) -> str | None:
    return urlsplit(getattr(settings, name)).password


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_credentials_are_kept_in_files_only_their_owner_can_read(embedded: Embedded) -> None:
    # Given the data directory of the running servers
    data_dir = embedded.data_dir
    # When its secrets, the servers' configuration files and their directories are looked at
    files = [
        *sorted((data_dir / SECRETS_DIR).iterdir()),
        data_dir / "s3" / "identities.json",
        data_dir / "s3" / "security.toml",
        *sorted((data_dir / "s3" / "tls").iterdir()),
        data_dir / "redis" / "redis.conf",
    ]
    directories = [data_dir / SECRETS_DIR, data_dir / "s3", data_dir / "s3" / "tls", data_dir / "redis"]
    # Then every file is 0600 and every directory 0700
    assert {f.name for f in (data_dir / SECRETS_DIR).iterdir()} == {
        "import-key",
        "postgres",
        "postgres-bulkhead_admin",
        "postgres-bulkhead_app",
        "redis",
    }
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert {d.name: _mode(d) for d in directories} == {d.name: 0o700 for d in directories}
    assert _mode(data_dir / "postgres") == 0o700
    # And the passwords are long, distinct, and the Redis one is not in its configuration
    passwords = [f.read_text().strip() for f in (data_dir / SECRETS_DIR).iterdir()]
    assert len(set(passwords)) == 5 and min(map(len, passwords)) >= 32
    redis_password = (data_dir / SECRETS_DIR / "redis").read_text().strip()
    assert redis_password not in (data_dir / "redis" / "redis.conf").read_text()


def test_a_restart_on_the_same_data_directory_uses_the_kept_credentials_and_keeps_the_data() -> None:
    with serve_data_dir() as data_dir:
        # Given servers that ran once on a data directory and kept a row, a key and an object
        supervisor, settings = _start(data_dir)
        try:
            assert settings.migration_database_url and settings.redis_url
            with psycopg.connect(settings.migration_database_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE kept (v text)")
                conn.execute("INSERT INTO kept VALUES ('row')")
            redis.Redis.from_url(settings.redis_url).set("kept", b"key")
            store = object_store_from_settings(settings)
            store.put_bytes("bulkhead/kept.ndjson", b"object\n")
            first = settings
        finally:
            supervisor.stop()
        # When they start again on it
        supervisor, settings = _start(data_dir)
        try:
            # Then they use the same credentials, which still open everything kept
            urls = ("migration_database_url", "database_url", "redis_url")
            assert [_password(settings, u) for u in urls] == [_password(first, u) for u in urls]
            assert (settings.s3_access_key, settings.s3_secret_key) == (
                first.s3_access_key,
                first.s3_secret_key,
            )
            assert settings.migration_database_url and settings.redis_url
            with psycopg.connect(settings.migration_database_url) as conn:
                assert conn.execute("SELECT v FROM kept").fetchall() == [("row",)]
            assert redis.Redis.from_url(settings.redis_url).get("kept") == b"key"
            assert (
                b"".join(object_store_from_settings(settings).get_stream("bulkhead/kept.ndjson"))
                == b"object\n"
            )
            # And nothing is open without them
            assert supervisor.postgres is not None and supervisor.redis is not None
            assert (
                postgres_login(host="127.0.0.1", port=supervisor.postgres.port, user="postgres") is not None
            )
            assert redis_exchange(supervisor.redis.port, b"PING")[0].startswith(b"-NOAUTH")
        finally:
            supervisor.stop()


#: What ``pg_hba.conf`` said in a data directory made before passwords (initdb ``--auth=trust``).
_TRUSTING_HBA = """\
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
"""


def test_an_older_data_directory_that_trusted_local_users_is_secured_on_its_next_start() -> None:
    with serve_data_dir() as data_dir:
        # Given a PostgreSQL data directory as an older version left it: trust for every local user, a
        # superuser without a password, a table in it, and no kept secrets
        server = embedded_postgres(data_dir)
        owner_url = server.start()
        try:
            with psycopg.connect(owner_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE kept (v text)")
                conn.execute("INSERT INTO kept VALUES ('row')")
                conn.execute("ALTER ROLE postgres PASSWORD NULL")
        finally:
            server.stop()
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(_TRUSTING_HBA)
        for secret in (data_dir / SECRETS_DIR).iterdir():
            secret.unlink()
        # When the current version starts it
        upgraded = embedded_postgres(data_dir)
        started = time.monotonic()
        url = upgraded.start()
        try:
            elapsed = time.monotonic() - started
            # Then logins without a password are refused, on TCP and on the socket
            assert postgres_login(host="127.0.0.1", port=upgraded.port, user="postgres") is not None
            assert (
                postgres_login(host=str(upgraded.data_dir), port=upgraded.port, user="postgres") is not None
            )
            assert hba.read_text() == PG_HBA
            # And the newly kept password opens the data that was there
            assert (data_dir / SECRETS_DIR / "postgres").read_text().strip() == upgraded.password
            assert _mode(data_dir / SECRETS_DIR / "postgres") == 0o600
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT v FROM kept").fetchall() == [("row",)]
            assert elapsed < 30, elapsed
        finally:
            upgraded.stop()
