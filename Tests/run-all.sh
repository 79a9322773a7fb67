#!/usr/bin/env bash
# THE test command (README, CI): installs what a fresh Debian machine lacks, builds, and runs
# every test — Swift unit, in-process server and end-to-end tests, then the Python grpcio
# interop test against the built executables.
#
#   bash Tests/run-all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need=()
for pkg in libsqlite3-dev python3-venv sqlite3 nghttp2-client; do
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
echo "run-all: swift test"
LOG="$(mktemp)"
set +e
swift test --skip-build >"$LOG" 2>&1
swift_status=$?
# Show results without the per-test "started" noise.
grep -vE '^◇ Test .* started\.$' "$LOG"
rm -f "$LOG"
echo "run-all: interop (Python grpcio)"
bash Tests/Interop/run.sh
interop_status=$?
set -e

if [[ $swift_status -ne 0 || $interop_status -ne 0 ]]; then
  echo "run-all: FAILED (swift test: $swift_status, interop: $interop_status)"
  exit 1
fi
bash Tests/Deploy/run.sh  # deploy/ checks; a failure stops run-all non-zero (set -e)
echo "run-all: all tests passed"
