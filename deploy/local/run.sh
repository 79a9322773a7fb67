#!/usr/bin/env bash
# Command 1 of the README: build the suite and run it locally on SQLite under ./data.
#
#   bash deploy/local/run.sh [--postgres]
#
# Builds every executable, starts each service as its own process (identity first, since the
# others verify its tokens and follow its org tree with a service account), waits until each
# reports grpc.health.v1 SERVING, loads the demo county (smartschool demo: 62 schools, 13,047
# students, a term of lessons, a county maths exam, resources) through the CLI, prints the
# county's reports and how to call the services, and keeps running until Ctrl-C, which stops
# every service cleanly (SIGTERM, drain). A second run reuses ./data: nothing is created twice.
#
# --postgres: the same demo with every service on PostgreSQL. Starts a throwaway PostgreSQL 15
# cluster (Tests/postgres-cluster.sh, in a temporary folder; installs Debian's postgresql-15 if
# missing), creates one database and one least-privilege role per service as deploy/README.md's
# runbook does, and runs each on its own (--database-url, --database-password-file). Everything
# is new each run: the cluster is stopped and removed at exit, and what stays on disk (the
# catalogue's content files, logs) lives in ./data/postgres-demo, emptied at start.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
POSTGRES=0
case "${1:-}" in
  "") ;;
  --postgres) POSTGRES=1 ;;
  *) echo "usage: bash deploy/local/run.sh [--postgres]" >&2; exit 2 ;;
esac
DATA="$ROOT/data"
BIN="$ROOT/.build/debug"
mkdir -p "$DATA" && chmod 700 "$DATA"
if ((POSTGRES)); then
  DATA="$ROOT/data/postgres-demo"
  rm -rf "$DATA"
  mkdir -p "$DATA" && chmod 700 "$DATA"
fi

if ! dpkg -s libsqlite3-dev >/dev/null 2>&1; then
  echo "installing libsqlite3-dev"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libsqlite3-dev >/dev/null
fi

echo "building (the first build takes several minutes)…"
swift build

# The bootstrap admin's password: yours, or one generated once and kept in ./data.
if [[ -z "${SMARTSCHOOL_ADMIN_PASSWORD:-}" ]]; then
  if [[ ! -f "$DATA/admin-password" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' | cut -c1-20 | sed 's/$/-9a/' >"$DATA/admin-password")
  fi
  SMARTSCHOOL_ADMIN_PASSWORD="$(cat "$DATA/admin-password")"
fi
export SMARTSCHOOL_ADMIN_PASSWORD
# The CLI logs in with these (no session file needed).
export SMARTSCHOOL_USERNAME=admin SMARTSCHOOL_PASSWORD="$SMARTSCHOOL_ADMIN_PASSWORD"
CLI="$BIN/smartschool"

# name  gRPC port  metrics port
SERVICES=(
  "identity 50051 9401"
  "catalogue 50052 9402"
  "assessment 50053 9403"
  "supervision 50054 9404"
)

PIDS=()
PGDIR=""
stop() {
  echo
  echo "stopping…"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $PGDIR ]]; then
    bash "$ROOT/Tests/postgres-cluster.sh" stop "$PGDIR" || true
    echo "PostgreSQL stopped and its folder removed."
  fi
  echo "stopped."
}
trap stop EXIT
trap 'exit 130' INT TERM

# grpc.health.v1.Health/Check over HTTP/2 with curl: the answer 08 01 is SERVING.
healthy() {
  printf '\x00\x00\x00\x00\x00' |
    curl -s --max-time 2 --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
      -H 'te: trailers' --data-binary @- "http://127.0.0.1:$1/grpc.health.v1.Health/Check" |
    od -An -tx1 | tr -d ' \n' | grep -q '0801$'
}

# The services on PostgreSQL with --postgres, and each one's store flags: none (SQLite under
# --data-dir), or its own database.
PG_SERVICES=(identity catalogue assessment supervision)
declare -A STORE_FLAGS=()
if ((POSTGRES)); then
  PGDIR="$(mktemp -d -t smartschool-local-pg.XXXXXX)"
  SERVER_URL="$(bash Tests/postgres-cluster.sh start "$PGDIR")"
  PGPORT="$(cat "$PGDIR/port")"
  echo "✔ PostgreSQL 15 on 127.0.0.1:$PGPORT (throwaway, removed at exit)"
  for name in "${PG_SERVICES[@]}"; do
    # One database and one least-privilege role per service, as deploy/README.md's runbook makes
    # them (this throwaway server trusts local connections, so the password is not checked here).
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DATA/$name-database-password")
    /usr/lib/postgresql/15/bin/psql -qX -v ON_ERROR_STOP=1 "$SERVER_URL" <<SQL
\\set pw \`cat $DATA/$name-database-password\`
CREATE ROLE $name LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  CONNECTION LIMIT 50 PASSWORD :'pw';
CREATE DATABASE $name OWNER $name ENCODING 'UTF8'
  LC_COLLATE 'C' LC_CTYPE 'C.UTF-8' TEMPLATE template0;
REVOKE ALL ON DATABASE $name FROM PUBLIC;
SQL
    STORE_FLAGS[$name]="--database-url postgres://$name@127.0.0.1:$PGPORT/$name?sslmode=disable"
    STORE_FLAGS[$name]+=" --database-password-file $DATA/$name-database-password"
    echo "  $name runs on PostgreSQL: database $name, role $name"
  done
fi

start() {
  local name=$1 port=$2 metrics=$3
  local exe="$BIN/$name-service"
  local args=(--host 127.0.0.1 --port "$port" --metrics-port "$metrics" --data-dir "$DATA/$name")
  # Word splitting is meant: the flags hold no spaces (generated names and a fixed path).
  # shellcheck disable=SC2206
  [[ -z "${STORE_FLAGS[$name]:-}" ]] || args+=(${STORE_FLAGS[$name]})
  if [[ "$name" != identity ]]; then
    args+=(--identity-addr 127.0.0.1:50051 --client-id "$CLIENT_ID" "--client-secret=$CLIENT_SECRET")
  fi
  "$exe" "${args[@]}" 2>>"$DATA/$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    healthy "$port" && break
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
      echo "$name-service exited; see $DATA/$name.log" >&2
      tail -5 "$DATA/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  healthy "$port" || { echo "$name-service did not become healthy; see $DATA/$name.log" >&2; exit 1; }
  echo "✔ $name-service serving on 127.0.0.1:$port (metrics http://127.0.0.1:$metrics/metrics, log $DATA/$name.log)"
  if [[ -n "${STORE_FLAGS[$name]:-}" ]]; then
    echo "  store: PostgreSQL, database $name on 127.0.0.1:$PGPORT"
  fi
}

start identity 50051 9401

# The demo county as CSV files (deterministic), its org tree first: the other services follow
# the tree with a service account holding data_exchange at the province, created once and
# kept in ./data (mode 0600).
"$CLI" demo --out "$DATA/demo" --no-load --quiet
"$CLI" import orgs "$DATA/demo/orgs.csv" >/dev/null
if [[ ! -f "$DATA/service-account.env" ]]; then
  PROVINCE="$(awk -F, 'NR > 1 && $3 == "province" { print $1; exit }' "$DATA/demo/orgs.csv")"
  "$CLI" service-account create --name smartschool-services --org "$PROVINCE" \
    --role data_exchange --out "$DATA/service-account.env"
fi
CLIENT_ID="$(sed -n 's/^CLIENT_ID=//p' "$DATA/service-account.env")"
CLIENT_SECRET="$(sed -n 's/^CLIENT_SECRET=//p' "$DATA/service-account.env")"

for entry in "${SERVICES[@]:1}"; do
  read -r name port metrics <<<"$entry"
  start "$name" "$port" "$metrics"
done

echo
echo "loading the demo county through the CLI (idempotent; the first load takes a few minutes)…"
"$CLI" demo --out "$DATA/demo" || echo "(some demo rows were rejected; see above)" >&2

# The demo county's codes, for the examples below (the demo printed more of them).
COUNTY="$(awk -F, 'NR > 1 && $3 == "county" { print $1; exit }' "$DATA/demo/orgs.csv")"
TERM="$(awk -F, 'NR == 2 { print $1 }' "$DATA/demo/terms.csv")"
EXAM="$(awk -F, 'NR == 2 { print $1 }' "$DATA/demo/exams.csv")"
STORES="on SQLite"
if ((POSTGRES)); then
  STORES="with every service on PostgreSQL
(e.g. psql -h 127.0.0.1 -p $PGPORT -U assessment assessment)"
fi
cat <<MSG

The suite is running $STORES, with the demo county loaded. Log in as 'admin'
(password: \$SMARTSCHOOL_ADMIN_PASSWORD, or ${DATA#"$ROOT"/}/admin-password). With the CLI:
  export SMARTSCHOOL_USERNAME=admin SMARTSCHOOL_PASSWORD="\$(cat ${DATA#"$ROOT"/}/admin-password)"
  $CLI report exam --exam $EXAM --org $COUNTY
  $CLI report compliance --org $COUNTY --term $TERM
  $CLI report trends --org $COUNTY --from-term $TERM --to-term $TERM
  $CLI report warnings --org $COUNTY --term $TERM
Call it with any gRPC client; reflection is on, e.g. with grpcurl:
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -d '{"username":"admin","password":"…"}' 127.0.0.1:50051 smartschool.identity.v1.IdentityService/Login
  grpcurl -plaintext -H 'authorization: Bearer <access_token>' 127.0.0.1:50051 smartschool.identity.v1.IdentityService/WhoAmI
Press Ctrl-C to stop every service cleanly.
MSG
wait -n "${PIDS[@]}" || true
echo "a service exited; see the logs in $DATA" >&2
