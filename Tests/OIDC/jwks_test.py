"""OpenID Connect keys through a maintained client library: PyJWT's PyJWKClient fetches the
JWKS served by the built identity-service executable (--http-port 0) and verifies an RS256
token signed with the private key identity stored for ID tokens (read from its SQLite store,
as only identity itself signs with it). A JWKS whose n or e were wrong, or a kid not matching
the stored key, fails here. Run with `bash Tests/OIDC/run.sh`.
"""

import json
import time
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_der_private_key

from oidc_support import serve_identity

ADMIN_PASSWORD = "Oidc-admin-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_identity(tmp_path_factory.mktemp("identity-oidc"), ADMIN_PASSWORD)


def jwks_url(server):
    return "http://127.0.0.1:%d/.well-known/jwks.json" % server.http_port


def stored_keys(server):
    """(kid, private key) of every RSA key in identity's store."""
    return [(kid, load_der_private_key(der, password=None))
            for kid, der in server.store.rsa_keys()]


def test_issuer_is_logged_with_the_http_port(server):
    assert server.issuer == "http://127.0.0.1:%d" % server.http_port


def test_jwks_verifies_a_token_signed_with_the_stored_key(server):
    client = jwt.PyJWKClient(jwks_url(server), cache_keys=False)
    keys = client.get_signing_keys()
    assert [k.key_type for k in keys] == ["RSA"]
    assert keys[0].algorithm_name == "RS256"
    assert keys[0].key.key_size >= 2048
    (kid, private_key), = [k for k in stored_keys(server) if k[0] == keys[0].key_id]
    now = int(time.time())
    token = jwt.encode({"sub": "u1", "aud": "app", "iat": now, "exp": now + 60}, private_key,
                       algorithm="RS256", headers={"kid": kid})
    signing_key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], audience="app")
    assert claims["sub"] == "u1"


def test_a_token_signed_by_another_key_is_refused(server):
    from cryptography.hazmat.primitives.asymmetric import rsa
    client = jwt.PyJWKClient(jwks_url(server), cache_keys=False)
    kid = client.get_signing_keys()[0].key_id
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "u1"}, other, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, client.get_signing_key_from_jwt(token).key, algorithms=["RS256"])


def test_jwks_is_plain_json_with_the_fields_clients_need(server):
    with urllib.request.urlopen(jwks_url(server), timeout=10) as response:
        assert response.headers["Content-Type"] == "application/json"
        document = json.load(response)
    (key,) = document["keys"]
    assert {k: key[k] for k in ("kty", "use", "alg")} == {"kty": "RSA", "use": "sig",
                                                         "alg": "RS256"}
    assert key["kid"] and key["n"] and key["e"] == "AQAB"
