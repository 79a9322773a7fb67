"""What the OpenID Connect tests share: the built identity-service with its HTTP port on (ports
and issuer read from its 'listening' log lines), another service verifying identity's tokens,
and the built `smartschool` CLI against identity.

Identity's store is a SQLite file under its data dir; with SMARTSCHOOL_OIDC_DATABASE_URL set to
a PostgreSQL server's URL, a fresh database on that server for each data dir (dropped at exit).
"""

import atexit
import base64
import hashlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(os.environ.get("SMARTSCHOOL_ROOT", Path(__file__).resolve().parents[2]))
BUILD = ROOT / ".build" / "debug"
EXECUTABLE = BUILD / "identity-service"
CLI = ROOT / ".build" / "debug" / "smartschool"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 20
DATABASE_URL = os.environ.get("SMARTSCHOOL_OIDC_DATABASE_URL", "")


def psql(url, sql):
    """The rows `sql` answers at `url`, each a list of text fields."""
    psql_bin = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    done = subprocess.run([psql_bin, "-X", "-q", "-A", "-t", "-F", "\t", "-v",
                           "ON_ERROR_STOP=1", url, "-c", sql],
                          check=True, capture_output=True, text=True, timeout=60)
    return [line.split("\t") for line in done.stdout.splitlines() if line]


class Store:
    """Identity's store for a data dir: its SQLite file, or (SMARTSCHOOL_OIDC_DATABASE_URL) a
    PostgreSQL database named after the data dir, so that a restart finds the same data."""

    def __init__(self, data_dir):
        self.data_dir = Path(data_dir)
        self.url = None
        if DATABASE_URL:
            digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
            name = "oidc_%d_%s" % (os.getpid(), digest)
            if not psql(DATABASE_URL, "SELECT 1 FROM pg_database WHERE datname = '%s'" % name):
                psql(DATABASE_URL, 'CREATE DATABASE "%s"' % name)
                atexit.register(psql, DATABASE_URL,
                                'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
            self.url = urlunsplit(urlsplit(DATABASE_URL)._replace(path="/" + name))

    def flags(self):
        return ["--database-url", self.url] if self.url else []

    def admin_id(self):
        return self._rows("SELECT id FROM users WHERE username = 'admin'")[0][0]

    def rsa_keys(self):
        """(kid, DER private key) of every RSA key identity stored for ID tokens."""
        if self.url:
            rows = psql(self.url, "SELECT id, translate(encode(private_key, 'base64'), "
                                  "E'\\n', '') FROM oidc_rsa_keys")
            return [(kid, base64.b64decode(der)) for kid, der in rows]
        return self._rows("SELECT id, private_key FROM oidc_rsa_keys")

    def _rows(self, sql):
        if self.url:
            return psql(self.url, sql)
        db = sqlite3.connect("file:%s?mode=ro" % (self.data_dir / "identity.sqlite"), uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


class ServiceProcess:
    """A built `<name>-service` on 127.0.0.1 with a free gRPC port (and, with `http`, a free
    HTTP port), its store in `data_dir`; ready once it logged every port it listens on."""

    def __init__(self, name, data_dir, *flags, env=None, http=False):
        self.data_dir = Path(data_dir)
        self.process = subprocess.Popen(
            [str(BUILD / ("%s-service" % name)), "--host", "127.0.0.1", "--port", "0",
             "--metrics-port=-1", "--data-dir", str(data_dir), *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=dict(os.environ, **(env or {})), text=True)
        self.lines = []
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.grpc_port = self.issuer = None
        self.http_port = None if http else 0
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while self.grpc_port is None or self.http_port is None:
            try:
                event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                raise AssertionError("no 'listening' lines:\n" + "".join(self.lines))
            if event is None:
                raise AssertionError("%s-service exited (status %s):\n%s"
                                     % (name, self.process.wait(timeout=5), "".join(self.lines)))
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

    @property
    def address(self):
        return "127.0.0.1:%d" % self.grpc_port

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


class IdentityServer(ServiceProcess):
    """identity-service with its HTTP port on (scrypt made cheap for tests)."""

    def __init__(self, data_dir, admin_password, *flags):
        self.store = Store(data_dir)
        super().__init__("identity", data_dir, "--scrypt-log-n", "10", *self.store.flags(),
                         *flags, http=True,
                         env={"SMARTSCHOOL_ADMIN_PASSWORD": admin_password,
                              "SMARTSCHOOL_IDENTITY_HTTP_PORT": "0"})


def serve(server):
    """A generator for a fixture: the running `server`, then its clean exit checked."""
    try:
        yield server
    finally:
        status = server.stop()
    assert status == 0, "exit status %r:\n%s" % (status, "".join(server.lines[-20:]))


def serve_identity(data_dir, admin_password, *flags):
    """A generator for a fixture: the running server, then its clean exit checked."""
    for exe in (EXECUTABLE, CLI):
        if not exe.exists():
            pytest.fail("%s is missing: run 'swift build'" % exe)
    yield from serve(IdentityServer(data_dir, admin_password, *flags))


class Cli:
    """The smartschool CLI against one identity server, with a session file of its own."""

    def __init__(self, server, folder):
        self.args = ["--identity-addr", "127.0.0.1:%d" % server.grpc_port,
                     "--session", str(Path(folder) / "session.json")]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSCHOOL_")}

    def run(self, *words, stdin="", check=True):
        # Connection options belong to the leaf command: they go last.
        done = subprocess.run([str(CLI), *words] + self.args, input=stdin, capture_output=True,
                              text=True, env=self.env, timeout=60)
        if check:
            assert done.returncode == 0, "smartschool %s: %s" % (" ".join(words), done.stderr)
        return done

    def login(self, username, password):
        return self.run("login", "--username", username, "--password-stdin",
                        stdin=password + "\n")

    def oidc_client(self, folder, name, redirect_uris, *options):
        """Registers an app; answers (client id, client secret or None for a public app)."""
        out = Path(folder) / ("%s.env" % name.replace(" ", "-"))
        words = ["oidc-client", "create", "--name", name, "--out", str(out)]
        for uri in redirect_uris:
            words += ["--redirect-uri", uri]
        self.run(*words, *options)
        values = dict(line.split("=", 1) for line in out.read_text().splitlines() if line)
        return values["CLIENT_ID"], values["CLIENT_SECRET"] or None
