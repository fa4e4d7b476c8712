"""``$import`` from the attacker's side: a tenant names URLs only the server can reach.

The attack that was found: with a token for partition E only, imports of the embedded object store's
unauthenticated HTTP listing (``…/buckets/bulkhead/bulkhead/A/?namePattern=<prefix><c>*``) revealed A's
export job id through per-input error counts, then ``…/A/<job>/Patient-1-1.ndjson`` copied A's data into E;
the same fetch reached Redis, PostgreSQL and the API, and its different errors were a port scanner. Here a
second loopback HTTP server stands for that listing (it is not on the allow-list the suite's settings carry),
and the real PostgreSQL, Redis and S3 servers of the run are the services probed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from core.settings import Settings
from harness.services import S3Settings
from storage import Database
from storage.objectstore import S3ObjectStore
from tests.support.bulkapi import BulkApi, bulk_api
from tests.support.fhir import base
from tests.support.http_files import FileServer, file_server

SECRET_TEXT = "A-only-secret-family"


@pytest.fixture
def api(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    monkeypatch: pytest.MonkeyPatch,
) -> BulkApi:
    """Return the API with in-process job machinery and the suite's input policy."""
    return bulk_api(s3_settings.apply(settings), database, object_store, monkeypatch)


@pytest.fixture
def filer() -> Iterator[FileServer]:
    """A loopback HTTP server nobody allowed: it stands for the object store's own file server."""
    with file_server() as server:
        yield server


def ndjson(*families: str) -> bytes:
    """Return NDJSON patients, one per family name."""
    return b"".join(
        orjson.dumps({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f}]}) + b"\n"
        for i, f in enumerate(families)
    )


def body(*urls: str, basic: str | None = None) -> dict[str, Any]:
    """Return a ``$import`` Parameters body reading ``urls``."""
    params: list[dict[str, Any]] = [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
    if basic is not None:
        params.append(
            {"name": "storageDetail", "part": [{"name": "credentialHttpBasic", "valueString": basic}]}
        )
    params += [{"name": "input", "part": [{"name": "url", "valueUri": u}]} for u in urls]
    return {"resourceType": "Parameters", "parameter": params}


def diagnostics(response: Any) -> list[str]:
    """Return the diagnostics of an OperationOutcome answer."""
    return [i.get("diagnostics", "") for i in response.get_json()["issue"]]


def stored_families(api: BulkApi, partition: str) -> list[str]:
    """Return the family names of the partition's patients."""
    found = api.client.get(f"{base(partition)}/Patient?_count=100").get_json()
    return [e["resource"]["name"][0]["family"] for e in found.get("entry", [])]


def endpoint(url: str) -> str:
    """Return ``host:port`` of a service URL."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def test_a_listing_and_a_file_of_another_tenant_on_a_loopback_server_are_refused_alike(
    api: BulkApi, filer: FileServer, partition: str, other_partition: str
):
    # Given another partition's export output, and the listing of its prefix, on a loopback server
    exported = filer.put(
        f"/buckets/bulkhead/bulkhead/{other_partition}/job/Patient-1-1.ndjson", ndjson(SECRET_TEXT)
    )
    listing = filer.base_url + f"/buckets/bulkhead/bulkhead/{other_partition}/?namePattern=a*"
    missing = filer.base_url + f"/buckets/bulkhead/bulkhead/{other_partition}/?namePattern=b*"
    # When the attacker's partition imports each
    answers = [api.post(f"{base(partition)}/$import", body(u)) for u in (exported, listing, missing)]
    # Then each is refused at kick-off with the same words, the server was never asked, nothing is stored
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert {d for a in answers for d in diagnostics(a)} == {"input 0 could not be read: not allowed"}
    assert filer.requests == []
    assert stored_families(api, partition) == []


def test_the_servers_own_services_cannot_be_told_apart_by_an_import(
    api: BulkApi,
    owner_database_url: str,
    redis_url: str,
    s3_settings: S3Settings,
    partition: str,
):
    # Given the run's PostgreSQL, Redis and S3 ports, the API's own address, and a port nobody listens on
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    targets = [
        endpoint(owner_database_url),
        endpoint(redis_url),
        endpoint(s3_settings.s3_endpoint_url),
        "127.0.0.1:8080",
        f"127.0.0.1:{free}",
        "localhost:6379",
        "[::1]:5432",
        "[::ffff:127.0.0.1]:5432",
        "0.0.0.0:5432",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1:9000",
        "100.64.0.1",
    ]
    # When the attacker imports from each
    answers = [api.post(f"{base(partition)}/$import", body(f"http://{t}/x.ndjson")) for t in targets]
    # Then every answer is the same 400: no port answers differently from another
    assert {a.status_code for a in answers} == {400}
    assert {tuple(diagnostics(a)) for a in answers} == {("input 0 could not be read: not allowed",)}


def test_a_name_that_resolves_to_loopback_at_fetch_time_is_refused_on_the_address_connected_to(
    api: BulkApi, filer: FileServer, partition: str, monkeypatch: pytest.MonkeyPatch
):
    # Given a public-looking name whose resolver answers with the loopback server's address (DNS
    # rebinding: it passes any check made on the name), and a numeric host glibc reads as 127.0.0.1
    filer.put("/a.ndjson", ndjson(SECRET_TEXT))
    port = urlsplit(filer.base_url).port
    real = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "files.rebind.example":
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    for url in (f"http://files.rebind.example:{port}/a.ndjson", f"http://0x7f.1:{port}/a.ndjson"):
        # When the attacker's partition imports it
        kick = api.post(f"{base(partition)}/$import", body(url))
        assert kick.status_code == 202, kick.get_json()
        done = api.finish(kick.headers["Content-Location"])
        # Then the job fails with the uniform words, the loopback server was never reached, nothing stored
        assert done.status_code == 400, done.get_json()
        assert diagnostics(done)[0] == "input 0 could not be read: not allowed"
    assert filer.requests == []
    assert stored_families(api, partition) == []


def test_a_redirect_from_an_allowed_server_to_one_nobody_allowed_is_refused(
    api: BulkApi, files: FileServer, filer: FileServer, partition: str
):
    # Given an allowed server that redirects to the loopback server nobody allowed
    target = filer.put("/secret.ndjson", ndjson(SECRET_TEXT))
    url = files.redirect(f"/{partition}/moved.ndjson", target)
    # When it is imported
    kick = api.post(f"{base(partition)}/$import", body(url))
    done = api.finish(kick.headers["Content-Location"])
    # Then the redirect is not followed: the job fails as not allowed and nothing is stored
    assert done.status_code == 400, done.get_json()
    assert diagnostics(done)[0] == "input 0 could not be read: not allowed"
    assert filer.requests == []
    assert stored_families(api, partition) == []


def test_s3_inputs_outside_the_partitions_upload_prefix_are_refused(
    api: BulkApi, object_store: S3ObjectStore, partition: str, other_partition: str
):
    # Given the other partition's export output and uploads, this partition's own export output, and a
    # bucket the operator did not allow, all readable with the server's own credentials
    bucket = object_store.bucket
    keys = [
        f"bulkhead/{other_partition}/{'a' * 32}/Patient-1-1.ndjson",
        f"bulkhead/{other_partition}/uploads/x/p.ndjson",
        f"bulkhead/{partition}/{'b' * 32}/Patient-1-1.ndjson",
    ]
    for key in keys:
        object_store.put_bytes(key, ndjson(SECRET_TEXT))
    urls = [f"s3://{bucket}/{k}" for k in keys] + [
        f"s3://{bucket}/bulkhead/{partition}/uploads/../../{other_partition}/uploads/x/p.ndjson",
        f"s3://{bucket}/bulkhead/{other_partition}/",
        "s3://partner-drop/in/x.ndjson",
    ]
    # When this partition imports each / Then each is refused (400) with nothing stored
    for url in urls:
        answer = api.post(f"{base(partition)}/$import", body(url))
        assert answer.status_code == 400, (url, answer.get_json())
        assert (
            "could not be read: not allowed" in diagnostics(answer)[0]
            or "not of the form" in diagnostics(answer)[0]
        ), url
    assert stored_families(api, partition) == []


def test_an_s3_prefix_input_imports_every_object_under_the_partitions_own_prefix(
    api: BulkApi, object_store: S3ObjectStore, partition: str
):
    # Given two files under a folder of the partition's upload prefix
    head = f"bulkhead/{partition}/uploads/batch-1/"
    object_store.put_bytes(head + "a.ndjson", ndjson("Alpha", "Beta"))
    object_store.put_bytes(head + "b.ndjson", ndjson("Gamma").replace(b'"p0"', b'"q0"'))
    url = f"s3://{object_store.bucket}/{head}"
    # When the prefix is imported
    done = api.finish(api.post(f"{base(partition)}/$import", body(url)).headers["Content-Location"])
    # Then every object under it was imported, counted under the one input
    assert done.status_code == 200, done.get_json()
    assert sorted(stored_families(api, partition)) == ["Alpha", "Beta", "Gamma"]
    outputs = done.get_json()["output"]
    assert {o["inputUrl"] for o in outputs} == {url}
    assert sum(o["count"] for o in outputs) == 3


def test_credentials_and_signed_query_strings_are_never_echoed_logged_or_stored_in_plaintext(
    api: BulkApi,
    files: FileServer,
    owner_database_url: str,
    partition: str,
    caplog: pytest.LogCaptureFixture,
):
    # Given a pre-signed-style URL with a user in it, and HTTP Basic credentials
    path = f"/{partition}/signed.ndjson"
    files.put(path, ndjson("Signed") + b"not json\n")
    host = files.base_url.removeprefix("http://")
    url = f"http://reader:url-pass-4821@{host}{path}?X-Amz-Signature=sig-9f3e7d&X-Amz-Expires=60"
    caplog.set_level(logging.DEBUG)
    # When it is imported
    kick = api.post(f"{base(partition)}/$import", body(url, basic="alice:basic-pass-7731"))
    assert kick.status_code == 202, kick.get_json()
    done = api.finish(kick.headers["Content-Location"])
    # Then the import used the real URL and credentials
    assert done.status_code == 200, done.get_json()
    assert stored_families(api, partition) == ["Signed"]
    assert any(p.endswith("X-Amz-Signature=sig-9f3e7d&X-Amz-Expires=60") for _, p, _ in files.requests)
    assert any(a and a.startswith("Basic ") for a in files.authorizations)
    # And no secret is in the status answer, the error file, the logs or the job table
    status = done.get_data(as_text=True)
    error_file = api.client.get(api.path(done.get_json()["error"][0]["url"])).get_data(as_text=True)
    with psycopg.connect(owner_database_url) as conn:
        rows = conn.execute("SELECT definition::text, coalesce(result::text, '') FROM job").fetchall()
    stored = " ".join(a + b for a, b in rows)
    for secret in ("url-pass-4821", "sig-9f3e7d", "basic-pass-7731", "alice:"):
        assert secret not in status
        assert secret not in error_file
        assert secret not in caplog.text
        assert secret not in stored
    assert "redacted" in status


def test_a_server_without_a_sealing_key_refuses_an_import_that_carries_credentials(
    settings: Settings,
    s3_settings: S3Settings,
    database: Database,
    object_store: S3ObjectStore,
    files: FileServer,
    partition: str,
    monkeypatch: pytest.MonkeyPatch,
):
    # Given a server with no BULKHEAD_IMPORT_SECRET_KEY
    from dataclasses import replace

    api = bulk_api(
        s3_settings.apply(replace(settings, import_secret_key=None)), database, object_store, monkeypatch
    )
    url = files.put(f"/{partition}/c.ndjson", ndjson("C"))
    # When an import carries HTTP Basic credentials / Then it is refused: they would be stored in plaintext
    answer = api.post(f"{base(partition)}/$import", body(url, basic="alice:pw"))
    assert answer.status_code == 400
    assert "BULKHEAD_IMPORT_SECRET_KEY" in diagnostics(answer)[0]
    # And one without credentials still runs
    done = api.finish(api.post(f"{base(partition)}/$import", body(url)).headers["Content-Location"])
    assert done.status_code == 200, done.get_json()


def test_an_html_listing_from_an_allowed_server_is_not_imported_line_by_line(
    api: BulkApi, files: FileServer, partition: str
):
    # Given an allowed server that answers a directory listing as HTML
    url = files.put(
        f"/{partition}/listing/",
        b"<html><a href='x'>x</a>\n<a href='y'>y</a></html>\n",
        Content_Type="text/html",
    )
    # When it is imported
    done = api.finish(api.post(f"{base(partition)}/$import", body(url)).headers["Content-Location"])
    # Then the job fails as unreadable: no error count or line reflects what the listing held
    assert done.status_code == 400, done.get_json()
    assert diagnostics(done)[0] == "input 0 could not be read: not an NDJSON file"
