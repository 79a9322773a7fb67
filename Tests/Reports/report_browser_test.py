"""HTML reports written by the real `smartschool` CLI, opened in headless Chromium.

All four built services run on loopback (SQLite stores in a temporary folder, or with
SMARTSCHOOL_REPORTS_DATABASE_URL a fresh database each on that PostgreSQL server); the CLI loads the
small demo county (`smartschool demo --small`) and a two-paper joint exam made here; then each
report is written with `--format html --out FILE` and read back in the browser: its tables
(headers, row counts, a figure the test computes itself from the CSV files it loaded) and its
charts (an SVG each, one bar per row, labels). CSV goes one file per table; `report student`
prints without the catalogue.
"""

import base64
import csv
import json
import os
import random
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "OIDC"))
from oidc_support import CLI, IdentityServer, ServiceProcess, psql  # noqa: E402

ADMIN_PASSWORD = "Reports-admin-42"
CHROMIUM = os.environ.get("SMARTSCHOOL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SMARTSCHOOL_CHROMEDRIVER", "/usr/bin/chromedriver")
SESSION = "RPT-G7"
PAPERS = [("RPT-G7-MATH", "数学", [25, 25, 25, 25]), ("RPT-G7-CHN", "语文", [30, 30, 30, 30])]
WEEK = "2025-09-08"
# A school whose name is markup: the pages must show it as text.
HOSTILE_CODE = "SK341523X99"
HOSTILE_NAME = '<script>alert("x")</script> & <b>学校</b>'
DATABASE_URL = os.environ.get("SMARTSCHOOL_REPORTS_DATABASE_URL", "")


def rows_of(path):
    with open(path, encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


class County:
    """The running services, the CLI's environment and the codes of what was loaded."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.demo = self.folder / "demo"
        self.processes = []
        self.databases = getattr(self, "databases", [])
        self.identity = IdentityServer(self.folder / "identity", ADMIN_PASSWORD,
                                       *self.store("identity"))
        self.processes.append(self.identity)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTSCHOOL_")}
        self.env.update(SMARTSCHOOL_USERNAME="admin", SMARTSCHOOL_PASSWORD=ADMIN_PASSWORD,
                        SMARTSCHOOL_IDENTITY_ADDR=self.identity.address)
        # The org tree first, then a service account the other services follow identity with.
        self.cli("demo", "--small", "--no-load", "--quiet", "--out", str(self.demo))
        self.cli("import", "orgs", str(self.demo / "orgs.csv"))
        orgs = rows_of(self.demo / "orgs.csv")
        province = next(r["code"] for r in orgs if r["kind"] == "province")
        self.county = next(r["code"] for r in orgs if r["kind"] == "county")
        account = self.folder / "service-account.env"
        self.cli("service-account", "create", "--name", "report-services", "--org", province,
                 "--role", "data_exchange", "--out", str(account))
        values = dict(line.split("=", 1) for line in account.read_text().splitlines() if line)
        for name in ("catalogue", "assessment", "supervision"):
            service = ServiceProcess(
                name, self.folder / name, "--identity-addr", self.identity.address,
                "--client-id", values["CLIENT_ID"], "--client-secret", values["CLIENT_SECRET"],
                *self.store(name))
            self.processes.append(service)
            self.env["SMARTSCHOOL_%s_ADDR" % name.upper()] = service.address
        self.cli("demo", "--small", "--quiet", "--out", str(self.demo), timeout=900)
        self.term = rows_of(self.demo / "terms.csv")[0]["code"]
        self.exam = rows_of(self.demo / "exams.csv")[0]["code"]
        self.scores = [r for r in rows_of(self.demo / "scores.csv")
                       if r["exam_code"] == self.exam]
        self._joint_exam()
        # Reports run on one saved login: a login per command would meet identity's throttle.
        self.env["SMARTSCHOOL_SESSION"] = str(self.folder / "session.json")
        done = subprocess.run([str(CLI), "login", "--username", "admin", "--password-stdin"],
                              input=ADMIN_PASSWORD + "\n", capture_output=True, text=True,
                              env=self.env, timeout=60)
        assert done.returncode == 0, done.stderr
        del self.env["SMARTSCHOOL_USERNAME"], self.env["SMARTSCHOOL_PASSWORD"]
        hostile = self.folder / "hostile-orgs.csv"
        with open(hostile, "w", encoding="utf-8", newline="") as f:
            f.write("code,name,kind,school_kind,parent_code,managing_school_code,grade,"
                    "school_year\n")
            csv.writer(f, lineterminator="\n").writerow(
                [HOSTILE_CODE, HOSTILE_NAME, "school", "urban", self.county, "", "", ""])
        self.cli("import", "orgs", str(hostile))
        # Assessment and supervision learn it from identity's change feed within seconds: wait,
        # so that a page and the JSON after it see the same orgs.
        for words in (["exam", "--exam", self.exam],
                      ["compliance", "--org", self.county, "--term", self.term]):
            deadline = time.monotonic() + 30
            while HOSTILE_CODE not in [c.get("orgCode") for c in json.loads(self.cli(
                    "report", *words, "--format", "json").stdout).get("children", [])]:
                assert time.monotonic() < deadline, "%s never listed %s" % (words, HOSTILE_CODE)
                time.sleep(1)

    def store(self, name):
        """`--database-url` of a fresh PostgreSQL database for `name`, or nothing (SQLite)."""
        if not DATABASE_URL:
            return []
        database = "reports_%s_%d" % (name, os.getpid())
        psql(DATABASE_URL, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        psql(DATABASE_URL, 'CREATE DATABASE "%s"' % database)
        self.databases.append(database)
        url = urllib.parse.urlsplit(DATABASE_URL)
        return ["--database-url", urllib.parse.urlunsplit(url._replace(path="/" + database))]

    def _joint_exam(self):
        """Two papers of one session for the demo's grade-7 students, scores drawn here."""
        students = {}
        for r in self.scores:
            students[r["student_external_id"]] = (r["class_code"], r["school_code"])
        draw = random.Random(2025)
        self.session_scores = {}
        exams, items, scores = [], [], []
        for code, subject, maxima in PAPERS:
            exams.append([code, "期末联考" + subject, "2025-2026", "1", subject, "初中", "7",
                          self.county, str(sum(maxima)), SESSION])
            items += [[code, str(n + 1), str(m), "subjective", ""]
                      for n, m in enumerate(maxima)]
            for student, (klass, school) in sorted(students.items()):
                for n, m in enumerate(maxima):
                    score = draw.randint(m // 4, m)
                    self.session_scores.setdefault(code, {}).setdefault(student, 0)
                    self.session_scores[code][student] += score
                    scores.append([code, student, klass, school, str(n + 1), str(score)])
        for name, header, rows in [
                ("exams", "code,name,school_year,term,subject,stage,grade,org_code,full_marks,"
                          "session_code", exams),
                ("items", "exam_code,item_no,max_score,kind,knowledge_points", items),
                ("scores", "exam_code,student_external_id,class_code,school_code,item_no,score",
                 scores)]:
            path = self.folder / ("session-%s.csv" % name)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(header + "\n")
                csv.writer(f, lineterminator="\n").writerows(rows)
            self.cli("import", name, str(path))

    def cli(self, *words, timeout=120, check=True, extra=()):
        done = subprocess.run([str(CLI), *words, *extra], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check:
            assert done.returncode == 0, "smartschool %s:\n%s\n%s" % (
                " ".join(words), done.stdout[-2000:], done.stderr[-2000:])
        return done

    def report(self, *words):
        """(path of the HTML page, the JSON answer) of one report."""
        name = "-".join(w.strip("-") for w in words)[:80] + ".html"
        page = self.folder / "html" / name
        page.parent.mkdir(exist_ok=True)
        self.cli("report", *words, "--format", "html", "--out", str(page))
        answer = json.loads(self.cli("report", *words, "--format", "json").stdout)
        return page, answer

    def stop(self):
        statuses = [p.stop() for p in reversed(self.processes)]
        for database in self.databases:
            psql(DATABASE_URL, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        return statuses


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    for exe in ("identity-service", "catalogue-service", "assessment-service",
                "supervision-service", "smartschool"):
        if not (CLI.parent / exe).exists():
            pytest.fail("%s is missing: run 'swift build'" % (CLI.parent / exe))
    folder = tmp_path_factory.mktemp("reports")
    made = County.__new__(County)
    made.processes = []
    made.databases = []
    try:
        made.__init__(folder)
    except BaseException:
        for p in made.processes:
            p.process.kill()
        for database in made.databases:
            psql(DATABASE_URL, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
        raise
    try:
        yield made
    finally:
        statuses = made.stop()
    assert all(s == 0 for s in statuses), statuses


@pytest.fixture(scope="module")
def browser():
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("%s and %s are needed (bash Tests/OIDC/run.sh --setup-only installs them)"
                    % (CHROMIUM, CHROMEDRIVER))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--disable-extensions", "--lang=zh-CN"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """A report page as the browser laid it out."""

    def __init__(self, browser, path):
        self.browser = browser
        browser.get(path.resolve().as_uri())
        assert browser.execute_script("return document.characterSet") == "UTF-8"
        assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
        # Self-contained: the page fetched nothing and runs no script.
        assert browser.execute_script(
            "return performance.getEntriesByType('resource').length") == 0
        assert browser.find_elements(By.TAG_NAME, "script") == []
        self.tables = browser.find_elements(By.CSS_SELECTOR, "section.table table")
        self.charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")

    def headers(self, table):
        return [th.text.replace("\n", " ") for th in self.tables[table].find_elements(
            By.CSS_SELECTOR, "thead th")]

    def rows(self, table):
        return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in self.tables[table].find_elements(By.CSS_SELECTOR, "tbody tr")
                if "empty" not in (tr.get_attribute("class") or "")]

    def caption(self, chart):
        return self.charts[chart].find_element(By.TAG_NAME, "figcaption").text

    def bars(self, chart):
        """(label, series, value, marked) of each bar of a chart, in order; every bar drawn."""
        svg = self.charts[chart].find_element(By.TAG_NAME, "svg")
        assert svg.size["width"] > 0 and svg.size["height"] > 0
        out = []
        for rect in svg.find_elements(By.CSS_SELECTOR, "rect.bar"):
            assert rect.size["width"] > 0
            out.append((rect.get_attribute("data-label"), rect.get_attribute("data-series"),
                        float(rect.get_attribute("data-value")),
                        "below" in rect.get_attribute("class")))
        return out

    def labels(self, chart):
        return [t.text for t in self.charts[chart].find_elements(By.CSS_SELECTOR, "text.label")]


def close(a, b, places=2):
    return abs(float(a) - float(b)) <= 0.5 * 10 ** -places + 1e-9


def test_exam_report_tables_and_score_distribution(county, browser):
    page_path, answer = county.report("exam", "--exam", county.exam)
    page = Page(browser, page_path)
    assert browser.title.startswith("考试统计 Exam statistics — " + county.exam)
    assert len(page.tables) == 2
    assert page.headers(0)[:4] == ["代码 Code", "名称 Name", "人数 Count", "平均分 Mean"]
    children = answer.get("children", [])
    assert len(page.rows(1)) == len(children) > 0

    # The figures, computed here from the scores CSV the CLI loaded.
    totals = {}
    for r in county.scores:
        totals[r["student_external_id"]] = totals.get(r["student_external_id"], 0.0) + float(
            r["score"])
    mean = sum(totals.values()) / len(totals)
    scope_row = page.rows(0)[0]
    assert scope_row[2] == str(len(totals))
    assert close(scope_row[3], mean), (scope_row, mean)
    assert scope_row[3] == "%.2f" % answer["scope"]["mean"]

    assert page.caption(0) == "分数分布 Score distribution"
    bars = page.bars(0)
    bins = answer["scope"]["bins"]
    assert len(bars) == len(bins)
    for (label, _, value, _), b in zip(bars, bins):
        lower, upper = b.get("lower", 0), b["upper"]
        last = b is bins[-1]
        count = sum(1 for t in totals.values() if lower <= t and (t < upper or last))
        assert value == count == int(b.get("count", 0)), (label, value, count)
    assert sum(v for _, _, v, _ in bars) == len(totals)
    # Child orgs' means: one bar per row of the second table, labelled with its name.
    means = page.bars(1)
    assert [b[0] for b in means] == [c.get("orgName", "") for c in children]
    assert [b[0] for b in means] == [row[1] for row in page.rows(1)]
    assert all(close(v, c.get("mean", 0)) for (_, _, v, _), c in zip(means, children))


def test_compliance_by_school_kind_and_weekly_trend(county, browser):
    page_path, answer = county.report("compliance", "--org", county.county, "--term", county.term)
    page = Page(browser, page_path)
    # Its name is text in the table and on its bar, never markup.
    assert [HOSTILE_CODE, HOSTILE_NAME] in [row[:2] for row in page.rows(1)]
    assert HOSTILE_NAME in [b[0] for b in page.bars(2)]
    assert browser.find_elements(By.CSS_SELECTOR, "section.table b, figure b") == []
    assert len(page.tables) == 4
    assert len(page.rows(1)) == len(answer.get("children", []))
    weeks = answer["byWeek"]
    assert len(page.rows(3)) == len(weeks) > 3
    assert page.headers(3)[0] == "周 Week"
    # By school kind: three bars (subject rate, lesson rate, compliant share) per kind.
    assert page.caption(0) == "按学校类别 By school kind"
    kinds = answer["bySchoolKind"]
    bars = page.bars(0)
    assert len(bars) == 3 * len(kinds) == 9
    lesson = [b for b in bars if b[1] == "课时达标率 Lesson rate"]
    assert [b[0] for b in lesson] == [k["orgName"] for k in kinds]
    assert all(close(b[2], k.get("lessonRatePercent", 0)) for b, k in zip(lesson, kinds))
    # The weekly trend: a line per rate, a point per teaching week.
    assert page.caption(1) == "逐周趋势 Weekly trend"
    svg = page.charts[1]
    assert len(svg.find_elements(By.CSS_SELECTOR, "polyline.series")) == 3
    points = svg.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == 3 * len(weeks)
    assert [p.get_attribute("data-label") for p in points[:len(weeks)]] == [
        w["week"] for w in weeks]
    assert page.labels(1)[0] == weeks[0]["week"]
    # Prints: Chromium lays the page out on A4 as a PDF.
    pdf = browser.execute_cdp_cmd("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69})
    assert base64.b64decode(pdf["data"])[:5] == b"%PDF-"


def test_weekly_notice_ranking_bars_mark_schools_below_standard(county, browser):
    page_path, answer = county.report("notice", "--org", county.county, "--week", WEEK)
    page = Page(browser, page_path)
    schools = answer["schools"]
    rows = page.rows(0)
    assert len(rows) == len(schools) + 1 and rows[-1][1] == "合计"
    bars = page.bars(0)
    assert [b[0] for b in bars] == [s["schoolName"] for s in schools]
    assert [b[3] for b in bars] == [bool(s.get("belowStandard")) for s in schools]
    below_rows = page.tables[0].find_elements(By.CSS_SELECTOR, "tbody tr.below")
    assert len(below_rows) == sum(1 for s in schools if s.get("belowStandard")) > 0
    marked = [label for label in page.labels(0) if label.startswith("▼ ")]
    assert len(marked) == len(below_rows)
    # The term's weeks up to this one, the last point this week's lesson rate.
    assert page.caption(2) == "逐周趋势 Weekly trend"
    points = page.charts[2].find_elements(By.CSS_SELECTOR, "circle.point")
    lesson = [p for p in points if "课时达标率" in p.find_element(By.TAG_NAME, "title")
              .get_attribute("textContent")]
    assert lesson[-1].get_attribute("data-label") == answer["week"] == WEEK
    assert close(lesson[-1].get_attribute("data-value"),
                 answer["thisWeek"].get("lessonRatePercent", 0))


def test_yearly_ranking_bars(county, browser):
    page_path, answer = county.report("ranking", "--org", county.county, "--period", "year",
                                      "--date", WEEK)
    page = Page(browser, page_path)
    schools = answer["schools"]
    assert len(page.rows(0)) == len(schools) + 1
    bars = page.bars(0)
    assert page.caption(0) == "课时达标率排名 Lesson rate, ranked"
    assert [b[0] for b in bars] == [s["schoolName"] for s in schools]
    assert all(close(b[2], s["figures"].get("lessonRatePercent", 0))
               for b, s in zip(bars, schools))


def test_joint_exam_subject_comparison_and_progress(county, browser):
    page_path, answer = county.report("session", "--exam-session", SESSION, "--org",
                                      county.county)
    page = Page(browser, page_path)
    totals = {}
    for code, _, _ in PAPERS:
        for student, score in county.session_scores[code].items():
            totals[student] = totals.get(student, 0) + score
    mean = sum(totals.values()) / len(totals)
    scope = page.rows(0)[0]
    assert scope[2] == str(len(totals)) and close(scope[4], mean), (scope, mean)
    assert len(page.rows(1)) == len(answer.get("children", [])) > 0

    assert page.caption(0) == "总分分布 Distribution of totals"
    assert sum(b[2] for b in page.bars(0)) == len(totals)
    assert page.caption(1) == "学科对比 Subject comparison"
    comparison = page.bars(1)
    assert len(comparison) == 3 * len(PAPERS)
    share = [b for b in comparison if b[1] == "得分率 Mean ÷ full marks"]
    # Papers in the session's order: by subject (语文 before 数学), then code.
    assert [b[0] for b in share] == ["语文 chinese", "数学 mathematics"]
    for b, (code, _, maxima) in zip(share, reversed(PAPERS)):
        scores = county.session_scores[code].values()
        assert close(b[2], 100 * sum(scores) / len(scores) / sum(maxima)), (b, code)

    page_path, answer = county.report("progress", "--earlier", county.exam, "--later",
                                      PAPERS[0][0], "--org", county.county)
    page = Page(browser, page_path)
    children = answer.get("children", [])
    assert len(page.rows(0)) == len(children) + 1 and children
    bars = page.bars(0)
    assert page.caption(0) == "标准分均值变化 Change in mean standardised score"
    assert len(bars) == len(children)
    assert [b[3] for b in bars] == [c.get("zChange", 0) < 0 for c in children]
    assert all(close(b[2], c.get("zChange", 0)) for b, c in zip(bars, children))


def test_csv_is_one_file_per_table(county, tmp_path):
    words = ["report", "inspections", "--org", county.county, "--year", "2025"]
    refused = county.cli(*words, "--format", "csv", check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "CSV is one table per file" in refused.stderr and "--out DIR" in refused.stderr
    county.cli(*words, "--format", "csv", "--out", str(tmp_path / "inspections"))
    files = sorted(p.name for p in (tmp_path / "inspections").iterdir())
    assert files == ["1-inspections.csv", "2-ratings.csv", "3-by-school-kind.csv",
                     "4-follow-up.csv"]
    answer = json.loads(county.cli(*words, "--format", "json").stdout)
    schools = rows_of(tmp_path / "inspections" / "1-inspections.csv")
    assert len(schools) == len(answer.get("inspected", [])) + len(answer.get("notInspected", []))
    assert list(schools[0]) == ["Code", "School", "Kind", "Inspections", "Last",
                                "Research visits", "Open", "Missing"]
    # One table still goes to stdout.
    one = county.cli("report", "items", "--exam", county.exam, "--format", "csv").stdout
    assert one.startswith("Item,Max,Mean,") and len(one.splitlines()) == 21


def test_student_report_prints_without_the_catalogue(county):
    totals = {}
    for r in county.scores:
        totals[r["student_external_id"]] = totals.get(r["student_external_id"], 0.0) + float(
            r["score"])
    weakest = min(totals, key=lambda s: (totals[s], s))
    words = ["report", "student", "--exam", county.exam, "--student", weakest]
    reached = county.cli(*words).stdout
    assert "推荐资源 Recommended resources" in reached
    started = time.monotonic()
    down = county.cli(*words, extra=["--catalogue-addr", "127.0.0.1:1"], timeout=60)
    # At once, not at the recommendation call's 30 s deadline.
    assert time.monotonic() - started < 10
    assert "学情报告 Student report — " + weakest in down.stdout
    assert "%.2f" % totals[weakest] in down.stdout
    assert "推荐资源 Recommended resources" not in down.stdout
    assert "Catalogue unreachable: recommendations omitted" in down.stdout
    as_json = county.cli(*words, "--format", "json", extra=["--catalogue-addr", "127.0.0.1:1"],
                         timeout=60)
    assert json.loads(as_json.stdout)["recommendations"] is None
    assert "note: " in as_json.stderr and "recommendations omitted" in as_json.stderr
