"""SMART Backend Services: discovery, client assertions, tokens bound to the client's partition."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cli.main import main
from harness.tokens import AUDIENCE, bearer, public_jwk
from storage.smart_clients import SmartClient, find_client, register_client
from tests.support.fhir import base, put

TOKEN_URL = "http://bulkhead.test/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Client:
    """A registered backend-services client with its private key."""

    def __init__(self, client_id: str, key: Any, alg: str):
        self.client_id, self.key, self.alg = client_id, key, alg

    def assertion(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
            **overrides,
        }
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": "k1"})


def _register(database, partition: str, alg: str = "RS384", scope: str = "system/*.rs") -> Client:  # type: ignore[no-untyped-def]
    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg.startswith("RS")
        else ec.generate_private_key(ec.SECP384R1())
    )
    client_id = f"client-{secrets.token_hex(4)}"
    jwks = {"keys": [public_jwk(key, "k1", alg)]}
    register_client(database, SmartClient(client_id=client_id, partition=partition, scope=scope, jwks=jwks))
    return Client(client_id, key, alg)


def _token(client, assertion: str, scope: str = "system/*.rs"):  # type: ignore[no-untyped-def]
    return client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )


def test_discovery_names_the_token_endpoint_under_every_base(secure_client, partition):
    # Given a server with authentication on
    # When a client reads the SMART configuration at the root and under a partition
    root = secure_client.get("/.well-known/smart-configuration")
    scoped = secure_client.get(f"{base(partition)}/.well-known/smart-configuration")
    # Then both name the token endpoint and private_key_jwt with RS384/ES384
    for response in (root, scoped):
        assert response.status_code == 200
        body = response.get_json()
        assert body["token_endpoint"] == TOKEN_URL
        assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert {"RS384", "ES384"} <= set(body["token_endpoint_auth_signing_alg_values_supported"])
        assert "client-confidential-asymmetric" in body["capabilities"]


def test_discovery_is_absent_when_authentication_is_off(client):
    # Given the default server (authentication off)
    # When a client looks for the SMART configuration
    response = client.get("/.well-known/smart-configuration")
    # Then there is none
    assert response.status_code == 404


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_a_registered_client_gets_a_token_that_works_in_its_partition_only(
    secure_client, database, auth_keys, partition, other_partition, alg
):
    # Given Patient/p1 in two partitions and a client registered in the first
    for name in (partition, other_partition):
        put(
            secure_client,
            f"{base(name)}/Patient/p1",
            {"resourceType": "Patient", "id": "p1"},
            **bearer(auth_keys.admin()),
        )
    registered = _register(database, partition, alg)
    # When it exchanges a signed assertion for a token, and reads in both partitions
    response = _token(secure_client, registered.assertion())
    assert response.status_code == 200, response.data
    body = response.get_json()
    token = body["access_token"]
    mine = secure_client.get(f"{base(partition)}/Patient/p1", headers=bearer(token))
    theirs = secure_client.get(f"{base(other_partition)}/Patient/p1", headers=bearer(token))
    # Then the token is a bearer token for its partition only
    assert body["token_type"] == "bearer"
    assert body["scope"] == "system/*.rs"
    assert response.headers["Cache-Control"] == "no-store"
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == AUDIENCE
    assert mine.status_code == 200
    assert theirs.status_code == 403


def test_requested_scopes_are_narrowed_to_the_clients_registered_scopes(secure_client, database, partition):
    # Given a client allowed to read Patients only
    registered = _register(database, partition, scope="system/Patient.rs")
    # When it asks for everything
    response = _token(secure_client, registered.assertion(), scope="system/*.cruds")
    # Then it gets what it is allowed
    assert response.status_code == 200
    assert response.get_json()["scope"] == "system/Patient.rs"


def test_a_client_asking_for_nothing_it_may_have_gets_invalid_scope(secure_client, database, partition):
    # Given a client allowed to read
    registered = _register(database, partition)
    # When it asks for write scopes only
    response = _token(secure_client, registered.assertion(), scope="system/*.cud")
    # Then the request fails with invalid_scope
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_scope"


def _bad_assertions(registered: Client) -> dict[str, str]:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return {
        "expired": registered.assertion(exp=now - 600),
        "too long-lived": registered.assertion(exp=now + 3600),
        "wrong audience": registered.assertion(aud="https://elsewhere.test/token"),
        "sub differs from iss": registered.assertion(sub="someone-else"),
        "no jti": jwt.encode(
            {"iss": registered.client_id, "sub": registered.client_id, "aud": TOKEN_URL, "exp": now + 60},
            registered.key,
            algorithm=registered.alg,
            headers={"kid": "k1"},
        ),
        "signed by another key": jwt.encode(
            {
                "iss": registered.client_id,
                "sub": registered.client_id,
                "aud": TOKEN_URL,
                "exp": now + 60,
                "jti": "x",
            },
            other,
            algorithm="RS384",
            headers={"kid": "k1"},
        ),
        "unknown client": registered.assertion(iss="nobody", sub="nobody"),
        "HS256": jwt.encode(
            {
                "iss": registered.client_id,
                "sub": registered.client_id,
                "aud": TOKEN_URL,
                "exp": now + 60,
                "jti": "y",
            },
            "s" * 64,
            algorithm="HS256",
        ),
        "garbage": "not-a-jwt",
    }


def test_bad_client_assertions_get_invalid_client_and_no_token(secure_client, database, partition):
    # Given a registered client and assertions that are wrong in one way each
    registered = _register(database, partition)
    for case, assertion in _bad_assertions(registered).items():
        # When each is exchanged
        response = _token(secure_client, assertion)
        # Then the endpoint answers invalid_client without a token
        assert response.status_code == 401, case
        assert response.get_json()["error"] == "invalid_client", case
        assert "access_token" not in response.get_json()


def test_a_replayed_assertion_is_refused(secure_client, database, partition):
    # Given an assertion already exchanged once
    registered = _register(database, partition)
    assertion = registered.assertion()
    assert _token(secure_client, assertion).status_code == 200
    # When it is sent again
    replay = _token(secure_client, assertion)
    # Then it is refused
    assert replay.status_code == 401
    assert "already used" in replay.get_json()["error_description"]


def test_other_grant_types_are_unsupported(secure_client):
    # Given the token endpoint
    # When a password grant is attempted
    response = secure_client.post("/auth/token", data={"grant_type": "password", "username": "u"})
    # Then it is refused as an unsupported grant type
    assert response.status_code == 400
    assert response.get_json()["error"] == "unsupported_grant_type"


def test_the_cli_registers_a_client_and_mints_development_tokens(
    tmp_path, monkeypatch, database, database_url, auth_keys, secure_client, partition
):
    # Given the CLI configured like the server
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    import json

    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1", "RS384")]}))
    monkeypatch.setenv("BULKHEAD_DATABASE_URL", database_url)
    monkeypatch.setenv("BULKHEAD_AUTH_SIGNING_KEY_FILE", str(auth_keys.signing_key_file))
    monkeypatch.setenv("BULKHEAD_AUTH_ISSUER", "https://issuer.bulkhead.test")
    monkeypatch.setenv("BULKHEAD_AUTH_AUDIENCE", AUDIENCE)
    runner = CliRunner()
    # When a client is added and a token is minted for the partition
    added = runner.invoke(
        main,
        [
            "client",
            "add",
            "--client-id",
            f"cli-{partition}",
            "--partition",
            partition,
            "--jwks",
            str(jwks),
            "--scope",
            "system/*.rs",
        ],
    )
    minted = runner.invoke(main, ["token", "--partition", partition, "--scope", "system/*.rs"])
    # Then the client is stored, and the token reads in the partition and nowhere else
    assert added.exit_code == 0, added.output
    stored = find_client(database, f"cli-{partition}")
    assert stored is not None and stored.partition == partition
    assert minted.exit_code == 0, minted.output
    token = minted.output.strip()
    assert secure_client.get(f"{base(partition)}/Patient/x", headers=bearer(token)).status_code == 404
    assert secure_client.get("/partitions/elsewhere/Patient/x", headers=bearer(token)).status_code == 403


def test_the_cli_sets_and_shows_partition_limits(monkeypatch, database_url, partition):
    # Given the CLI on the test database
    monkeypatch.setenv("BULKHEAD_DATABASE_URL", database_url)
    runner = CliRunner()
    # When limits are set in two steps, shown, then unset
    first = runner.invoke(main, ["partition-config", "set", partition, "--max-concurrent-jobs", "2"])
    second = runner.invoke(main, ["partition-config", "set", partition, "--rate-per-second", "5"])
    shown = runner.invoke(main, ["partition-config", "show", partition])
    bad = runner.invoke(main, ["partition-config", "set", partition, "--max-body-bytes", "-4"])
    unset = runner.invoke(main, ["partition-config", "unset", partition])
    # Then the second set kept the first value, bad values are refused, and unset removes them
    assert first.exit_code == second.exit_code == shown.exit_code == 0, first.output + second.output
    assert "max_concurrent_jobs: 2  (override)" in shown.output
    assert "rate_per_second: 5.0  (override)" in shown.output
    assert bad.exit_code != 0
    assert "overrides removed" in unset.output


def test_the_capability_statement_names_smart_and_the_token_endpoint_only_when_auth_is_on(
    client, secure_client, partition
):
    # Given a server with authentication off and one with it on
    # When each CapabilityStatement is read
    off = client.get(f"{base(partition)}/metadata").get_json()["rest"][0]
    on = secure_client.get(f"{base(partition)}/metadata").get_json()["rest"][0]
    # Then only the secured server declares SMART on FHIR and its token endpoint
    assert "security" not in off
    assert on["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = on["security"]["extension"][0]["extension"]
    assert {"url": "token", "valueUri": TOKEN_URL} in uris
