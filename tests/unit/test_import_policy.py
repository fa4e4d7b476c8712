"""The import input policy, without a network: addresses, the operator's list, buckets, redaction."""

from __future__ import annotations

import pytest

from core.errors import InputUnreadable, InvalidRequest
from core.importpolicy import InputPolicy, address_is_public, display_url, has_secret, policy_of
from core.importsecrets import Sealer
from core.importspec import ImportInput, ImportSpec
from core.settings import Settings


def policy(allowed: str = "", buckets: str = "") -> InputPolicy:
    """Return a policy for bucket ``bulkhead`` with prefix ``bulkhead``."""
    return InputPolicy.of(
        allowed_urls=allowed,
        allowed_buckets=buckets,
        own_bucket="bulkhead",
        own_prefix="bulkhead",
        own_service_urls=["postgresql://u@db.example.org:5432/x", "https://fhir.example.org"],
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",
        "not an address",
    ],
)
def test_loopback_private_link_local_shared_and_mapped_addresses_are_not_public(address: str):
    assert not address_is_public(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_globally_routable_addresses_are_public(address: str):
    assert address_is_public(address)


@pytest.mark.parametrize(
    ("allowed", "url", "expected"),
    [
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8123/a.ndjson", True),
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8124/a.ndjson", False),
        ("http://127.0.0.1:8123/", "https://127.0.0.1:8123/a.ndjson", False),
        ("http://127.0.0.1:8123/drop", "http://127.0.0.1:8123/drop/a.ndjson", True),
        ("http://127.0.0.1:8123/drop", "http://127.0.0.1:8123/dropbox/a.ndjson", False),
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8123@10.0.0.1/a.ndjson", False),
        ("files.example.org", "https://files.example.org/a", True),
        ("files.example.org", "https://files.example.org.evil.example/a", False),
        ("files.example.org", "https://FILES.example.org./a", True),
        ("127.0.0.1:8123", "http://127.0.0.1:8123/a", True),
        ("127.0.0.1:8123", "http://127.0.0.1:6379/a", False),
        ("", "http://127.0.0.1:8123/a", False),
    ],
)
def test_the_operators_list_allows_exactly_its_prefixes_and_hosts(allowed: str, url: str, expected: bool):
    assert policy(allowed).operator_allows(url) is expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://api.localhost/x",
        "http://filer/x",
        "http://[::1]/x",
        "http://2130706433/x",
        "http://db.example.org:5432/x",
        "https://fhir.example.org/Patient",
        "ftp://files.example.org/x",
    ],
)
def test_literal_non_public_hosts_and_the_servers_own_services_are_refused_at_kick_off(url: str):
    with pytest.raises(InputUnreadable, match=r"^input 3 could not be read: not allowed$"):
        policy().check_http(3, url)


def test_a_public_name_passes_the_kick_off_check_its_address_is_checked_when_connecting():
    policy().check_http(0, "https://files.example.org/a.ndjson")


@pytest.mark.parametrize(
    ("bucket", "key", "allowed"),
    [
        ("bulkhead", "bulkhead/E/uploads/x/a.ndjson", True),
        ("bulkhead", "bulkhead/E/uploads/", True),
        ("bulkhead", "bulkhead/A/uploads/x/a.ndjson", False),
        ("bulkhead", "bulkhead/E/0123456789abcdef0123456789abcdef/Patient-1-1.ndjson", False),
        ("bulkhead", "bulkhead/E/", False),
        ("bulkhead", "bulkhead/E/uploads/../../A/uploads/a", False),
        ("bulkhead", "bulkhead/Eve/uploads/a", False),
        ("partner-drop", "in/x.ndjson", False),
        ("allowed-drop", "in/x.ndjson", True),
    ],
)
def test_s3_inputs_are_the_allowed_buckets_and_the_partitions_own_upload_prefix(
    bucket: str, key: str, allowed: bool
):
    rules = policy(buckets="allowed-drop")
    if allowed:
        rules.check_s3(0, bucket, key, "E")
    else:
        with pytest.raises(InputUnreadable, match=r"^input 0 could not be read: not allowed$"):
            rules.check_s3(0, bucket, key, "E")


def test_urls_are_shown_without_credentials_or_query_values():
    url = "https://alice:pw@files.example.org:8443/a.ndjson?X-Amz-Signature=abc&X-Amz-Expires=60"
    shown = display_url(url)
    assert shown == (
        "https://redacted@files.example.org:8443/a.ndjson?X-Amz-Signature=redacted&X-Amz-Expires=redacted"
    )
    assert has_secret(url) and not has_secret("https://files.example.org/a.ndjson")


def test_a_sealed_spec_keeps_no_secret_and_opens_to_the_real_url_with_the_same_key():
    spec = ImportSpec(
        inputs=(ImportInput("https://u:pw@files.example.org/a?sig=s3cr3t"), ImportInput("s3://bkt/k")),
        http_basic="alice:pw2",
    )
    sealer = Sealer("key-1")
    stored = ImportSpec.from_json(spec.sealed(sealer).to_json())
    text = str(stored.to_json())
    assert "s3cr3t" not in text and "pw2" not in text and ":pw@" not in text
    assert [i.real_url(sealer) for i in stored.inputs] == [i.url for i in spec.inputs]
    assert stored.basic(sealer) == "alice:pw2"
    with pytest.raises(InvalidRequest, match="another BULKHEAD_IMPORT_SECRET_KEY"):
        stored.basic(Sealer("key-2"))
    with pytest.raises(InvalidRequest, match="BULKHEAD_IMPORT_SECRET_KEY"):
        spec.sealed(Sealer(None))


def test_the_settings_policy_names_the_servers_own_database_redis_and_address():
    rules = policy_of(
        Settings(
            database_url="postgresql://a@db.internal:5432/x",
            redis_url="redis://cache.example.org:6379/0",
            host="0.0.0.0",
            port=8080,
        )
    )
    assert rules.is_own_service("cache.example.org", 6379)
    assert rules.is_own_service("db.internal", 5432)
    assert not rules.is_own_service("files.example.org", 443)
