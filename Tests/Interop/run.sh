#!/usr/bin/env bash
# Interop tests: a stock Python grpcio client, with stubs generated from Shared/Protos,
# against the built executables — identity alone in depth, then all four services at once.
#
#   bash Tests/Interop/run.sh [pytest args…]
#   SMARTSCHOOL_INTEROP_DATABASE_URL=postgres://… bash Tests/Interop/run.sh   # on PostgreSQL
#   bash Tests/Interop/run.sh failover   # PostgreSQL failover under an import (needs haproxy)
#
# Creates Tests/Interop/.venv (pinned packages) and Tests/Interop/gen/ (generated stubs), both
# ignored by git. Needs the four .build/debug/*-service executables (`swift build`) and h2load.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
GEN="$HERE/gen"
PY="$VENV/bin/python"

PACKAGES=(
  grpcio==1.85.1
  grpcio-tools==1.85.1
  grpcio-health-checking==1.85.1
  grpcio-reflection==1.85.1
  grpcio-status==1.85.1
  pytest==9.2.0
)

for service in identity catalogue assessment supervision; do
  if [[ ! -x "$ROOT/.build/debug/$service-service" ]]; then
    echo "interop: $ROOT/.build/debug/$service-service is missing; run 'swift build' first" >&2
    exit 1
  fi
done

# The venv is reused while its package list is unchanged.
STAMP="$VENV/.smartschool-packages"
if [[ ! -x "$PY" || ! -f "$STAMP" || "$(cat "$STAMP")" != "${PACKAGES[*]}" ]]; then
  echo "interop: creating $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" >"$STAMP"
fi

# Only the smartschool protos: grpc.health and grpc.reflection come from the pip packages (a
# generated gen/grpc package would also shadow the grpc module itself).
rm -rf "$GEN"
mkdir -p "$GEN"
mapfile -t PROTOS < <(cd "$ROOT/Shared/Protos" && find smartschool -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I "$ROOT/Shared/Protos" \
  --python_out="$GEN" --grpc_python_out="$GEN" "${PROTOS[@]}"

# On PostgreSQL (SMARTSCHOOL_INTEROP_DATABASE_URL) the four-service test runs again; identity's
# own interop and fault tests need no second run (identity's store is tested on both in Swift).
TESTS=("$HERE/identity_interop_test.py" "$HERE/suite_interop_test.py" "$HERE/faults_test.py")
[[ -z "${SMARTSCHOOL_INTEROP_DATABASE_URL:-}" ]] || TESTS=("$HERE/suite_interop_test.py")
# `run.sh failover`: the database failover test alone (its own primary, standby and HAProxy).
# `run.sh replicas` (with SMARTSCHOOL_INTEROP_DATABASE_URL): three replicas of every service
# behind nginx, killed and restarted under load.
case "${1:-}" in
  failover) shift; TESTS=("$HERE/failover_test.py") ;;
  replicas) shift; TESTS=("$HERE/replicas_test.py") ;;
esac
cd "$ROOT"
SMARTSCHOOL_ROOT="$ROOT" PYTHONPATH="$GEN" PYTHONDONTWRITEBYTECODE=1 \
  "$PY" -m pytest -p no:cacheprovider -q --durations=5 "${TESTS[@]}" "$@"
