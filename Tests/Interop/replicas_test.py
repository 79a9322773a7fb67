"""Replicas behind a real balancer: three of every service on one PostgreSQL, behind nginx.

nginx (Debian's, `grpc_pass`) listens on one loopback port per service and spreads calls over
that service's three replicas; the three non-identity services reach identity through nginx
too. A grpcio client keeps a steady mixed load through the balancer (reads, a score import and
a lesson import re-sent chunk by chunk, logins) while:
1. one replica of every service is killed with SIGKILL (and later restarted): a call in flight
   there may fail, and is counted and re-sent; no committed row is lost or duplicated, and no
   call outlives its deadline;
2. every replica is taken out of nginx (a reload), stopped with SIGTERM and started again, one
   at a time (a rolling upgrade): zero failed calls.
Then a token issued through one identity replica is accepted by every replica of every service
(each called directly), and a logout through another is refused by all of them within seconds.
Run with `SMARTSCHOOL_INTEROP_DATABASE_URL=postgres://… bash Tests/Interop/run.sh replicas`.
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smartschool.assessment.v1 import assessment_service_pb2 as apb
from smartschool.assessment.v1 import assessment_service_pb2_grpc as apb_grpc
from smartschool.catalogue.v1 import catalogue_service_pb2 as cpb
from smartschool.catalogue.v1 import catalogue_service_pb2_grpc as cpb_grpc
from smartschool.common.v1 import common_pb2
from smartschool.identity.v1 import identity_service_pb2 as ipb
from smartschool.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from smartschool.supervision.v1 import supervision_service_pb2 as spb
from smartschool.supervision.v1 import supervision_service_pb2_grpc as spb_grpc

from failover_test import free_port
from suite_interop_test import (ADMIN_PASSWORD, DATABASE_URL, PROVINCE, TERM, Process, auth,
                                eventually, org, psql, store_args)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NAMES = ("identity", "catalogue", "assessment", "supervision")
SERVICES = {"identity": "smartschool.identity.v1.IdentityService",
            "catalogue": "smartschool.catalogue.v1.CatalogueService",
            "assessment": "smartschool.assessment.v1.AssessmentService",
            "supervision": "smartschool.supervision.v1.SupervisionService"}
REPLICAS = 3
TIMEOUT = 10
STUDENTS = 120
ITEMS = 10


class Balancer:
    """nginx with one HTTP/2 (h2c) server per service, `grpc_pass` to its replicas."""

    def __init__(self, folder, upstreams):
        self.dir = Path(folder)
        self.ports = {name: free_port() for name in upstreams}
        self.upstreams = {name: list(ports) for name, ports in upstreams.items()}
        self.write()
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        assert self.process.poll() is None, self.process.stderr.read().decode()

    def drain(self, name, port, out):
        """Takes a replica out of (out=True) or back into its upstream, as an operator does
        around a rolling upgrade: nginx reloads, and its old workers finish their calls."""
        members = self.upstreams[name]
        if out:
            members.remove(port)
        else:
            members.append(port)
        self.write()
        self.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)

    def write(self):
        blocks = []
        for name, ports in self.upstreams.items():
            servers = "\n".join("    server 127.0.0.1:%d max_fails=1 fail_timeout=3s;" % p
                                for p in ports)
            blocks.append(f"""
  upstream {name} {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{self.ports[name]} http2;
    location / {{
      grpc_pass grpc://{name};
      # A replica that refuses or drops the connection before answering: try the next one.
      # gRPC calls are POSTs, which nginx retries only with non_idempotent; every write here
      # is idempotent by its natural key (imports) or harmless twice (a login's session).
      grpc_next_upstream error timeout non_idempotent;
      grpc_next_upstream_tries 3;
      grpc_connect_timeout 1s;
      grpc_read_timeout 60s;
      grpc_send_timeout 60s;
    }}
  }}""")
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 1;
error_log {self.dir}/error.log warn;
pid {self.dir}/nginx.pid;
events {{ worker_connections 2048; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  client_max_body_size 0;
  http2_max_concurrent_streams 512;
  # nginx ends a client connection (GOAWAY) after 1,000 requests by default.
  keepalive_requests 100000000;
{''.join(blocks)}
}}
""")

    def address(self, name):
        return "127.0.0.1:%d" % self.ports[name]

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Cluster:
    """Three replicas of each service (fixed ports, so a restarted one takes its place)."""

    def __init__(self, folder):
        self.dir = Path(folder)
        self.databases = {}
        self.ports = {name: [free_port() for _ in range(REPLICAS)] for name in NAMES}
        self.balancer = Balancer(self.dir, self.ports)
        self.replicas = {name: [None] * REPLICAS for name in NAMES}
        self.args = {}
        for i in range(REPLICAS):
            self.start("identity", i)
        channel = grpc.insecure_channel(self.balancer.address("identity"))
        self.id = ipb_grpc.IdentityServiceStub(channel)
        self.admin = eventually(lambda: self.id.Login(ipb.LoginRequest(
            username="admin", password=ADMIN_PASSWORD), timeout=TIMEOUT).access_token)
        self.seed()
        account = self.id.CreateServiceAccount(ipb.CreateServiceAccountRequest(
            name="replicas-sync", org_code=PROVINCE, roles=[ipb.ROLE_DATA_EXCHANGE]),
            metadata=auth(self.admin), timeout=TIMEOUT)
        self.account = account
        for name in NAMES[1:]:
            for i in range(REPLICAS):
                self.start(name, i)

    def start(self, name, i):
        args = ["--host", "127.0.0.1", "--port", str(self.ports[name][i]),
                "--metrics-port", "0", "--data-dir", str(self.dir / ("%s-%d" % (name, i))),
                "--drain-seconds", "10"] + store_args(name, self.databases)
        env = None
        if name == "identity":
            # The load logs one account in twice a second, past the default per-account limit.
            args += ["--scrypt-log-n", "10", "--login-attempts-per-account", "10000"]
            env = {"SMARTSCHOOL_ADMIN_PASSWORD": ADMIN_PASSWORD}
        else:
            args += ["--identity-addr", self.balancer.address("identity"),
                     "--client-id", self.account.client_id,
                     "--client-secret", self.account.client_secret]
        self.replicas[name][i] = Process(name, args, env=env)
        self.wait_serving(name, i)

    def wait_serving(self, name, i, limit=60):
        """Waits until the replica's gRPC health says SERVING for its service, as a readiness
        probe does before a balancer sends it calls (nginx would otherwise meet a closed port)."""
        channel = grpc.insecure_channel("127.0.0.1:%d" % self.ports[name][i])
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.time() + limit
        try:
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICES[name]),
                                          timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.time() < deadline, "%s replica %d not serving after %d s" % (
                    name, i, limit)
                time.sleep(0.1)
        finally:
            channel.close()

    def seed(self):
        rows = [org(PROVINCE, "示范省", common_pb2.ORG_KIND_PROVINCE),
                org("C", "示范市", common_pb2.ORG_KIND_CITY, PROVINCE),
                org("K1", "东县", common_pb2.ORG_KIND_COUNTY, "C"),
                org("K1-S", "东县中学", common_pb2.ORG_KIND_SCHOOL, "K1",
                    common_pb2.SCHOOL_KIND_URBAN, [common_pb2.STAGE_JUNIOR]),
                org("K1-S-C1", "七年级1班", common_pb2.ORG_KIND_CLASS, "K1-S", grade=7,
                    year="2025-2026")]
        md = auth(self.admin)
        assert self.id.ImportOrgs(iter(rows), metadata=md, timeout=TIMEOUT).accepted == 5
        users = [ipb.ImportUsersRequest(user=ipb.User(
            external_id="K1-ST%d" % n, username="k1-st%d" % n, display_name="学生%d" % n,
            kind=ipb.USER_KIND_STUDENT, org_code="K1-S-C1")) for n in range(STUDENTS)]
        assert self.id.ImportUsers(iter(users), metadata=md, timeout=TIMEOUT).accepted == STUDENTS

    def stop(self):
        for replicas in self.replicas.values():
            for p in replicas:
                if p is not None:
                    p.process.kill()
                    p.process.wait(timeout=10)
        self.balancer.stop()
        for database in self.databases.values():
            psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)


@pytest.fixture(scope="module")
def cluster():
    if not DATABASE_URL:
        pytest.skip("needs SMARTSCHOOL_INTEROP_DATABASE_URL (replicas share a PostgreSQL)")
    if not Path(NGINX).exists():
        pytest.fail("replicas: needs nginx (Tests/run-all.sh installs it)")
    folder = tempfile.mkdtemp(prefix="replicas-")
    c = None
    try:
        c = Cluster.__new__(Cluster)
        c.replicas, c.databases = {n: [None] * REPLICAS for n in NAMES}, {}
        c.balancer = None
        Cluster.__init__(c, folder)
        yield c
    finally:
        if c is not None:
            if c.balancer is not None:
                c.stop()
            else:
                for database in c.databases.values():
                    psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        shutil.rmtree(folder, ignore_errors=True)


# The load's client retries UNAVAILABLE on the calls it makes, all safe to repeat (reads, a login,
# imports idempotent by natural key), with gRPC's own retry policy, as a client behind a balancer
# is configured. nginx answers its reload (a replica taken out or put back) with GOAWAY on every
# client connection, and a call the client started as that arrived fails UNAVAILABLE ("Stream
# removed") without reaching a replica; gRPC retries it. What fails after the policy is counted.
RETRIED = {
    "smartschool.identity.v1.IdentityService": ["WhoAmI", "Login"],
    "smartschool.catalogue.v1.CatalogueService": ["ListCurriculum"],
    "smartschool.assessment.v1.AssessmentService": ["ListExams", "ImportScores"],
    "smartschool.supervision.v1.SupervisionService": ["ListTerms", "ImportLessons"],
}
RETRY_OPTIONS = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps({"methodConfig": [{
        "name": [{"service": service, "method": method}
                 for service, methods in RETRIED.items() for method in methods],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "0.5s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }]})),
]


def balanced_channel(address):
    return grpc.insecure_channel(address, options=RETRY_OPTIONS)


class Load:
    """The steady mixed load through the balancer, on threads; failures counted per phase."""

    def __init__(self, cluster):
        self.cluster = cluster
        b = cluster.balancer
        self.id = ipb_grpc.IdentityServiceStub(balanced_channel(b.address("identity")))
        self.cat = cpb_grpc.CatalogueServiceStub(balanced_channel(b.address("catalogue")))
        self.asm = apb_grpc.AssessmentServiceStub(balanced_channel(b.address("assessment")))
        self.sup = spb_grpc.SupervisionServiceStub(balanced_channel(b.address("supervision")))
        self.md = auth(cluster.admin)
        self.phase = "warm-up"
        self.lock = threading.Lock()
        self.calls, self.failures = {}, {}
        self.slowest = 0.0
        self.stop = threading.Event()
        self.threads = []

    def call(self, what, fn):
        """One attempt; True when it succeeded. Records its outcome under the phase it ended
        in (a call sent just before a replica is killed fails because of the kill)."""
        started = time.time()
        failure = None
        try:
            fn()
        except grpc.RpcError as e:
            failure = (what, e.code().name, (e.details() or "")[:120])
        ok = failure is None
        phase = self.phase
        if failure:
            with self.lock:
                self.failures.setdefault(phase, []).append(failure)
        with self.lock:
            self.calls[phase] = self.calls.get(phase, 0) + 1
            self.slowest = max(self.slowest, time.time() - started)
        return ok

    def resend(self, what, fn):
        """Re-sends an idempotent call until it succeeds (or the load stops)."""
        while not self.stop.is_set():
            if self.call(what, fn):
                return True
            time.sleep(0.1)
        return False

    def reads(self):
        reads = [
            ("identity.WhoAmI", lambda: self.id.WhoAmI(ipb.WhoAmIRequest(), metadata=self.md,
                                                        timeout=TIMEOUT)),
            ("catalogue.ListCurriculum", lambda: self.cat.ListCurriculum(
                cpb.ListCurriculumRequest(), metadata=self.md, timeout=TIMEOUT)),
            ("assessment.ListExams", lambda: self.asm.ListExams(
                apb.ListExamsRequest(), metadata=self.md, timeout=TIMEOUT)),
            ("supervision.ListTerms", lambda: self.sup.ListTerms(
                spb.ListTermsRequest(), metadata=self.md, timeout=TIMEOUT)),
        ]
        n = 0
        while not self.stop.is_set():
            what, fn = reads[n % len(reads)]
            self.resend(what, fn)
            n += 1
            time.sleep(0.01)

    def logins(self):
        while not self.stop.is_set():
            self.resend("identity.Login", lambda: self.id.Login(ipb.LoginRequest(
                username="admin", password=ADMIN_PASSWORD), timeout=TIMEOUT))
            time.sleep(0.5)

    def scores(self):
        rows = [apb.ScoreRow(exam_code="E1", student_external_id="K1-ST%d" % s,
                             class_code="K1-S-C1", school_code="K1-S", item_number=i,
                             score=(s + i) % 10) for s in range(STUDENTS)
                for i in range(1, ITEMS + 1)]
        chunks = [rows[k:k + 100] for k in range(0, len(rows), 100)]
        while not self.stop.is_set():
            for chunk in chunks:
                self.resend("assessment.ImportScores", lambda: self.asm.ImportScores(
                    iter(chunk), metadata=self.md, timeout=TIMEOUT))

    def lessons(self):
        days = [datetime.date(2025, 11, 3) + datetime.timedelta(days=d) for d in range(42)]
        rows = [spb.Lesson(classroom_code="K1-R1", teacher_external_id="T1",
                           subject=common_pb2.SUBJECT_MATHEMATICS, date=day.isoformat(),
                           period=period, duration_minutes=40,
                           source=spb.LESSON_SOURCE_PLATFORM)
                for day in days if day.weekday() < 5 for period in range(1, 9)]
        self.lesson_count = len(rows)
        chunks = [rows[k:k + 64] for k in range(0, len(rows), 64)]
        while not self.stop.is_set():
            for chunk in chunks:
                self.resend("supervision.ImportLessons", lambda: self.sup.ImportLessons(
                    iter(chunk), metadata=self.md, timeout=TIMEOUT))

    def start(self):
        for body in (self.reads, self.reads, self.logins, self.scores, self.lessons):
            t = threading.Thread(target=body, daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=TIMEOUT * 2)
        assert not any(t.is_alive() for t in self.threads), "a call outlived its deadline"


def prepare(cluster):
    md = auth(cluster.admin)
    b = cluster.balancer
    asm = apb_grpc.AssessmentServiceStub(grpc.insecure_channel(b.address("assessment")))
    sup = spb_grpc.SupervisionServiceStub(grpc.insecure_channel(b.address("supervision")))
    asm.CreateExam(apb.CreateExamRequest(exam=apb.Exam(
        code="E1", name="期中数学", school_year="2025-2026", term=1,
        subject=common_pb2.SUBJECT_MATHEMATICS, stage=common_pb2.STAGE_JUNIOR, grade=7,
        org_code="C", items=[apb.ExamItem(number=i, max_score=10, objective=True)
                             for i in range(1, ITEMS + 1)])), metadata=md, timeout=TIMEOUT)
    sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
        code=TERM, name="2025-2026学年第一学期", start_date="2025-09-01",
        end_date="2026-01-16", excluded_weeks=["2025-09-29"])), metadata=md, timeout=TIMEOUT)
    eventually(lambda: sup.CreateClassroom(spb.CreateClassroomRequest(
        classroom=spb.Classroom(code="K1-R1", name="智慧教室1", school_code="K1-S",
                                equipped_date="2025-08-25")), metadata=md, timeout=TIMEOUT))
    # Every replica of assessment knows the class before the load starts.
    for port in cluster.ports["assessment"]:
        direct = apb_grpc.AssessmentServiceStub(grpc.insecure_channel("127.0.0.1:%d" % port))
        eventually(lambda: _accepted(direct.ImportScores(iter([apb.ScoreRow(
            exam_code="E1", student_external_id="K1-ST0", class_code="K1-S-C1",
            school_code="K1-S", item_number=1, score=1)]), metadata=md, timeout=TIMEOUT)))


def _accepted(summary):
    assert summary.accepted == 1, summary
    return summary


def test_kill_and_rolling_restart_under_load(cluster):
    prepare(cluster)
    load = Load(cluster)
    load.start()
    time.sleep(2)
    # 1. SIGKILL one replica of every service, then bring it back.
    load.phase = "kill -9"
    for name in NAMES:
        cluster.replicas[name][0].process.kill()
    time.sleep(4)
    for name in NAMES:
        cluster.replicas[name][0].process.wait(timeout=10)
        cluster.start(name, 0)
    time.sleep(2)
    # 2. A rolling restart: each replica in turn taken out of the balancer, stopped with
    #    SIGTERM (its drain), its successor started on its port and put back.
    load.phase = "rolling restart"
    for i in range(REPLICAS):
        for name in NAMES:
            port = cluster.ports[name][i]
            cluster.balancer.drain(name, port, out=True)
            assert cluster.replicas[name][i].stop() == 0, (name, i)
            cluster.start(name, i)
            cluster.balancer.drain(name, port, out=False)
    load.phase = "after"
    time.sleep(1)
    load.finish()
    calls, failures = load.calls, load.failures
    print("\nreplicas: 3 of each of %d services behind nginx; calls (failed) per phase: %s; "
          "slowest call %.2f s"
          % (len(NAMES), ", ".join("%s %d (%d)" % (p, calls.get(p, 0), len(failures.get(p, [])))
                                   for p in ("warm-up", "kill -9", "rolling restart", "after")),
             load.slowest))
    for phase, failed in failures.items():
        print("  %s: %s" % (phase, sorted(set(failed))))
    if failures:
        # What nginx saw of the failed calls (its error log names the upstream and the reason).
        log = Path(cluster.balancer.dir / "error.log")
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        for line in [l for l in lines if "[error]" in l or "[warn]" in l][-8:]:
            print("  nginx: %s" % line[:300])
    assert not failures.get("warm-up"), failures.get("warm-up")
    assert not failures.get("rolling restart"), failures.get("rolling restart")
    assert not failures.get("after"), failures.get("after")
    assert load.slowest < TIMEOUT + 2
    # Every row once: the exam's scores and the term's lessons, after all the re-sending.
    md = auth(cluster.admin)
    asm = apb_grpc.AssessmentServiceStub(
        grpc.insecure_channel(cluster.balancer.address("assessment")))
    stats = asm.GetExamStatistics(apb.GetExamStatisticsRequest(exam_code="E1"), metadata=md,
                                  timeout=TIMEOUT)
    assert stats.scope.count == STUDENTS, stats.scope
    database = cluster.databases["supervision"]
    count = subprocess.run(
        [shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t",
         _url(database), "-c", "SELECT count(*) FROM sup_lessons"],
        check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    assert int(count) == load.lesson_count, (count, load.lesson_count)


def _url(database):
    import urllib.parse
    url = urllib.parse.urlsplit(DATABASE_URL)
    return urllib.parse.urlunsplit(url._replace(path="/" + database))


def test_a_token_from_one_replica_holds_at_every_replica_and_a_logout_ends_it_everywhere(
        cluster):
    first = ipb_grpc.IdentityServiceStub(
        grpc.insecure_channel("127.0.0.1:%d" % cluster.ports["identity"][0]))
    token = first.Login(ipb.LoginRequest(username="admin", password=ADMIN_PASSWORD),
                        timeout=TIMEOUT).access_token
    md = auth(token)
    reads = []
    for name in NAMES:
        for port in cluster.ports[name]:
            channel = grpc.insecure_channel("127.0.0.1:%d" % port)
            reads.append(("%s:%d" % (name, port), {
                "identity": lambda c=channel: ipb_grpc.IdentityServiceStub(c).WhoAmI(
                    ipb.WhoAmIRequest(), metadata=md, timeout=TIMEOUT),
                "catalogue": lambda c=channel: cpb_grpc.CatalogueServiceStub(c).ListCurriculum(
                    cpb.ListCurriculumRequest(), metadata=md, timeout=TIMEOUT),
                "assessment": lambda c=channel: apb_grpc.AssessmentServiceStub(c).ListExams(
                    apb.ListExamsRequest(), metadata=md, timeout=TIMEOUT),
                "supervision": lambda c=channel: spb_grpc.SupervisionServiceStub(c).ListTerms(
                    spb.ListTermsRequest(), metadata=md, timeout=TIMEOUT),
            }[name]))
    for _, read in reads:
        read()
    last = ipb_grpc.IdentityServiceStub(
        grpc.insecure_channel("127.0.0.1:%d" % cluster.ports["identity"][-1]))
    ended = time.time()
    last.Logout(ipb.LogoutRequest(), metadata=md, timeout=TIMEOUT)
    slowest = 0.0
    for where, read in reads:
        def refused():
            try:
                read()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (where, e.code())
                return
            raise AssertionError("%s still accepts a token logged out elsewhere" % where)
        eventually(refused, seconds=15)
        slowest = max(slowest, time.time() - ended)
    print("\nreplicas: a logout through one identity replica refused at all %d replicas "
          "within %.2f s" % (len(reads), slowest))
