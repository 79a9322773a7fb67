"""Database failover: the services ride through a PostgreSQL primary's death.

A primary and a synchronous streaming standby (Debian's postgresql-15, loopback), HAProxy in
TCP mode in front of them as a deployment's virtual IP would be (the standby a backup server,
used once the primary's health check fails), and identity and supervision on databases behind
that address. A grpcio client streams a term of lessons in chunks, one ImportLessons call per
chunk; a call that fails is re-sent (lesson imports upsert by classroom, day and period, so a
re-sent chunk writes nothing twice). Part-way through, the primary is killed with SIGKILL and
the standby promoted. Then:
- the services were not restarted (same processes) and serve again;
- every lesson is on the new primary exactly once (every chunk whose call returned OK before
  the kill among them: synchronous replication makes an acknowledged commit the standby's);
- logins work through identity, which reconnected on its own;
- the time without writes (kill → first acknowledged chunk after it) and the failed calls are
  printed.
Run with `bash Tests/Interop/run.sh failover` (as root: the clusters run as `postgres`).
"""

import datetime
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

from smartschool.common.v1 import common_pb2
from smartschool.identity.v1 import identity_service_pb2 as ipb
from smartschool.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from smartschool.supervision.v1 import supervision_service_pb2 as spb
from smartschool.supervision.v1 import supervision_service_pb2_grpc as spb_grpc

from suite_interop_test import ADMIN_PASSWORD, PROVINCE, TERM, Process, auth, eventually, org

PGBIN = Path("/usr/lib/postgresql/15/bin")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
TIMEOUT = 15
CLASSROOMS = 10
CHUNK = 150
KILL_AFTER = 8  # chunks acknowledged before the primary is killed
DEADLINE = 240  # seconds for the whole import, failover included


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(args, **kw):
    if os.getuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + [str(a) for a in args]
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          timeout=kw.pop("timeout", 120), **kw)


def psql(port, sql, database="postgres"):
    out = subprocess.run(
        [str(PGBIN / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-c", sql],
        check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


class Clusters:
    """A primary, a synchronous standby and HAProxy in front; all removed by `stop`."""

    def __init__(self, folder):
        self.dir = Path(folder)
        if os.getuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        self.primary_port, self.standby_port, self.port = free_port(), free_port(), free_port()
        self.haproxy = None
        as_postgres([PGBIN / "initdb", "-D", self.dir / "primary", "-E", "UTF8",
                     "--locale=C.UTF-8", "--lc-collate=C", "-A", "trust", "-U", "postgres"])
        self._start("primary", self.primary_port,
                    "-c wal_level=replica -c max_wal_senders=4 "
                    "-c synchronous_standby_names='*' -c synchronous_commit=on")
        as_postgres([PGBIN / "pg_basebackup", "-h", "127.0.0.1", "-p", self.primary_port,
                     "-U", "postgres", "-D", self.dir / "standby", "-R", "-X", "stream",
                     "-c", "fast"])
        self._start("standby", self.standby_port, "-c hot_standby=on")
        deadline = time.time() + 30
        while psql(self.primary_port,
                   "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1":
            assert time.time() < deadline, "the standby did not become synchronous"
            time.sleep(0.2)
        config = self.dir / "haproxy.cfg"
        config.write_text(f"""
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
frontend database
  bind 127.0.0.1:{self.port}
  default_backend servers
backend servers
  default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
  server primary 127.0.0.1:{self.primary_port} check
  server standby 127.0.0.1:{self.standby_port} check backup
""")
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while True:
            try:
                psql(self.port, "SELECT 1")
                break
            except subprocess.CalledProcessError:
                assert time.time() < deadline, "HAProxy does not pass connections"
                time.sleep(0.1)

    def _start(self, name, port, options):
        as_postgres([PGBIN / "pg_ctl", "-D", self.dir / name, "-l", self.dir / (name + ".log"),
                     "-w", "-t", "60", "start", "-o",
                     f"-c listen_addresses=127.0.0.1 -p {port} -k {self.dir} "
                     f"-c max_connections=300 -c fsync=off {options}"])

    def url(self, database):
        return "postgres://postgres@127.0.0.1:%d/%s?sslmode=disable" % (self.port, database)

    def kill_primary(self):
        pid = int((self.dir / "primary" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)

    def promote_standby(self):
        as_postgres([PGBIN / "pg_ctl", "-D", self.dir / "standby", "-w", "-t", "60", "promote"])

    def stop(self):
        if self.haproxy is not None:
            self.haproxy.kill()
            self.haproxy.wait(timeout=10)
        for name in ("primary", "standby"):
            if (self.dir / name / "postmaster.pid").exists():
                try:
                    as_postgres([PGBIN / "pg_ctl", "-D", self.dir / name, "-m", "immediate",
                                 "-w", "-t", "30", "stop"])
                except subprocess.CalledProcessError:
                    pass


def lessons():
    """Weekday lessons of the demo term for each classroom, in chunks of CHUNK."""
    rows = []
    day = datetime.date(2025, 9, 1)
    while len(rows) < KILL_AFTER * CHUNK * 3:
        if day.weekday() < 5 and not (datetime.date(2025, 9, 29) <= day
                                      <= datetime.date(2025, 10, 3)):
            for room in range(1, CLASSROOMS + 1):
                for period in range(1, 9):
                    rows.append(spb.Lesson(
                        classroom_code="K1-R%d" % room, teacher_external_id="T%d" % room,
                        subject=common_pb2.SUBJECT_MATHEMATICS, date=day.isoformat(),
                        period=period, duration_minutes=40,
                        source=spb.LESSON_SOURCE_PLATFORM))
        day += datetime.timedelta(days=1)
    return [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)]


def paced(chunk):
    """The chunk's rows a millisecond apart, as a feed from classroom devices arrives: a call
    is in flight for longer than the 50 ms after which the primary dies."""
    for row in chunk:
        time.sleep(0.001)
        yield row


@pytest.fixture(scope="module")
def setup():
    if not (PGBIN / "initdb").exists() or not Path(HAPROXY).exists():
        pytest.fail("failover: needs postgresql-15 and haproxy (Tests/run-all.sh installs them)")
    folder = tempfile.mkdtemp(prefix="failover-")
    clusters, processes = None, []
    try:
        clusters = Clusters(folder)
        for name in ("identity", "supervision"):
            psql(clusters.primary_port, 'CREATE DATABASE "%s"' % name)
        data = Path(folder) / "data"
        identity = Process("identity", [
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
            "--data-dir", str(data / "identity"), "--scrypt-log-n", "10",
            "--database-url", clusters.url("identity")],
            env={"SMARTSCHOOL_ADMIN_PASSWORD": ADMIN_PASSWORD})
        processes.append(identity)
        ident = ipb_grpc.IdentityServiceStub(grpc.insecure_channel(identity.address))
        admin = ident.Login(ipb.LoginRequest(username="admin", password=ADMIN_PASSWORD),
                            timeout=TIMEOUT).access_token
        rows = [org(PROVINCE, "示范省", common_pb2.ORG_KIND_PROVINCE),
                org("C", "示范市", common_pb2.ORG_KIND_CITY, PROVINCE),
                org("K1", "东县", common_pb2.ORG_KIND_COUNTY, "C"),
                org("K1-S", "东县中学", common_pb2.ORG_KIND_SCHOOL, "K1",
                    common_pb2.SCHOOL_KIND_URBAN, [common_pb2.STAGE_JUNIOR])]
        assert ident.ImportOrgs(iter(rows), metadata=auth(admin), timeout=TIMEOUT).accepted == 4
        account = ident.CreateServiceAccount(ipb.CreateServiceAccountRequest(
            name="failover-sync", org_code=PROVINCE, roles=[ipb.ROLE_DATA_EXCHANGE]),
            metadata=auth(admin), timeout=TIMEOUT)
        supervision = Process("supervision", [
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
            "--data-dir", str(data / "supervision"), "--identity-addr", identity.address,
            "--client-id", account.client_id, "--client-secret", account.client_secret,
            "--database-url", clusters.url("supervision")])
        processes.append(supervision)
        sup = spb_grpc.SupervisionServiceStub(grpc.insecure_channel(supervision.address))
        sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
            code=TERM, name="2025-2026学年第一学期", start_date="2025-09-01",
            end_date="2026-01-16", excluded_weeks=["2025-09-29"])),
            metadata=auth(admin), timeout=TIMEOUT)
        for room in range(1, CLASSROOMS + 1):
            eventually(lambda: sup.CreateClassroom(spb.CreateClassroomRequest(
                classroom=spb.Classroom(code="K1-R%d" % room, name="智慧教室%d" % room,
                                        school_code="K1-S", equipped_date="2025-08-25")),
                metadata=auth(admin), timeout=TIMEOUT))
        yield clusters, identity, ident, supervision, sup, admin
    finally:
        for p in processes:
            p.process.kill()
            p.process.wait(timeout=10)
        if clusters is not None:
            clusters.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_primary_killed_during_an_import_loses_no_acknowledged_row(setup):
    clusters, identity, ident, supervision, sup, admin = setup
    chunks = lessons()
    acknowledged, failed = [], []
    killed_at, first_after = None, None
    started = time.time()
    for number, chunk in enumerate(chunks):
        if number == KILL_AFTER:
            # Killed while this chunk's call is in flight, then the standby promoted at once,
            # as an operator's or a cluster manager's failover would.
            def fail_over():
                time.sleep(0.05)
                clusters.kill_primary()
                clusters.promote_standby()
            killed_at = time.time() + 0.05
            threading.Thread(target=fail_over, daemon=True).start()
        while True:
            assert time.time() - started < DEADLINE, "the import did not finish in time"
            try:
                summary = sup.ImportLessons(paced(chunk), metadata=auth(admin), timeout=TIMEOUT)
            except grpc.RpcError as e:
                failed.append(e.code())
                time.sleep(0.2)
                continue
            assert summary.rejected == 0 and summary.accepted == len(chunk), summary
            acknowledged.append(number)
            if killed_at is not None and first_after is None:
                first_after = time.time()
            break
    # The same processes, never restarted.
    assert identity.process.poll() is None and supervision.process.poll() is None
    total = sum(len(c) for c in chunks)
    stored = psql(clusters.standby_port, "SELECT count(*) FROM sup_lessons", "supervision")
    assert int(stored) == total, (stored, total)
    assert psql(clusters.standby_port, "SELECT pg_is_in_recovery()") == "f"
    # Identity reconnected by itself: a login (a write: a session) works.
    eventually(lambda: ident.Login(ipb.LoginRequest(username="admin", password=ADMIN_PASSWORD),
                                   timeout=TIMEOUT), seconds=30)
    codes = sorted({c.name for c in failed})
    print("\nfailover: %d lessons in %d chunks; primary killed after %d acknowledged chunks; "
          "time without writes %.2f s; %d failed calls re-sent (%s)"
          % (total, len(chunks), KILL_AFTER, first_after - killed_at, len(failed),
             ", ".join(codes) or "none"))
    # Calls failed only with retryable statuses, and none hung past its deadline.
    assert set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"}, codes
