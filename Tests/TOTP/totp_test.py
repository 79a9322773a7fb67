"""Two-factor login through a real TOTP library: pyotp parses the otpauth:// URI identity
hands out and computes every code; the built `smartschool` CLI enrols, logs in with them (a
replayed code and a reused recovery code are refused) and disables TOTP; with
--require-totp-for covering the admin, the CLI's login shows a new secret and pyotp's code
for it completes the login. Run with `bash Tests/TOTP/run.sh`.
"""

import json
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pyotp
import pytest

ROOT = Path(os.environ.get("SMARTSCHOOL_ROOT", Path(__file__).resolve().parents[2]))
SERVICE = ROOT / ".build" / "debug" / "identity-service"
CLI = ROOT / ".build" / "debug" / "smartschool"
ADMIN_PASSWORD = "Totp-admin-42"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 20


class Server:
    """identity-service on a free port (read from its 'listening' log line)."""

    def __init__(self, data_dir, *flags):
        env = dict(os.environ, SMARTSCHOOL_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self.process = subprocess.Popen(
            [str(SERVICE), "--host", "127.0.0.1", "--port", "0", "--metrics-port=-1",
             "--data-dir", str(data_dir), "--scrypt-log-n", "10",
             # The per-account rate limit is tested in Swift; this test logs in often.
             "--login-attempts-per-account", "0", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True)
        self.lines = []
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            event = self.events.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            self.process.kill()
            raise AssertionError("no 'listening' line:\n" + "".join(self.lines))
        if event is None:
            raise AssertionError("identity-service exited (status %s):\n%s"
                                 % (self.process.wait(timeout=5), "".join(self.lines)))
        self.port = int(event["grpc_port"])

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("msg") == "listening" \
                    and "grpc_port" in event:
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


class Cli:
    """The smartschool CLI against one server, with a session file of its own."""

    def __init__(self, server, folder):
        self.args = ["--identity-addr", "127.0.0.1:%d" % server.port,
                     "--session", str(Path(folder) / "session.json")]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SMARTSCHOOL_")}

    def run(self, *words, stdin=""):
        # Connection options belong to the leaf command: they go last.
        return subprocess.run([str(CLI), *words] + self.args, input=stdin, capture_output=True,
                              text=True, env=self.env, timeout=60)

    def login(self, *lines, totp=None):
        words = ["login", "--username", "admin", "--password-stdin"]
        if totp is not None:
            words += ["--totp", totp]
        return self.run(*words, stdin="".join(line + "\n" for line in lines))


@pytest.fixture
def server():
    if not SERVICE.exists() or not CLI.exists():
        pytest.fail("run 'swift build' first: %s and %s are needed" % (SERVICE, CLI))
    with tempfile.TemporaryDirectory(prefix="identity-totp-") as folder:
        srv = Server(folder)
        srv.folder = folder
        try:
            yield srv
        finally:
            status = srv.stop()
        assert status == 0, "exit status %r:\n%s" % (status, "".join(srv.lines[-20:]))


def next_step_code(totp):
    """The code of the next 30-second step: identity allows one step of clock skew, and the
    current step's code may already have been used by the enrolment."""
    return totp.at(time.time() + 30)


def test_enrol_login_replay_recovery_and_disable(server):
    cli = Cli(server, server.folder)
    done = cli.login(ADMIN_PASSWORD)
    assert done.returncode == 0, done.stderr

    enrol = cli.run("totp", "enrol")
    assert enrol.returncode == 0, enrol.stderr
    uri = re.search(r"uri:\s+(\S+)", enrol.stdout).group(1)
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert totp.issuer == "SmartSchool" and totp.name == "admin"
    assert totp.digits == 6 and totp.interval == 30
    assert totp.secret == re.search(r"secret:\s+(\S+)", enrol.stdout).group(1)

    # A code of another secret does not confirm it.
    wrong = cli.run("totp", "confirm", "--code", pyotp.TOTP(pyotp.random_base32()).now())
    assert wrong.returncode != 0
    confirm = cli.run("totp", "confirm", "--code", totp.now())
    assert confirm.returncode == 0, confirm.stderr
    recovery = re.findall(r"^\s+([A-Z0-9]{5}-[A-Z0-9]{5})$", confirm.stdout, re.M)
    assert len(recovery) == 10 and len(set(recovery)) == 10

    # The password alone no longer logs in; with pyotp's code it does.
    no_code = cli.login(ADMIN_PASSWORD)
    assert no_code.returncode != 0 and "two-factor code" in no_code.stderr
    code = next_step_code(totp)
    first = cli.login(ADMIN_PASSWORD, totp=code)
    assert first.returncode == 0, first.stderr
    assert "logged in as admin" in first.stdout
    # The same code, given on the line after the password this time, is refused: used once.
    replay = cli.login(ADMIN_PASSWORD, code)
    assert replay.returncode != 0
    assert "already used" in replay.stderr, replay.stderr

    # A recovery code works once.
    by_recovery = cli.login(ADMIN_PASSWORD, totp=recovery[0])
    assert by_recovery.returncode == 0, by_recovery.stderr
    assert "9 left" in by_recovery.stderr
    again = cli.login(ADMIN_PASSWORD, totp=recovery[0])
    assert again.returncode != 0

    # Disabled with a recovery code, the password suffices again.
    assert cli.login(ADMIN_PASSWORD, totp=recovery[1]).returncode == 0
    off = cli.run("totp", "disable", "--code", recovery[2])
    assert off.returncode == 0, off.stderr
    assert cli.login(ADMIN_PASSWORD).returncode == 0


def test_required_totp_is_enrolled_at_login():
    with tempfile.TemporaryDirectory(prefix="identity-totp-policy-") as folder:
        srv = Server(folder, "--require-totp-for", "system_admin")
        try:
            cli = Cli(srv, folder)
            process = subprocess.Popen(
                [str(CLI), "login", "--username", "admin", "--password-stdin"] + cli.args,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=cli.env)
            process.stdin.write(ADMIN_PASSWORD + "\n")
            process.stdin.flush()
            # The CLI shows the new secret, then waits for the app's code on stdin.
            shown = []
            uri = None
            deadline = time.monotonic() + 30
            while uri is None and time.monotonic() < deadline:
                line = process.stderr.readline()
                if not line:
                    break
                shown.append(line)
                match = re.search(r"uri:\s+(\S+)", line)
                if match:
                    uri = match.group(1)
            assert uri, "no secret shown:\n" + "".join(shown)
            assert "require two-factor login" in "".join(shown)
            process.stdin.write(pyotp.parse_uri(uri).now() + "\n")
            process.stdin.flush()
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            assert "logged in as admin" in out
            assert len(re.findall(r"^\s+[A-Z0-9]{5}-[A-Z0-9]{5}$", err, re.M)) == 10
            # Enrolled: the next login asks for a code.
            assert cli.login(ADMIN_PASSWORD).returncode != 0
            assert cli.login(ADMIN_PASSWORD,
                             totp=next_step_code(pyotp.parse_uri(uri))).returncode == 0
        finally:
            status = srv.stop()
        assert status == 0, "exit status %r:\n%s" % (status, "".join(srv.lines[-20:]))
