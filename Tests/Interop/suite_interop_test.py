"""Interop: a stock Python grpcio client against all four built executables at once.

Starts identity, then catalogue, assessment and supervision as separate processes on
ephemeral ports with fresh stores; the three follow identity's org tree with a service
account. Checks that one login works everywhere, one read and one streaming RPC per service,
health and reflection on all four, that cross-county reads are refused everywhere, that a
revoked token is refused everywhere, that the others keep serving while identity is down,
and that h2load's few thousand authenticated calls all end with grpc-status 0.
Run with `bash Tests/Interop/run.sh`.

With SMARTSCHOOL_INTEROP_DATABASE_URL set to a PostgreSQL server URL (what
Tests/postgres-cluster.sh prints), every service that runs on PostgreSQL gets a fresh database
of its own on that server (`--database-url`), dropped at the end; the others stay on SQLite.
With SMARTSCHOOL_INTEROP_FIGURES set to a folder, the demo-county test writes the reports it
read there (figures-sqlite.json or figures-postgres.json), so that a run on each store can be
compared figure for figure.
"""

import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smartschool.assessment.v1 import assessment_service_pb2 as apb
from smartschool.assessment.v1 import assessment_service_pb2_grpc as apb_grpc
from smartschool.catalogue.v1 import catalogue_service_pb2 as cpb
from smartschool.catalogue.v1 import catalogue_service_pb2_grpc as cpb_grpc
from smartschool.common.v1 import common_pb2
from smartschool.identity.v1 import identity_service_pb2 as ipb
from smartschool.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from smartschool.supervision.v1 import supervision_service_pb2 as spb
from smartschool.supervision.v1 import supervision_service_pb2_grpc as spb_grpc

ROOT = Path(os.environ.get("SMARTSCHOOL_ROOT", Path(__file__).resolve().parents[2]))
BIN = ROOT / ".build" / "debug"
ADMIN_PASSWORD = "Suite-admin-42"
TEACHER_PASSWORD = "County-admin-42"
TIMEOUT = 10
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 25
# The demo county's province, so the small county the CLI loads lies in the services' scope.
PROVINCE = "P34"
TERM = "2025-2026-1"  # the demo county's term, which the suite's own tests use too
# The services whose store runs on PostgreSQL: all four.
POSTGRES_SERVICES = ("identity", "catalogue", "assessment", "supervision")
DATABASE_URL = os.environ.get("SMARTSCHOOL_INTEROP_DATABASE_URL", "")
STORE = "postgres" if DATABASE_URL else "sqlite"
SERVICES = {
    "catalogue": "smartschool.catalogue.v1.CatalogueService",
    "assessment": "smartschool.assessment.v1.AssessmentService",
    "supervision": "smartschool.supervision.v1.SupervisionService",
}


def psql(sql):
    psql_bin = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    subprocess.run([psql_bin, "-X", "-q", "-v", "ON_ERROR_STOP=1", DATABASE_URL, "-c", sql],
                   check=True, capture_output=True, timeout=60)


def store_args(name, databases):
    """`--database-url` on a fresh database for a PostgreSQL run, nothing on SQLite."""
    if not DATABASE_URL or name not in POSTGRES_SERVICES:
        return []
    if name not in databases:
        database = "interop_%s_%d" % (name, os.getpid())
        psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        psql('CREATE DATABASE "%s"' % database)
        databases[name] = database
    url = urllib.parse.urlsplit(DATABASE_URL)
    return ["--database-url", urllib.parse.urlunsplit(url._replace(path="/" + databases[name]))]


class Process:
    """One service executable, its stderr log lines and its bound ports."""

    def __init__(self, name, args, env=None):
        self.name = name
        self.process = subprocess.Popen(
            [str(BIN / ("%s-service" % name))] + args,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=dict(os.environ, **(env or {})), text=True)
        self.lines = []
        self._listening = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            event = self._listening.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            self.process.kill()
            raise AssertionError("%s: no 'listening' line:\n%s" % (name, "".join(self.lines)))
        if event is None:
            raise AssertionError("%s exited before listening (status %s):\n%s"
                                 % (name, self.process.wait(timeout=5), "".join(self.lines)))
        self.grpc_port = int(event["grpc_port"])
        self.metrics_port = int(event["metrics_port"])
        self.address = "127.0.0.1:%d" % self.grpc_port

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("msg") == "listening":
                self._listening.put(event)
        self._listening.put(None)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            return None


def auth(token):
    return [("authorization", "Bearer %s" % token)]


def org(code, name, kind, parent="", school_kind=0, stages=(), grade=0, year=""):
    return ipb.ImportOrgsRequest(org=ipb.Org(
        code=code, name=name, kind=kind, parent_code=parent, school_kind=school_kind,
        stages=list(stages), grade=grade, school_year=year))


def eventually(check, seconds=20):
    """Retries `check` until it returns without raising (the directories poll identity)."""
    deadline = time.time() + seconds
    while True:
        try:
            return check()
        except (grpc.RpcError, AssertionError):
            if time.time() > deadline:
                raise
            time.sleep(0.25)


class Suite:
    def __init__(self, data):
        self.data = Path(data)
        self.databases = {}
        self.identity = self._start_identity(0)
        self.channels = {"identity": grpc.insecure_channel(self.identity.address)}
        self.id = ipb_grpc.IdentityServiceStub(self.channels["identity"])
        self.admin = self.login("admin", ADMIN_PASSWORD)
        self._seed()
        account = self.id.CreateServiceAccount(ipb.CreateServiceAccountRequest(
            name="suite-sync", org_code=PROVINCE, roles=[ipb.ROLE_DATA_EXCHANGE]),
            metadata=auth(self.admin), timeout=TIMEOUT)
        self.others = {}
        for name in SERVICES:
            self.others[name] = Process(name, [
                "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                "--data-dir", str(self.data / name), "--identity-addr", self.identity.address,
                "--client-id", account.client_id, "--client-secret", account.client_secret]
                + store_args(name, self.databases))
            self.channels[name] = grpc.insecure_channel(self.others[name].address)
        self.cat = cpb_grpc.CatalogueServiceStub(self.channels["catalogue"])
        self.asm = apb_grpc.AssessmentServiceStub(self.channels["assessment"])
        self.sup = spb_grpc.SupervisionServiceStub(self.channels["supervision"])
        self.sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
            code=TERM, name="2025-2026学年第一学期", start_date="2025-09-01",
            end_date="2026-01-16", excluded_weeks=["2025-09-29"])), metadata=auth(self.admin), timeout=TIMEOUT)

    def _start_identity(self, port):
        return Process("identity", [
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
            "--data-dir", str(self.data / "identity"), "--scrypt-log-n", "10"]
            + store_args("identity", self.databases),
            env={"SMARTSCHOOL_ADMIN_PASSWORD": ADMIN_PASSWORD})

    def login(self, username, password):
        return self.id.Login(ipb.LoginRequest(username=username, password=password),
                             timeout=TIMEOUT).access_token

    def _seed(self):
        rows = [
            org(PROVINCE, "示范省", common_pb2.ORG_KIND_PROVINCE),
            org("C", "示范市", common_pb2.ORG_KIND_CITY, PROVINCE),
            org("K1", "东县", common_pb2.ORG_KIND_COUNTY, "C"),
            org("K2", "西县", common_pb2.ORG_KIND_COUNTY, "C"),
        ]
        for county in ("K1", "K2"):
            school = county + "-S"
            rows.append(org(school, county + "中学", common_pb2.ORG_KIND_SCHOOL, county,
                            common_pb2.SCHOOL_KIND_URBAN, [common_pb2.STAGE_JUNIOR]))
            rows.append(org(school + "-C1", "七年级1班", common_pb2.ORG_KIND_CLASS, school,
                            grade=7, year="2025-2026"))
        summary = self.id.ImportOrgs(iter(rows), metadata=auth(self.admin), timeout=TIMEOUT)
        assert summary.accepted == len(rows), summary
        users = [ipb.ImportUsersRequest(user=ipb.User(
            external_id="%s-ST1" % county, username="%s-st1" % county.lower(),
            display_name="学生", kind=ipb.USER_KIND_STUDENT, org_code="%s-S-C1" % county))
            for county in ("K1", "K2")]
        summary = self.id.ImportUsers(iter(users), metadata=auth(self.admin), timeout=TIMEOUT)
        assert summary.accepted == 2, summary
        # A county admin of K1 with a password, for the cross-county checks.
        user = self.id.CreateUser(ipb.CreateUserRequest(user=ipb.User(
            external_id="K1-ADMIN", username="k1admin", display_name="东县管理员",
            kind=ipb.USER_KIND_STAFF, org_code="K1"),
            initial_password="Initial-" + TEACHER_PASSWORD),
            metadata=auth(self.admin), timeout=TIMEOUT)
        self.id.GrantRole(ipb.GrantRoleRequest(
            user_id=user.id, role=ipb.ROLE_COUNTY_ADMIN, org_code="K1"),
            metadata=auth(self.admin), timeout=TIMEOUT)
        # An admin-set password must be replaced at first login: FAILED_PRECONDITION until then.
        try:
            self.login("k1admin", "Initial-" + TEACHER_PASSWORD)
            raise AssertionError("an admin-set password logged in without a change")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        self.id.Login(ipb.LoginRequest(
            username="k1admin", password="Initial-" + TEACHER_PASSWORD,
            new_password=TEACHER_PASSWORD), timeout=TIMEOUT)

    def restart_identity(self):
        port = self.identity.grpc_port
        assert self.identity.stop() == 0
        self.identity = self._start_identity(port)

    def stop(self):
        for ch in self.channels.values():
            ch.close()
        statuses = {name: p.stop() for name, p in self.others.items()}
        statuses["identity"] = self.identity.stop()
        for database in self.databases.values():
            psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        return statuses


@pytest.fixture(scope="module")
def suite():
    for name in ["identity"] + list(SERVICES):
        exe = BIN / ("%s-service" % name)
        if not exe.exists():
            pytest.fail("%s is missing: run 'swift build' first" % exe)
    with tempfile.TemporaryDirectory(prefix="suite-interop-") as data:
        s = Suite.__new__(Suite)
        s.others = {}
        s.databases = {}
        try:
            s.__init__(data)
        except BaseException:
            # Never leave a process behind when setting up fails half-way.
            for p in list(s.others.values()) + [getattr(s, "identity", None)]:
                if p is not None:
                    p.process.kill()
            for database in s.databases.values():
                psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
            raise
        try:
            yield s
        finally:
            statuses = s.stop()
        assert all(v == 0 for v in statuses.values()), statuses


def test_health_and_reflection_on_all_four(suite):
    for name, ch in suite.channels.items():
        health = health_pb2_grpc.HealthStub(ch)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT)
        listed = {s.name for r in responses for s in r.list_services_response.service}
        expected = SERVICES.get(name, "smartschool.identity.v1.IdentityService")
        assert expected in listed, (name, listed)
        assert "grpc.health.v1.Health" in listed


def test_one_login_is_accepted_by_every_service_with_a_streaming_rpc_each(suite):
    token = suite.login("admin", ADMIN_PASSWORD)
    md = auth(token)
    # catalogue: stream a small textbook tree in, read it back.
    tree = [
        cpb.ImportCurriculumRequest(node=cpb.CurriculumNode(
            code="ED", kind=cpb.CURRICULUM_NODE_KIND_EDITION, name="人教版初中数学",
            stage=common_pb2.STAGE_JUNIOR, subject=common_pb2.SUBJECT_MATHEMATICS)),
        cpb.ImportCurriculumRequest(node=cpb.CurriculumNode(
            code="ED-7A", parent_code="ED", kind=cpb.CURRICULUM_NODE_KIND_VOLUME,
            name="七年级上册", grade=7)),
        cpb.ImportCurriculumRequest(node=cpb.CurriculumNode(
            code="ED-7A-1", parent_code="ED-7A", kind=cpb.CURRICULUM_NODE_KIND_CHAPTER,
            name="有理数", ordinal=1)),
    ]
    summary = suite.cat.ImportCurriculum(iter(tree), metadata=md, timeout=TIMEOUT)
    assert summary.accepted == 3 and summary.rejected == 0, summary
    nodes = suite.cat.ListCurriculum(cpb.ListCurriculumRequest(edition_code="ED"),
                                     metadata=md, timeout=TIMEOUT).nodes
    assert {n.code for n in nodes} >= {"ED-7A", "ED-7A-1"}

    # supervision: a classroom (once its directory knows the school), then a streamed lesson
    # log with one good and one bad row.
    eventually(lambda: suite.sup.CreateClassroom(spb.CreateClassroomRequest(
        classroom=spb.Classroom(code="K1-R1", name="智慧教室1", school_code="K1-S",
                                equipped_date="2025-08-25")), metadata=md, timeout=TIMEOUT))
    lessons = [
        spb.Lesson(teacher_external_id="T1", classroom_code="K1-R1",
                   subject=common_pb2.SUBJECT_MATHEMATICS, date="2025-09-02", period=1,
                   duration_minutes=40, source=spb.LESSON_SOURCE_PLATFORM),
        spb.Lesson(teacher_external_id="T1", classroom_code="NO-SUCH-ROOM",
                   subject=common_pb2.SUBJECT_MATHEMATICS, date="2025-09-02", period=2,
                   duration_minutes=40, source=spb.LESSON_SOURCE_PLATFORM),
    ]
    # The batched form: both lessons in one message (an empty message too), rows numbered
    # across the stream as in ImportLessons.
    batches = [spb.LessonBatch(), spb.LessonBatch(lessons=lessons)]
    summary = suite.sup.ImportLessonBatches(iter(batches), metadata=md, timeout=TIMEOUT)
    assert (summary.accepted, summary.rejected) == (1, 1), summary
    assert [e.index for e in summary.errors] == [1], summary
    assert [t.code for t in suite.sup.ListTerms(spb.ListTermsRequest(), metadata=md,
                                                 timeout=TIMEOUT).terms] == [TERM]

    # assessment: a city-wide exam, a streamed score import (one row over the item's max), a read.
    suite.asm.CreateExam(apb.CreateExamRequest(exam=apb.Exam(
        code="E1", name="期中数学", school_year="2025-2026", term=1,
        subject=common_pb2.SUBJECT_MATHEMATICS, stage=common_pb2.STAGE_JUNIOR, grade=7,
        org_code="C", items=[apb.ExamItem(number=1, max_score=10, objective=True,
                                           knowledge_points=["KP1"])])),
        metadata=md, timeout=TIMEOUT)
    rows = [
        apb.ScoreRow(exam_code="E1", student_external_id="K1-ST1", class_code="K1-S-C1",
                     school_code="K1-S", item_number=1, score=8),
        apb.ScoreRow(exam_code="E1", student_external_id="K1-ST1", class_code="K1-S-C1",
                     school_code="K1-S", item_number=1, score=11),
    ]
    summary = eventually(lambda: _accepting(suite.asm.ImportScores(
        iter(rows), metadata=md, timeout=TIMEOUT)))
    assert (summary.accepted, summary.rejected) == (1, 1), summary
    stats = suite.asm.GetExamStatistics(apb.GetExamStatisticsRequest(exam_code="E1"),
                                        metadata=md, timeout=TIMEOUT)
    assert stats.scope.count == 1 and stats.scope.mean == 8, stats


def _accepting(summary):
    # Until the directory has synced, the class is unknown and the row is rejected.
    assert summary.accepted >= 1, summary
    return summary


def test_cross_county_reads_are_refused_at_every_service(suite):
    md = auth(suite.login("k1admin", TEACHER_PASSWORD))
    refused = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    calls = {
        "identity": lambda: suite.id.GetOrg(ipb.GetOrgRequest(code="K2-S"), metadata=md,
                                            timeout=TIMEOUT),
        "catalogue": lambda: suite.cat.GetCaseCoverage(
            cpb.GetCaseCoverageRequest(org_code="K2"), metadata=md, timeout=TIMEOUT),
        "supervision": lambda: suite.sup.GetComplianceReport(
            spb.GetComplianceReportRequest(org_code="K2", term_code=TERM), metadata=md,
            timeout=TIMEOUT),
        "assessment": lambda: suite.asm.GetExamStatistics(
            apb.GetExamStatisticsRequest(exam_code="E1", scope_org_code="K2"), metadata=md,
            timeout=TIMEOUT),
    }
    for name, call in calls.items():
        code, details = _refusal(call)
        assert code in refused, (name, code, details)
    # The same admin reads their own county.
    suite.sup.GetComplianceReport(spb.GetComplianceReportRequest(org_code="K1", term_code=TERM),
                                  metadata=md, timeout=TIMEOUT)


def _refusal(call, seconds=20):
    """The status of a call that must be refused: an answer fails the test at once; only a
    transient UNAVAILABLE is tried again. Until the directory has synced a service may not know
    K2 at all (NOT_FOUND is also a refusal), but it must never answer."""
    deadline = time.time() + seconds
    while True:
        try:
            call()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE and time.time() < deadline:
                time.sleep(0.25)
                continue
            return e.code(), e.details()
        raise AssertionError("answered a cross-county read")


def test_a_revoked_token_is_refused_everywhere(suite):
    token = suite.login("admin", ADMIN_PASSWORD)
    md = auth(token)
    reads = {
        "identity": lambda: suite.id.WhoAmI(ipb.WhoAmIRequest(), metadata=md, timeout=TIMEOUT),
        "catalogue": lambda: suite.cat.ListCurriculum(cpb.ListCurriculumRequest(),
                                                      metadata=md, timeout=TIMEOUT),
        "assessment": lambda: suite.asm.ListExams(apb.ListExamsRequest(), metadata=md,
                                                  timeout=TIMEOUT),
        "supervision": lambda: suite.sup.ListTerms(spb.ListTermsRequest(), metadata=md,
                                                   timeout=TIMEOUT),
    }
    for read in reads.values():
        read()
    suite.id.Logout(ipb.LogoutRequest(), metadata=md, timeout=TIMEOUT)
    for name, read in reads.items():
        def refused():
            try:
                read()
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (name, e.code())
                return
            raise AssertionError("%s still accepts a revoked token" % name)
        eventually(refused, seconds=15)
    # A token that was never an access token is refused too.
    for name in SERVICES:
        with pytest.raises(grpc.RpcError) as raised:
            suite.sup.ListTerms(spb.ListTermsRequest(), metadata=auth("x.y.z"), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_others_serve_while_identity_is_down_and_recover(suite):
    md = auth(suite.login("admin", ADMIN_PASSWORD))
    port = suite.identity.grpc_port
    assert suite.identity.stop() == 0
    try:
        # Tokens verify with cached keys; the org tree is the cached copy.
        assert suite.sup.ListTerms(spb.ListTermsRequest(), metadata=md, timeout=TIMEOUT).terms
        suite.sup.GetComplianceReport(spb.GetComplianceReportRequest(
            org_code="K1", term_code=TERM), metadata=md, timeout=TIMEOUT)
        suite.cat.GetCaseCoverage(cpb.GetCaseCoverageRequest(org_code="K1"), metadata=md,
                                  timeout=TIMEOUT)
        suite.asm.GetExamStatistics(apb.GetExamStatisticsRequest(exam_code="E1"),
                                    metadata=md, timeout=TIMEOUT)
    finally:
        suite.identity = suite._start_identity(port)
    # Back: a new org reaches the others through the feed again.
    suite.id.ImportOrgs(iter([org("K1-S2", "东县二中", common_pb2.ORG_KIND_SCHOOL, "K1",
                                  common_pb2.SCHOOL_KIND_RURAL, [common_pb2.STAGE_JUNIOR])]),
                        metadata=md, timeout=TIMEOUT)
    eventually(lambda: suite.sup.CreateClassroom(spb.CreateClassroomRequest(
        classroom=spb.Classroom(code="K1-S2-R1", name="智慧教室", school_code="K1-S2",
                                equipped_date="2025-08-25")), metadata=md, timeout=TIMEOUT),
               seconds=30)


def _metric(port, name, labels):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read()
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _beside_good_calls(suite, name, bad, good, rounds=10):
    """Runs `bad` on the service's channel while four threads make good calls on the same
    channel (one HTTP/2 connection); returns bad's RpcError and asserts every good call
    succeeded."""
    failures = []

    def worker():
        for _ in range(rounds):
            try:
                good()
            except grpc.RpcError as e:  # collected: the assertion names them all
                failures.append((name, e.code(), e.details()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with pytest.raises(grpc.RpcError) as refused:
            bad()
    finally:
        for t in threads:
            t.join()
    assert not failures, failures
    return refused.value


def _calls(suite, md):
    """Per service: a call taking a string field (to make oversize) and a good read."""
    return {
        "identity": (lambda v, m=md: suite.id.GetOrg(ipb.GetOrgRequest(code=v), metadata=m,
                                                     timeout=TIMEOUT),
                     lambda: suite.id.GetOrg(ipb.GetOrgRequest(code=PROVINCE), metadata=md,
                                             timeout=TIMEOUT)),
        "catalogue": (lambda v, m=md: suite.cat.SearchResources(
                          cpb.SearchResourcesRequest(query=v), metadata=m, timeout=TIMEOUT),
                      lambda: suite.cat.SearchResources(cpb.SearchResourcesRequest(query="数学"),
                                                        metadata=md, timeout=TIMEOUT)),
        "assessment": (lambda v, m=md: suite.asm.GetExam(apb.GetExamRequest(code=v), metadata=m,
                                                         timeout=TIMEOUT),
                       lambda: suite.asm.ListExams(apb.ListExamsRequest(), metadata=md,
                                                   timeout=TIMEOUT)),
        "supervision": (lambda v, m=md: suite.sup.ListTerms(spb.ListTermsRequest(page_token=v),
                                                            metadata=m, timeout=TIMEOUT),
                        lambda: suite.sup.ListTerms(spb.ListTermsRequest(), metadata=md,
                                                    timeout=TIMEOUT)),
    }


def test_an_oversize_message_is_resource_exhausted_and_the_service_goes_on(suite):
    # Every server takes at most 4 MiB per message (--max-message-bytes). Any size past it —
    # one byte over, 8 MiB, 32 MiB — is refused with RESOURCE_EXHAUSTED naming the limit, while
    # other calls on the same channel (one HTTP/2 connection) go on succeeding.
    md = auth(suite.login("admin", ADMIN_PASSWORD))
    for size in (4 * 1024 * 1024 + 1, 8 * 1024 * 1024, 32 * 1024 * 1024):
        huge = "x" * size
        for name, (oversize, normal) in _calls(suite, md).items():
            refused = _beside_good_calls(suite, name, lambda: oversize(huge), normal, rounds=3)
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (name, size, refused)
            assert "limit of 4194304 bytes" in refused.details(), (name, size, refused)
            normal()
    # An unauthenticated Login with an 8 MiB username, as an attacker would send it.
    refused = _beside_good_calls(
        suite, "identity",
        lambda: suite.id.Login(ipb.LoginRequest(username="u" * (8 << 20), password="p"),
                               timeout=TIMEOUT),
        lambda: suite.id.GetOrg(ipb.GetOrgRequest(code=PROVINCE), metadata=md, timeout=TIMEOUT))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused


def test_an_oversize_header_fails_alone_beside_concurrent_calls_on_one_channel(suite):
    # A gateway multiplexes many users on one connection: a 20 KB authorization header (past
    # HTTP/2's 16 KiB header-list limit) fails that call alone; the connection is not closed.
    md = auth(suite.login("admin", ADMIN_PASSWORD))
    for size in (16_000, 20_000, 200_000):
        bad_md = [("authorization", "Bearer " + "a" * size)]
        for name, (call, normal) in _calls(suite, md).items():
            refused = _beside_good_calls(suite, name, lambda: call("x", bad_md), normal)
            assert refused.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      grpc.StatusCode.UNAUTHENTICATED), (name, size, refused)
            normal()


def test_h2load_authenticated_unary_calls_all_succeed(suite, tmp_path):
    assert shutil.which("h2load"), "h2load missing: Tests/run-all.sh installs nghttp2-client"
    token = suite.login("admin", ADMIN_PASSWORD)
    service = suite.others["supervision"]
    method = "/smartschool.supervision.v1.SupervisionService/ListTerms"
    body = tmp_path / "empty.grpc"
    body.write_bytes(b"\x00\x00\x00\x00\x00")  # one uncompressed, empty ListTermsRequest
    label = method.lstrip("/")
    ok_before = _metric(service.metrics_port, "smartschool_rpc_requests_total",
                        {"code": "ok", "method": label})
    all_before = _metric(service.metrics_port, "smartschool_rpc_requests_total",
                         {"method": label})
    calls = 3000
    result = subprocess.run(
        ["h2load", "-n", str(calls), "-c", "4", "-m", "16", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-H", "authorization: Bearer %s" % token,
         "http://%s%s" % (service.address, method)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded",
                     result.stdout)
    assert done and int(done.group(3)) == calls, result.stdout
    # HTTP 200 is not gRPC success: the server's own counters say every call ended OK.
    # (The server counts a call just after sending its response.)
    time.sleep(0.5)
    ok = _metric(service.metrics_port, "smartschool_rpc_requests_total",
                 {"code": "ok", "method": label}) - ok_before
    everything = _metric(service.metrics_port, "smartschool_rpc_requests_total",
                         {"method": label}) - all_before
    assert ok == calls and everything == calls, (ok, everything)


def test_a_small_county_loaded_through_the_cli_reports_what_its_csv_files_say(suite, tmp_path):
    env = dict(os.environ, SMARTSCHOOL_USERNAME="admin", SMARTSCHOOL_PASSWORD=ADMIN_PASSWORD,
               SMARTSCHOOL_IDENTITY_ADDR=suite.identity.address,
               **{"SMARTSCHOOL_%s_ADDR" % name.upper(): p.address
                  for name, p in suite.others.items()})
    cli = str(BIN / "smartschool")
    out = tmp_path / "county"
    loaded = subprocess.run([cli, "demo", "--small", "--quiet", "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert loaded.returncode == 0, loaded.stdout[-3000:] + loaded.stderr[-3000:]

    # The exam's figures, computed here from the CSV files the CLI loaded.
    with open(out / "exams.csv", encoding="utf-8-sig") as f:
        exam = next(csv.DictReader(f))
    totals = {}
    with open(out / "scores.csv", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            if row["exam_code"] == exam["code"]:
                key = row["student_external_id"]
                totals[key] = totals.get(key, 0.0) + float(row["score"])
    full = float(exam["full_marks"])
    mean = sum(totals.values()) / len(totals)
    passed = 100.0 * sum(1 for t in totals.values() if t >= 0.6 * full) / len(totals)
    report = subprocess.run([cli, "report", "exam", "--exam", exam["code"], "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    scope = json.loads(report.stdout)["scope"]
    assert int(scope["count"]) == len(totals)
    assert abs(float(scope["mean"]) - mean) <= 0.005 + 1e-9, (scope["mean"], mean)
    assert abs(float(scope.get("passRate", 0)) - passed) <= 0.005 + 1e-9, (scope, passed)

    # Loading again changes nothing: the same county, no rejected row, the same figures.
    again = subprocess.run([cli, "demo", "--small", "--quiet", "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    report = subprocess.run([cli, "report", "exam", "--exam", exam["code"], "--format", "json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert int(json.loads(report.stdout)["scope"]["count"]) == len(totals)

    # The reports a county reads, kept for a comparison of this store's run with the other's.
    figures_dir = os.environ.get("SMARTSCHOOL_INTEROP_FIGURES")
    if figures_dir:
        with open(out / "orgs.csv", encoding="utf-8-sig") as f:
            county = next(r["code"] for r in csv.DictReader(f) if r["kind"] == "county")
        with open(out / "terms.csv", encoding="utf-8-sig") as f:
            term = next(csv.DictReader(f))["code"]
        figures = {}
        for name, args in [
                ("exam", ["exam", "--exam", exam["code"]]),
                ("compliance", ["compliance", "--org", county, "--term", term]),
                ("teachers", ["teachers", "--org", county, "--term", term])]:
            shown = subprocess.run([cli, "report"] + args + ["--format", "json"], env=env,
                                   capture_output=True, text=True, timeout=120)
            assert shown.returncode == 0, (name, shown.stderr)
            figures[name] = json.loads(shown.stdout)
        with open(Path(figures_dir) / ("figures-%s.json" % STORE), "w", encoding="utf-8") as f:
            json.dump(figures, f, ensure_ascii=False, indent=1, sort_keys=True)
