"""Forwarded headers are believed only from proxies the operator configured (``BULKHEAD_TRUSTED_PROXIES``).

Found from outside: with no proxy in front, ``X-Forwarded-For`` chose the audited source address, and
``X-Forwarded-Host`` + ``X-Forwarded-Proto`` chose the host of ``Location``, ``Content-Location`` and the
stored export ``request``.
"""

from __future__ import annotations

from dataclasses import replace

from flask import Flask

from api import create_app
from harness.tokens import bearer
from tests.support.fhir import FHIR, base

SPOOF = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


def _app(secure_app: Flask, **overrides: object) -> Flask:
    settings = replace(secure_app.config["BULKHEAD_SETTINGS"], public_base_url=None, **overrides)
    return create_app(settings, database=secure_app.extensions["bulkhead.db"])


def test_with_no_trusted_proxy_forwarded_headers_change_neither_urls_nor_the_audit(
    secure_app, auth_keys, partition
):
    # Given the default (no proxy trusted) and a client that sends forwarded headers itself
    client = _app(secure_app).test_client()
    token = {**bearer(auth_keys.hs256([partition])), "Content-Type": FHIR}
    # When it creates a resource and kicks off an export with them
    created = client.post(
        f"{base(partition)}/Patient", json={"resourceType": "Patient"}, headers={**token, **SPOOF}
    )
    export = client.get(f"{base(partition)}/$export", headers={**token, **SPOOF, "Prefer": "respond-async"})
    # Then every URL names the host the request really reached
    assert created.status_code == 201
    assert created.headers["Location"].startswith("http://localhost/")
    assert export.status_code == 202
    assert export.headers["Content-Location"].startswith("http://localhost/")
    # And the audit trail has the real peer address, not the forwarded one
    events = client.get(
        "/_audit", query_string={"partition": partition}, headers=bearer(auth_keys.admin())
    ).get_json()["entry"]
    addresses = {a.get("network", {}).get("address") for e in events for a in e["resource"]["agent"]}
    assert "6.6.6.6" not in addresses
    assert "127.0.0.1" in addresses


def test_behind_one_trusted_proxy_its_forwarded_headers_are_used(secure_app, auth_keys, partition):
    # Given one trusted proxy in front
    client = _app(secure_app, trusted_proxies=1).test_client()
    token = {**bearer(auth_keys.hs256([partition])), "Content-Type": FHIR}
    # When the proxy forwards a request with its headers
    created = client.post(
        f"{base(partition)}/Patient", json={"resourceType": "Patient"}, headers={**token, **SPOOF}
    )
    # Then the URLs name the host and scheme the proxy was reached under
    assert created.headers["Location"].startswith("https://evil.example/")
