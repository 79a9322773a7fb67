#!/usr/bin/env bash
# THE test command (README, CI): installs what a fresh Debian machine lacks, builds, and runs
# every test — Swift unit, in-process server and end-to-end tests on SQLite; then the suites
# ported to PostgreSQL again against a throwaway PostgreSQL 15 cluster (Tests/postgres-cluster.sh,
# SMARTSCHOOL_TEST_DATABASE_URL; a run that cannot start it fails); then, in two lanes at once,
# the Python grpcio interop tests against the built executables, on SQLite and again on that
# cluster (the demo county's reports compared between the two), beside identity's OpenID
# Connect keys checked with PyJWT and its sign-in driven through headless Chromium into authlib
# apps, the CLI's HTML reports in Chromium (each on SQLite, then on the cluster) and TOTP; then
# alone a database failover under an import (a primary and a synchronous standby behind
# HAProxy), three replicas of every service behind nginx killed and restarted under load, the
# CLI over three identity replicas; and the deploy/ checks.
#
#   bash Tests/run-all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need=()
for pkg in libsqlite3-dev python3-venv sqlite3 nghttp2-client haproxy nginx-light; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "run-all: installing ${need[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "run-all: swift build --build-tests"
swift build --build-tests
# The test runner itself (what `swift test --skip-build` runs), so that at most
# SMARTSCHOOL_TEST_WIDTH tests (default 8) run at once: unbounded, every test of the suite starts
# at the same moment, and on a loaded 2-core machine calls with honest deadlines (a TLS
# handshake, a token exchange, a challenge's lifetime) time out. The SQLite pass takes no
# longer bounded (the two cores are busy either way).
TEST_BIN="$(swift build --show-bin-path)/SmartSchoolPackageTests.xctest"
run_tests() {
  "$TEST_BIN" --testing-library swift-testing \
    --experimental-maximum-parallelization-width "${SMARTSCHOOL_TEST_WIDTH:-8}" "$@"
}
echo "run-all: swift test (at most ${SMARTSCHOOL_TEST_WIDTH:-8} tests at once)"
LOG="$(mktemp)"
set +e
run_tests >"$LOG" 2>&1
swift_status=$?
# Show results without the per-test "started" noise.
grep -vE '^◇ Test .* started\.$' "$LOG"

# The same tests of every suite that touches a store, on a throwaway cluster (each test makes its
# own database in it), reusing the build. No PostgreSQL, or a group that runs no test, is a
# failure. Groups one after the other: all five at once open over a thousand connections and
# load a 2-core machine past what the tests' timing allows (session lifetimes, rate windows);
# the client-balancing tests (replicas stopped under a timed load) run on their own.
PG_GROUPS=('RuntimeTests|IdentityServiceTests'
  'CatalogueServiceTests|AssessmentServiceTests|SupervisionServiceTests'
  'BalancingTests')
# Suites of those modules that touch no store (log formatting, size guards) run once, above:
# a second run on a machine busy with hundreds of database connections proves nothing more.
PG_SKIP='LoggingTests'
# A hung test must fail this run, not eat CI's time: past the limit a group is stopped. The test
# runner (xctest) is in a process group of its own, so its whole tree is stopped, by process id.
PG_PASS_LIMIT="${SMARTSCHOOL_PG_PASS_SECONDS:-600}"
kill_tree() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null
}
PGDIR="$(mktemp -d -t smartschool-pg.XXXXXX)"
trap 'bash "$ROOT/Tests/postgres-cluster.sh" stop "$PGDIR"' EXIT
echo "run-all: PostgreSQL 15 cluster (Tests/postgres-cluster.sh)"
pg_status=1
PG_URL=""
if SMARTSCHOOL_TEST_DATABASE_URL="$(bash Tests/postgres-cluster.sh start "$PGDIR")"; then
  export SMARTSCHOOL_TEST_DATABASE_URL
  PG_URL="$SMARTSCHOOL_TEST_DATABASE_URL"
  pg_status=0
  for PG_SUITES in "${PG_GROUPS[@]}"; do
    echo "run-all: swift test --filter '$PG_SUITES' on PostgreSQL ($PG_URL)"
    pg_started=$SECONDS
    run_tests --filter "$PG_SUITES" --skip "$PG_SKIP" >"$LOG" 2>&1 &
    pg_pid=$!
    (sleep "$PG_PASS_LIMIT" && echo "run-all: the PostgreSQL pass ran past $PG_PASS_LIMIT s;" \
      "stopping it" && kill_tree "$pg_pid") &
    watchdog=$!
    wait "$pg_pid"
    group_status=$?
    kill_tree "$watchdog"
    grep -vE '^◇ Test .* started\.$' "$LOG"
    pg_tests="$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} .*/\1/p' "$LOG" | tail -1)"
    echo "run-all: PostgreSQL pass ($PG_SUITES): ${pg_tests:-no} tests in" \
      "$((SECONDS - pg_started)) s, exit status $group_status"
    if [[ ${pg_tests:-0} -eq 0 ]]; then
      echo "run-all: the PostgreSQL pass ran no test (filter '$PG_SUITES')"
      group_status=1
    fi
    [[ $group_status -eq 0 ]] || pg_status=1
  done
  unset SMARTSCHOOL_TEST_DATABASE_URL
else
  echo "run-all: PostgreSQL did not start; the PostgreSQL pass cannot run"
fi
rm -f "$LOG"
# The Python suites in two lanes at once (each a few minutes of waiting on executables and a
# browser, a third of the machine idle when run alone), each lane's output shown when both are
# done; the fault and replica tests, whose load and timing are their point, run alone after.
# Lane one: the four executables through a stock grpcio client, on SQLite, then again with
# every service on the cluster above; the demo county's reports (exam, compliance, teachers)
# must come out the same, figure for figure, on both.
interop_lane() {
  local figures status
  figures="$(mktemp -d -t smartschool-figures.XXXXXX)"
  echo "run-all: interop (Python grpcio)"
  SMARTSCHOOL_INTEROP_FIGURES="$figures" bash Tests/Interop/run.sh
  status=$?
  if [[ $status -eq 0 && $pg_status -eq 0 ]]; then
    echo "run-all: interop on PostgreSQL"
    SMARTSCHOOL_INTEROP_FIGURES="$figures" SMARTSCHOOL_INTEROP_DATABASE_URL="$PG_URL" \
      bash Tests/Interop/run.sh
    status=$?
    if [[ $status -eq 0 ]] &&
      ! cmp -s "$figures/figures-sqlite.json" "$figures/figures-postgres.json"; then
      echo "run-all: the demo county's reports differ between SQLite and PostgreSQL:"
      diff "$figures/figures-sqlite.json" "$figures/figures-postgres.json" | head -40
      status=1
    elif [[ $status -eq 0 ]]; then
      echo "run-all: the demo county's reports are the same on SQLite and PostgreSQL" \
        "($(wc -c <"$figures/figures-sqlite.json") bytes of JSON)"
    fi
  fi
  rm -rf "$figures"
  return "$status"
}
# Lane two: identity's OpenID Connect provider through maintained libraries (its JWKS through
# PyJWT, sign-ins in headless Chromium through Selenium to two relying-party apps built on
# authlib), the CLI's HTML reports opened in Chromium (their tables and charts), each with
# the services on SQLite and then on the cluster; and two-factor login, where pyotp reads
# identity's otpauth URI and computes every code the CLI sends.
browser_lane() {
  echo "run-all: OpenID Connect through PyJWT, authlib and Chromium (Tests/OIDC/run.sh)"
  bash Tests/OIDC/run.sh || return 1
  if [[ $pg_status -eq 0 ]]; then
    echo "run-all: OpenID Connect through PyJWT, authlib and Chromium, identity on PostgreSQL"
    SMARTSCHOOL_OIDC_DATABASE_URL="$PG_URL" bash Tests/OIDC/run.sh || return 1
  fi
  echo "run-all: HTML reports in Chromium (Tests/Reports/run.sh)"
  bash Tests/Reports/run.sh || return 1
  if [[ $pg_status -eq 0 ]]; then
    echo "run-all: HTML reports in Chromium, the services on PostgreSQL"
    SMARTSCHOOL_REPORTS_DATABASE_URL="$PG_URL" bash Tests/Reports/run.sh || return 1
  fi
  echo "run-all: two-factor login with pyotp (Tests/TOTP/run.sh)"
  bash Tests/TOTP/run.sh
}
LANES="$(mktemp -d -t smartschool-lanes.XXXXXX)"
lanes_started=$SECONDS
echo "run-all: two lanes at once: interop; OpenID Connect, HTML reports and TOTP"
interop_lane >"$LANES/interop.log" 2>&1 &
interop_pid=$!
browser_lane >"$LANES/browser.log" 2>&1 &
browser_pid=$!
wait "$interop_pid"
interop_status=$?
wait "$browser_pid"
browser_status=$?
for lane in interop browser; do
  echo "run-all: ---- lane $lane ----"
  cat "$LANES/$lane.log"
done
echo "run-all: lanes done in $((SECONDS - lanes_started)) s (interop: exit status" \
  "$interop_status, OpenID Connect, reports and TOTP: exit status $browser_status)"
rm -rf "$LANES"
[[ $browser_status -eq 0 ]] || interop_status=1
# A PostgreSQL primary killed during an import, its synchronous standby promoted behind
# HAProxy: the services ride through without a restart and lose no acknowledged row.
if [[ $interop_status -eq 0 && $pg_status -eq 0 ]]; then
  echo "run-all: database failover (primary, standby, HAProxy)"
  bash Tests/Interop/run.sh failover -s
  interop_status=$?
fi
# Three replicas of every service on the cluster behind nginx (grpc_pass), one of each killed
# and all restarted one by one under a mixed load.
if [[ $interop_status -eq 0 ]]; then
  echo "run-all: replicas behind nginx"
  SMARTSCHOOL_INTEROP_DATABASE_URL="$PG_URL" bash Tests/Interop/run.sh replicas -s
  interop_status=$?
fi
# The CLI's own balancing (several addresses, no balancer) and nginx, under the same faults.
if [[ $interop_status -eq 0 ]]; then
  echo "run-all: the CLI over three identity replicas (Tests/Replicas/run.sh)"
  bash Tests/Replicas/run.sh
  interop_status=$?
fi
set -e

if [[ $swift_status -ne 0 || $pg_status -ne 0 || $interop_status -ne 0 ]]; then
  echo "run-all: FAILED (swift test: $swift_status, on PostgreSQL: $pg_status," \
    "interop: $interop_status)"
  exit 1
fi
bash Tests/Deploy/run.sh  # deploy/ checks; a failure stops run-all non-zero (set -e)
echo "run-all: all tests passed"
