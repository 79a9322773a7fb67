"""OpenID Connect keys through a maintained client library: PyJWT's PyJWKClient fetches the
JWKS served by the built identity-service executable (--http-port 0) and verifies an RS256
token signed with the private key identity stored for ID tokens (read from its SQLite store,
as only identity itself signs with it). A JWKS whose n or e were wrong, or a kid not matching
the stored key, fails here. Run with `bash Tests/OIDC/run.sh`.
"""

import json
import os
import queue
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_der_private_key

ROOT = Path(os.environ.get("SMARTSCHOOL_ROOT", Path(__file__).resolve().parents[2]))
EXECUTABLE = ROOT / ".build" / "debug" / "identity-service"
ADMIN_PASSWORD = "Oidc-admin-42"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 20


class Server:
    """identity-service with its HTTP port on; the ports from its 'listening' log lines."""

    def __init__(self, data_dir):
        env = dict(os.environ, SMARTSCHOOL_ADMIN_PASSWORD=ADMIN_PASSWORD,
                   SMARTSCHOOL_IDENTITY_HTTP_PORT="0")
        self.process = subprocess.Popen(
            [str(EXECUTABLE), "--host", "127.0.0.1", "--port", "0", "--metrics-port=-1",
             "--data-dir", str(data_dir), "--scrypt-log-n", "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True)
        self.lines = []
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.grpc_port = self.http_port = None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.grpc_port is None or self.http_port is None:
            try:
                event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                raise AssertionError("no 'listening' lines:\n" + "".join(self.lines))
            if event is None:
                raise AssertionError("identity-service exited (status %s):\n%s"
                                     % (self.process.wait(timeout=5), "".join(self.lines)))
            if "grpc_port" in event:
                self.grpc_port = int(event["grpc_port"])
            if "http_port" in event:
                self.http_port = int(event["http_port"])
                self.issuer = event.get("issuer")

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("msg") == "listening":
                self.events.put(event)
        self.events.put(None)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


@pytest.fixture(scope="module")
def server():
    if not EXECUTABLE.exists():
        pytest.fail("%s is missing: run 'swift build --product identity-service'" % EXECUTABLE)
    with tempfile.TemporaryDirectory(prefix="identity-oidc-") as data_dir:
        srv = Server(data_dir)
        srv.data_dir = Path(data_dir)
        try:
            yield srv
        finally:
            status = srv.stop()
        assert status == 0, "exit status %r:\n%s" % (status, "".join(srv.lines[-20:]))


def jwks_url(server):
    return "http://127.0.0.1:%d/.well-known/jwks.json" % server.http_port


def stored_keys(server):
    """(kid, private key) of every RSA key in identity's store."""
    db = sqlite3.connect("file:%s?mode=ro" % (server.data_dir / "identity.sqlite"), uri=True)
    try:
        rows = db.execute("SELECT id, private_key FROM oidc_rsa_keys").fetchall()
    finally:
        db.close()
    return [(kid, load_der_private_key(der, password=None)) for kid, der in rows]


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
