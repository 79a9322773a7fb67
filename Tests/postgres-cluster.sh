#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster in a folder of its own, for the tests (Tests/run-all.sh) and
# the local runner (deploy/local/run.sh --postgres). Never for production data: it trusts every
# local connection and runs without fsync.
#
#   DIR="$(mktemp -d)"
#   trap 'bash Tests/postgres-cluster.sh stop "$DIR"' EXIT
#   URL="$(bash Tests/postgres-cluster.sh start "$DIR")"
#   # $URL: postgres://postgres@127.0.0.1:PORT/postgres
#
# start DIR: installs Debian's postgresql-15 when /usr/lib/postgresql/15/bin/initdb is missing,
#   makes a cluster in DIR/data (initdb as the postgres user when run as root, since the server
#   refuses root; UTF8, C.UTF-8 with C collation so text sorts by bytes as in SQLite, trust
#   authentication, superuser postgres), starts it on 127.0.0.1 at a free port with its socket in
#   DIR, and prints its URL on stdout (everything else goes to stderr). Fails, with the server's
#   log, if the server does not answer.
# stop DIR: stops the server (fast shutdown: sessions are cut) and removes DIR. Safe to call more
#   than once, after a failed start, or on an empty DIR; refuses a DIR that start did not make.
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
MARK=.smartschool-postgres-cluster

say() { echo "postgres-cluster: $*" >&2; }

# Runs a PostgreSQL program as the cluster's owner: postgres when we are root, else ourselves.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd "$DIR" && "$(command -v runuser || echo /usr/sbin/runuser)" -u postgres -- "$@")
  else
    (cd "$DIR" && "$@")
  fi
}

install_postgres() {
  [[ -x $PGBIN/initdb ]] && return 0
  say "installing postgresql-15 (Debian)"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  # The package would otherwise make and start a 'main' cluster on port 5432 that nothing uses.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee \
    /etc/postgresql-common/createcluster.d/smartschool-no-main.conf >/dev/null
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 >/dev/null
  [[ -x $PGBIN/initdb ]] || {
    say "postgresql-15 installed, but $PGBIN/initdb is missing"
    return 1
  }
}

free_port() { # one the kernel hands out (python3), else a random one (start retries if taken)
  command -v python3 >/dev/null || { echo $((20000 + RANDOM % 40000)); return; }
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start() {
  [[ -d $DIR ]] || mkdir -p "$DIR"
  [[ -z "$(ls -A "$DIR")" ]] || { say "$DIR is not empty"; return 1; }
  touch "$DIR/$MARK"
  install_postgres
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$DIR"
    chmod 700 "$DIR"
  fi
  as_owner "$PGBIN/initdb" -D "$DIR/data" -E UTF8 --locale=C.UTF-8 --lc-collate=C -A trust \
    -U postgres >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    say "initdb failed"
    return 1
  }
  # A free port can be taken by someone else between the probe and the server's bind: retry.
  local port attempt
  for attempt in 1 2 3; do
    port="$(free_port)"
    # Throwaway settings: no fsync (a crash loses the cluster, which is thrown away anyway) and
    # room for many test pools at once.
    if as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c max_connections=1000 -c fsync=off \
       -c synchronous_commit=off -c full_page_writes=off" >/dev/null 2>&1; then
      break
    fi
    if ((attempt == 3)) || ! grep -q "could not bind" "$DIR/server.log" 2>/dev/null; then
      tail -20 "$DIR/server.log" >&2 2>/dev/null || true
      say "the server did not start"
      return 1
    fi
    say "port $port was taken; trying another"
  done
  echo "$port" >"$DIR/port"
  "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtqc 'SELECT 1' \
    >/dev/null || {
    tail -20 "$DIR/server.log" >&2
    say "the server started but does not answer on 127.0.0.1:$port"
    return 1
  }
  local version
  version="$("$PGBIN/postgres" --version | awk '{print $3}')"
  say "PostgreSQL $version on 127.0.0.1:$port (folder $DIR)"
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
  [[ -d $DIR ]] || return 0
  if [[ ! -e $DIR/$MARK ]]; then
    if [[ -z "$(ls -A "$DIR")" ]]; then rmdir "$DIR"; return 0; fi
    say "refusing to remove $DIR: no cluster of this script"
    return 1
  fi
  if [[ -f $DIR/data/postmaster.pid ]]; then
    as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      say "pg_ctl stop failed (the server may already be gone)"
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start | stop)
    [[ -n ${2:-} ]] || { say "usage: $0 start|stop DIR"; exit 2; }
    DIR="$(realpath -m "$2")"
    "$1"
    ;;
  *)
    say "usage: $0 start|stop DIR"
    exit 2
    ;;
esac
