"""What the OpenID Connect tests share: the built identity-service with its HTTP port on (ports
and issuer read from its 'listening' log lines), another service verifying identity's tokens,
and the built `smartschool` CLI against identity.
"""

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SMARTSCHOOL_ROOT", Path(__file__).resolve().parents[2]))
BUILD = ROOT / ".build" / "debug"
EXECUTABLE = BUILD / "identity-service"
CLI = ROOT / ".build" / "debug" / "smartschool"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 20


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
        super().__init__("identity", data_dir, "--scrypt-log-n", "10", *flags, http=True,
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
