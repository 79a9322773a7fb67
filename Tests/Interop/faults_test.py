"""Faults against the built executables: kill -9 during a streamed import, SIGTERM under load,
a store locked by another process, a full disk, and a client deadline shorter than the work.

Each test starts its own identity and supervision processes (fresh stores, ephemeral ports).
Run with `bash Tests/Interop/run.sh`.
"""

import datetime
import os
import random
import signal
import sqlite3
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
from smartschool.common.v1 import common_pb2
from smartschool.identity.v1 import identity_service_pb2 as ipb
from smartschool.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from smartschool.supervision.v1 import supervision_service_pb2 as spb
from smartschool.supervision.v1 import supervision_service_pb2_grpc as spb_grpc
from suite_interop_test import ADMIN_PASSWORD, Process, auth, eventually, org

TIMEOUT = 15
BATCH = 500  # rows per committed batch of a lesson import (SupervisionAPI.importBatch)
SCORE_BATCH = 20000  # rows per committed batch of a score import (AssessmentAPI.importBatch)
ROOMS = 40
DAYS = 100
PERIODS = 8  # ROOMS × DAYS × PERIODS = 32,000 lessons


def school_days():
    day = datetime.date(2025, 9, 1)
    out = []
    while len(out) < DAYS:
        if day.weekday() < 5:
            out.append(day.isoformat())
        day += datetime.timedelta(days=1)
    return out


DAYS_LIST = school_days()
CLASSES = 4
STUDENTS = 3000
ITEMS = 20  # STUDENTS × ITEMS = 60,000 score rows: three batches of a score import


def score_rows(exam):
    for student in range(STUDENTS):
        klass = "S-C%d" % (student % CLASSES + 1)
        for item in range(1, ITEMS + 1):
            yield apb.ScoreRow(exam_code=exam, student_external_id="ST%05d" % student,
                               class_code=klass, school_code="S", item_number=item,
                               score=(student * 7 + item * 3) % 6)


def lessons():
    for room in range(ROOMS):
        for day in DAYS_LIST:
            for period in range(1, PERIODS + 1):
                yield spb.Lesson(teacher_external_id="T1", classroom_code="R%02d" % room,
                                 subject=common_pb2.SUBJECT_MATHEMATICS, date=day,
                                 period=period, duration_minutes=40,
                                 source=spb.LESSON_SOURCE_PLATFORM)


class World:
    """identity + supervision with a school, its classrooms and a term."""

    def __init__(self, data):
        self.data = Path(data)
        self.identity = Process("identity", [
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
            "--data-dir", str(self.data / "identity"), "--scrypt-log-n", "10"],
            env={"SMARTSCHOOL_ADMIN_PASSWORD": ADMIN_PASSWORD})
        self.id_channel = grpc.insecure_channel(self.identity.address)
        self.id = ipb_grpc.IdentityServiceStub(self.id_channel)
        self.token = self.id.Login(ipb.LoginRequest(username="admin", password=ADMIN_PASSWORD),
                                   timeout=TIMEOUT).access_token
        rows = [org("P", "省", common_pb2.ORG_KIND_PROVINCE),
                org("C", "市", common_pb2.ORG_KIND_CITY, "P"),
                org("K", "县", common_pb2.ORG_KIND_COUNTY, "C"),
                org("S", "中学", common_pb2.ORG_KIND_SCHOOL, "K", common_pb2.SCHOOL_KIND_URBAN,
                    [common_pb2.STAGE_JUNIOR])]
        rows += [org("S-C%d" % c, "七年级%d班" % c, common_pb2.ORG_KIND_CLASS, "S", grade=7,
                     year="2025-2026") for c in range(1, CLASSES + 1)]
        summary = self.id.ImportOrgs(iter(rows), metadata=self.md, timeout=TIMEOUT)
        assert summary.accepted == len(rows), summary
        account = self.id.CreateServiceAccount(ipb.CreateServiceAccountRequest(
            name="faults-sync", org_code="P", roles=[ipb.ROLE_DATA_EXCHANGE]),
            metadata=self.md, timeout=TIMEOUT)
        self.credentials = [account.client_id, account.client_secret]
        self.port = 0
        self.supervision = None
        self.assessment = None
        self.start_supervision()
        self.sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
            code="T1", name="第一学期", start_date="2025-09-01", end_date="2026-01-30")),
            metadata=self.md, timeout=TIMEOUT)
        for room in range(ROOMS):
            eventually(lambda: self.sup.CreateClassroom(spb.CreateClassroomRequest(
                classroom=spb.Classroom(code="R%02d" % room, name="教室", school_code="S",
                                        equipped_date="2025-08-25")),
                metadata=self.md, timeout=TIMEOUT))

    @property
    def md(self):
        return auth(self.token)

    def start_supervision(self, extra=()):
        self.supervision = Process("supervision", [
            "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", "0",
            "--data-dir", str(self.data / "supervision"), "--identity-addr",
            self.identity.address, "--client-id", self.credentials[0],
            "--client-secret", self.credentials[1]] + list(extra))
        self.port = self.supervision.grpc_port
        self.channel = grpc.insecure_channel(self.supervision.address)
        self.sup = spb_grpc.SupervisionServiceStub(self.channel)

    def start_assessment(self):
        port = self.assessment.grpc_port if self.assessment else 0
        self.assessment = Process("assessment", [
            "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
            "--data-dir", str(self.data / "assessment"), "--identity-addr",
            self.identity.address, "--client-id", self.credentials[0],
            "--client-secret", self.credentials[1]])
        self.asm_channel = grpc.insecure_channel(self.assessment.address)
        self.asm = apb_grpc.AssessmentServiceStub(self.asm_channel)

    def stored_scores(self, exam):
        keys = [(r.student_external_id, r.item_number) for r in self.asm.ExportScores(
            apb.ExportScoresRequest(exam_code=exam), metadata=self.md, timeout=60)]
        assert len(keys) == len(set(keys)), "duplicate scores"
        return keys

    def stored_lessons(self):
        keys = [(l.classroom_code, l.date, l.period) for l in self.sup.ListLessons(
            spb.ListLessonsRequest(org_code="S", from_date=DAYS_LIST[0], to_date=DAYS_LIST[-1]),
            metadata=self.md, timeout=60)]
        assert len(keys) == len(set(keys)), "duplicate lessons"
        return keys

    def close(self):
        self.channel.close()
        self.id_channel.close()
        if self.supervision:
            self.supervision.stop()
        if self.assessment:
            self.asm_channel.close()
            self.assessment.stop()
        self.identity.stop()


@pytest.fixture
def world():
    with tempfile.TemporaryDirectory(prefix="faults-") as data:
        w = World.__new__(World)
        w.supervision = None
        w.assessment = None
        try:
            w.__init__(data)
        except BaseException:
            # Never leave a process behind when setting up fails half-way.
            for p in (w.supervision, w.assessment, getattr(w, "identity", None)):
                if p is not None:
                    p.process.kill()
            raise
        try:
            yield w
        finally:
            w.close()


def test_kill_9_during_a_lesson_import_keeps_whole_batches_and_a_resend_completes(world):
    total = ROOMS * DAYS * PERIODS
    rng = random.Random(20261123)
    for run in range(3):
        delay = rng.uniform(0.2, 2.5)
        completed = _import_under_sigkill(
            world.supervision, delay, total,
            lambda: world.sup.ImportLessons(lessons(), metadata=world.md, timeout=120))
        world.channel.close()
        world.start_supervision()
        stored = world.stored_lessons()
        # Whole batches only: nothing half-written (the last batch of a finished stream is
        # the only one that may be short).
        assert completed or len(stored) % BATCH == 0, (run, delay, len(stored))
        summary = world.sup.ImportLessons(lessons(), metadata=world.md, timeout=120)
        assert (summary.accepted, summary.rejected) == (total, 0), summary
        assert len(world.stored_lessons()) == total


def test_kill_9_during_a_score_import_keeps_whole_batches_and_a_resend_completes(world):
    world.start_assessment()

    def exam(code):
        return apb.Exam(
            code=code, name="期末数学", school_year="2025-2026", term=1,
            subject=common_pb2.SUBJECT_MATHEMATICS, stage=common_pb2.STAGE_JUNIOR, grade=7,
            org_code="S", full_marks=ITEMS * 5,
            items=[apb.ExamItem(number=n, max_score=5, objective=n <= 10,
                                knowledge_points=["KP%d" % n]) for n in range(1, ITEMS + 1)])

    total = STUDENTS * ITEMS
    rng = random.Random(20261124)
    for run in range(3):
        # A fresh exam each run, so each kill meets an import that has not happened before.
        code = "E%d" % run
        # The school is known once the service's directory has synced from identity.
        eventually(lambda: world.asm.CreateExam(apb.CreateExamRequest(exam=exam(code)),
                                                metadata=world.md, timeout=TIMEOUT))
        delay = rng.uniform(0.2, 2.0)
        # Until the directory has synced the classes, rows are rejected, not lost.
        completed = _import_under_sigkill(
            world.assessment, delay, total,
            lambda: world.asm.ImportScores(score_rows(code), metadata=world.md, timeout=120))
        world.asm_channel.close()
        world.start_assessment()
        stored = world.stored_scores(code)
        assert completed or len(stored) % SCORE_BATCH == 0, (run, delay, len(stored))
        summary = eventually(lambda: _all_accepted(world.asm.ImportScores(
            score_rows(code), metadata=world.md, timeout=120), total))
        assert summary.rejected == 0, summary
        assert len(world.stored_scores(code)) == total
        # Totals are derived from the item scores, so they agree with them after every crash.
        stats = world.asm.GetExamStatistics(apb.GetExamStatisticsRequest(exam_code=code),
                                            metadata=world.md, timeout=TIMEOUT)
        expected = [sum((s * 7 + i * 3) % 6 for i in range(1, ITEMS + 1))
                    for s in range(STUDENTS)]
        assert stats.scope.count == STUDENTS
        assert abs(stats.scope.mean - sum(expected) / STUDENTS) < 0.01, stats.scope


def _import_under_sigkill(service, delay, total, call):
    """Runs the streamed import `call` while a timer SIGKILLs `service` after `delay` seconds;
    True when the import finished (every row accepted) before the kill."""
    killer = threading.Timer(delay, lambda: service.process.send_signal(signal.SIGKILL))
    killer.start()
    try:
        completed = call().accepted == total
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                            grpc.StatusCode.INTERNAL), e
        completed = False
    killer.join()
    service.process.wait(timeout=10)
    return completed


def _all_accepted(summary, total):
    assert summary.accepted == total, summary
    return summary


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones(world):
    def slow_lessons():
        for i, lesson in enumerate(lessons()):
            if i >= 200:
                return
            if i % 20 == 0:
                time.sleep(0.1)  # the stream lasts about a second
            yield lesson

    result = {}

    def run_import():
        try:
            result["summary"] = world.sup.ImportLessons(slow_lessons(), metadata=world.md,
                                                        timeout=60)
        except grpc.RpcError as e:
            result["error"] = e

    thread = threading.Thread(target=run_import)
    thread.start()
    time.sleep(0.3)
    started = time.time()
    world.supervision.process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert "error" not in result, result.get("error")
    assert result["summary"].accepted == 200
    # New calls are refused cleanly, and the process is gone within the drain timeout.
    status = world.supervision.process.wait(timeout=25)
    assert status == 0 and time.time() - started < 21
    with pytest.raises(grpc.RpcError) as refused:
        world.sup.ListTerms(spb.ListTermsRequest(), metadata=world.md, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_store_locked_by_another_process_is_unavailable_then_recovers(world):
    path = world.data / "supervision" / "supervision.sqlite"
    holder = sqlite3.connect(str(path), timeout=1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.time()
        with pytest.raises(grpc.RpcError) as locked:
            world.sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
                code="T2", name="第二学期", start_date="2026-02-23", end_date="2026-07-10")),
                metadata=world.md, timeout=30)
        assert locked.value.code() == grpc.StatusCode.UNAVAILABLE, locked.value
        assert time.time() - started < 15
        # Reads keep working (WAL readers do not wait for the writer's lock).
        assert world.sup.ListTerms(spb.ListTermsRequest(), metadata=world.md,
                                   timeout=TIMEOUT).terms
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    term = world.sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
        code="T2", name="第二学期", start_date="2026-02-23", end_date="2026-07-10")),
        metadata=world.md, timeout=TIMEOUT)
    assert term.code == "T2"


def test_a_client_deadline_shorter_than_the_work_stops_it(world):
    def endless():
        for lesson in lessons():
            yield lesson
        while True:  # never ends: only the deadline stops the call
            time.sleep(0.05)
            yield spb.Lesson(teacher_external_id="T1", classroom_code="R00",
                             subject=common_pb2.SUBJECT_MATHEMATICS, date=DAYS_LIST[0], period=1,
                             duration_minutes=40, source=spb.LESSON_SOURCE_PLATFORM)

    with pytest.raises(grpc.RpcError) as raised:
        world.sup.ImportLessons(endless(), metadata=world.md, timeout=1.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server stopped too: nothing is in flight there, and what it kept is whole batches.
    eventually(lambda: _no_rpc_in_flight(world), seconds=10)
    assert len(world.stored_lessons()) % BATCH == 0


def _no_rpc_in_flight(world):
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % world.supervision.metrics_port,
                                  timeout=5).read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("smartschool_rpc_in_flight")]
    # This scrape itself is HTTP, not an RPC.
    assert values and values[0] == 0, values


def test_a_full_disk_is_resource_exhausted_and_the_service_recovers(world, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip("this machine does not allow a tmpfs mount: %s" % made.stderr.strip())
    try:
        world.supervision.stop()
        world.channel.close()
        world.data = mount  # a fresh supervision store on the small file system
        world.port = 0
        world.start_supervision()
        world.sup.CreateTerm(spb.CreateTermRequest(term=spb.Term(
            code="T1", name="第一学期", start_date="2025-09-01", end_date="2026-01-30")),
            metadata=world.md, timeout=TIMEOUT)
        for room in range(ROOMS):
            eventually(lambda: world.sup.CreateClassroom(spb.CreateClassroomRequest(
                classroom=spb.Classroom(code="R%02d" % room, name="教室", school_code="S",
                                        equipped_date="2025-08-25")),
                metadata=world.md, timeout=TIMEOUT))
        with pytest.raises(grpc.RpcError) as full:
            world.sup.ImportLessons(lessons(), metadata=world.md, timeout=120)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, full.value
        health = health_pb2_grpc.HealthStub(world.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == \
            health_pb2.HealthCheckResponse.SERVING
        kept = len(world.stored_lessons())
        assert kept % BATCH == 0
        # The fault clears: more space, and the same import now completes.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        summary = world.sup.ImportLessons(lessons(), metadata=world.md, timeout=120)
        assert summary.accepted == ROOMS * DAYS * PERIODS
        assert len(world.stored_lessons()) == ROOMS * DAYS * PERIODS
    finally:
        world.supervision.stop()
        world.supervision = None
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
