#!/usr/bin/env bash
# Three identity replicas on one PostgreSQL, reached two ways while replicas fail:
#   nginx  - Debian's nginx in front (grpc_pass to an upstream of the three replicas), the
#            client given nginx's one address;
#   client - no balancer: the client given all three addresses (SMARTSCHOOL_IDENTITY_ADDR=
#            a,b,c), balancing itself (gRPC round robin, a failed replica skipped).
# For each way, a load of `smartschool` CLI runs (each logs in, then reads the org tree: a
# Login and a ListOrgs) runs while one replica is killed with SIGKILL, then (that one restarted)
# while another is stopped with SIGTERM, as a rolling upgrade does. It prints the calls made and
# failed in each window. Then a token issued through one replica is used through each of the
# three.
#
#   swift build && bash Tests/Replicas/run.sh     # the script: about 50 s on a built tree
#
# Exit status 1 when a SIGTERM window had a failed run or a replica refused another's token;
# runs failed in a SIGKILL window are printed, not failed on (a login in flight on the killed
# replica is lost, and a login is not repeated: it is not safe to repeat).
# Needs: the debug build of identity-service and smartschool (built here only if missing), Debian's
# postgresql-15 and nginx (installed with apt-get when missing). Everything it starts is
# stopped at exit; each CLI run is bounded by a 30 s timeout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.build/debug"
WINDOW=${REPLICAS_WINDOW_SECONDS:-4} # seconds of load before and after each fault
WORKERS=${REPLICAS_WORKERS:-2}

say() { echo "replicas: $*" >&2; }

for product in identity-service smartschool; do
  [[ -x $BIN/$product ]] || swift build --product "$product" >&2
done
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  say "installing nginx (Debian)"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

WORK="$(mktemp -d)"
PGDIR="$(mktemp -d)"
declare -A PID=()
NGINX_PID=""
cleanup() {
  set +e
  for name in "${!PID[@]}"; do
    kill -9 "${PID[$name]}" 2>/dev/null
  done
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null
  wait 2>/dev/null
  bash "$ROOT/Tests/postgres-cluster.sh" stop "$PGDIR"
  rm -rf "$WORK"
}
trap cleanup EXIT
chmod 755 "$WORK"

URL="$(bash Tests/postgres-cluster.sh start "$PGDIR")"

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts connections, for at most 60 s, while process $2 lives.
wait_port() {
  local i
  for ((i = 0; i < 600; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  say "nothing listens on 127.0.0.1:$1"
  return 1
}

export SMARTSCHOOL_ADMIN_PASSWORD="Replicas-admin-1"
declare -A PORT=()
for name in a b c; do PORT[$name]="$(free_port)"; done

# Starts replica $1 on its port (the same port again after a kill, as a restarted pod).
start_replica() {
  local name=$1
  "$BIN/identity-service" --host 127.0.0.1 --port "${PORT[$name]}" --metrics-port=-1 \
    --data-dir "$WORK/identity-$name" --database-url "$URL" --database-pool-size 4 \
    --scrypt-log-n 10 --login-attempts-per-account 0 --login-attempts-per-address 0 \
    --login-hashes-per-address 0 --log-level warning \
    >>"$WORK/identity-$name.log" 2>&1 &
  PID[$name]=$!
  wait_port "${PORT[$name]}" "${PID[$name]}" || {
    tail -20 "$WORK/identity-$name.log" >&2
    return 1
  }
}

start_replica a # first alone: it applies the migrations and makes the admin
start_replica b
start_replica c
say "identity replicas on ${PORT[a]}, ${PORT[b]}, ${PORT[c]} (one PostgreSQL: $URL)"

NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
chmod -R 777 "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log $WORK/nginx/logs/access.log;
  client_body_temp_path $WORK/nginx/tmp/body;
  proxy_temp_path $WORK/nginx/tmp/proxy;
  fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
  uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
  scgi_temp_path $WORK/nginx/tmp/scgi;
  upstream identity {
    server 127.0.0.1:${PORT[a]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${PORT[b]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${PORT[c]} max_fails=1 fail_timeout=5s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT http2;
    location / {
      grpc_pass grpc://identity;
      # A call goes to the next replica only when this one could not be reached or timed out
      # before a response: nginx never re-sends a request a replica may have received (every
      # gRPC call is a POST, which nginx will not repeat without non_idempotent). gRPC's
      # UNAVAILABLE is a trailer nginx does not read; the client repeats what is safe.
      grpc_next_upstream error timeout;
      grpc_next_upstream_tries 3;
      grpc_connect_timeout 1s;
      grpc_read_timeout 30s;
    }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;" \
  >>"$WORK/nginx/logs/stdout.log" 2>&1 &
NGINX_PID=$!
wait_port "$NGINX_PORT" "$NGINX_PID" || {
  cat "$WORK/nginx/logs/"*.log >&2
  exit 1
}
say "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT"

export HOME="$WORK" SMARTSCHOOL_SESSION="$WORK/session.json"

# One worker: CLI runs (login + ListOrgs) against $1 until $2 exists; counts into $3.
worker() {
  local addr=$1 stop=$2 out=$3 ok=0 failed=0
  while [[ ! -e $stop ]]; do
    if SMARTSCHOOL_IDENTITY_ADDR="$addr" SMARTSCHOOL_USERNAME=admin \
      SMARTSCHOOL_PASSWORD="$SMARTSCHOOL_ADMIN_PASSWORD" \
      timeout 30 "$BIN/smartschool" export orgs >/dev/null 2>>"$out.err"; then
      ok=$((ok + 1))
    else
      failed=$((failed + 1))
    fi
  done
  echo "$ok $failed" >"$out"
}

# Runs the load against $2 for WINDOW seconds, applies fault $3 to replica $4, runs WINDOW
# seconds more; prints the counts and leaves the failed-run count in FAILED.
FAILED=0
window() {
  local way=$1 addr=$2 fault=$3 victim=$4 tag="$1-$3" i ok=0 failed=0
  rm -f "$WORK/stop-$tag"
  local workers=()
  for ((i = 0; i < WORKERS; i++)); do
    worker "$addr" "$WORK/stop-$tag" "$WORK/count-$tag-$i" &
    workers+=($!)
  done
  sleep "$WINDOW"
  case $fault in
    SIGKILL) kill -9 "${PID[$victim]}" ;;
    SIGTERM) kill -TERM "${PID[$victim]}" ;;
  esac
  local started
  started=$(date +%s%3N)
  wait "${PID[$victim]}" 2>/dev/null || true
  unset "PID[$victim]"
  local gone=$(($(date +%s%3N) - started))
  sleep "$WINDOW"
  touch "$WORK/stop-$tag"
  wait "${workers[@]}"
  for ((i = 0; i < WORKERS; i++)); do
    read -r o f <"$WORK/count-$tag-$i"
    ok=$((ok + o))
    failed=$((failed + f))
  done
  FAILED=$failed
  printf '%-7s %-8s replica %s: %4d CLI runs (login + read), %3d failed (exited in %d ms)\n' \
    "$way" "$fault" "$victim" $((ok + failed)) "$failed" "$gone"
  if ((failed > 0)); then
    sort "$WORK"/count-"$tag"-*.err | uniq -c | sort -rn | head -3 | sed 's/^/          /'
  fi
  start_replica "$victim"
}

status=0
NGINX_ADDR="127.0.0.1:$NGINX_PORT"
CLIENT_ADDR="127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]},127.0.0.1:${PORT[c]}"
t0=$SECONDS
for way in nginx client; do
  addr=$NGINX_ADDR
  [[ $way == client ]] && addr=$CLIENT_ADDR
  window "$way" "$addr" SIGKILL b
  window "$way" "$addr" SIGTERM c
  if ((FAILED > 0)); then
    say "$way: a rolling stop (SIGTERM) failed $FAILED run(s)"
    status=1
  fi
done

# A token issued through replica a, used through each replica (the saved session, no login).
echo "$SMARTSCHOOL_ADMIN_PASSWORD" | SMARTSCHOOL_IDENTITY_ADDR="127.0.0.1:${PORT[a]}" \
  timeout 30 "$BIN/smartschool" login --username admin --password-stdin >/dev/null
for name in a b c; do
  if SMARTSCHOOL_IDENTITY_ADDR="127.0.0.1:${PORT[$name]}" \
    timeout 30 "$BIN/smartschool" export orgs >/dev/null 2>"$WORK/token-$name.err"; then
    echo "token issued by replica a: accepted by replica $name"
  else
    echo "token issued by replica a: REFUSED by replica $name: $(cat "$WORK/token-$name.err")"
    status=1
  fi
done
say "done in $((SECONDS - t0)) s of load and faults"
exit $status
