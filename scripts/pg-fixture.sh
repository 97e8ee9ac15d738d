#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the server-postgres upstream tests.
#
#   scripts/pg-fixture.sh start DIR PORT   initdb DIR, start on 127.0.0.1:PORT (trust auth, user postgres,
#                                          no unix socket), create public.items with 3 rows; returns
#                                          once the server accepts connections. Exit 0 = ready.
#   scripts/pg-fixture.sh stop DIR         immediate stop, then remove DIR. Exit 0 if DIR is already gone.
#
# Connection URL once started: postgresql://postgres@127.0.0.1:PORT/postgres
# Runs the server as the `postgres` user (root cannot run postgres), so DIR's parent directories must
# be traversable by that user (anything under /tmp or target/ is).
# The server stops by itself after PG_FIXTURE_MAX_LIFETIME_S seconds (default 900) if nobody stops it.
# PG_BIN_DIR=<dir> overrides where the binaries are looked for.
# Exit codes: 0 ok, 1 failure (the server log is printed), 2 PostgreSQL binaries or user missing, 64 usage.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 64; }

# PG_BIN_DIR, if set, is the only place looked in; else /usr/lib/postgresql/15/bin, then PATH.
find_bin() {
  local name=$1
  if [[ -n "${PG_BIN_DIR:-}" ]]; then
    [[ -x "$PG_BIN_DIR/$name" ]] && echo "$PG_BIN_DIR/$name"
    return
  fi
  [[ -x "/usr/lib/postgresql/15/bin/$name" ]] && { echo "/usr/lib/postgresql/15/bin/$name"; return 0; }
  command -v "$name" 2>/dev/null
}

need_pg() {
  PG_CTL=$(find_bin pg_ctl) && INITDB=$(find_bin initdb) && PSQL=$(find_bin psql) || {
    echo "pg-fixture: PostgreSQL 15 binaries (initdb, pg_ctl, psql) not found on PATH or in" \
         "/usr/lib/postgresql/15/bin (or \$PG_BIN_DIR); install them with: apt-get install postgresql-15" >&2
    exit 2
  }
  id postgres >/dev/null 2>&1 || {
    echo "pg-fixture: no 'postgres' user to run the server as (apt-get install postgresql-15 creates it)" >&2
    exit 2
  }
}

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:-}
case "$cmd" in
  start)
    [[ $# -eq 3 ]] || usage
    DIR=$2 PORT=$3
    need_pg
    [[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
    if [[ -e "$DIR" && -n "$(ls -A "$DIR" 2>/dev/null)" ]]; then
      echo "pg-fixture: $DIR exists and is not empty; stop it first or pick another DIR" >&2
      exit 1
    fi
    mkdir -p "$DIR"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
    chmod 700 "$DIR"
    as_pg test -w "$DIR" || {
      echo "pg-fixture: user postgres cannot write $DIR (a parent directory is not traversable?)" >&2
      exit 1
    }
    as_pg "$INITDB" -D "$DIR" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$DIR.initdb.log" 2>&1 || {
      cat "$DIR.initdb.log" >&2; rm -f "$DIR.initdb.log"; exit 1
    }
    rm -f "$DIR.initdb.log"
    # No unix socket: DIR may be longer than a socket path may be, and TCP is all the tests use.
    if ! as_pg "$PG_CTL" -D "$DIR" -l "$DIR/server.log" -w -t 60 \
        -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off" \
        start >/dev/null; then
      echo "pg-fixture: server did not start; its log:" >&2
      cat "$DIR/server.log" >&2 || true
      as_pg "$PG_CTL" -D "$DIR" -m immediate stop >/dev/null 2>&1 || true
      rm -rf "$DIR"
      exit 1
    fi
    "$PSQL" "postgresql://postgres@127.0.0.1:$PORT/postgres" -q -v ON_ERROR_STOP=1 -c "
      CREATE TABLE public.items(id int PRIMARY KEY, name text);
      INSERT INTO public.items VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma');" >/dev/null
    # Watchdog: stop the server if nobody does. It ends by itself as soon as DIR goes or changes.
    token="$$-$RANDOM-$(date +%s%N)"
    echo "$token" >"$DIR/.fixture-token"
    LIFETIME=${PG_FIXTURE_MAX_LIFETIME_S:-900}
    setsid bash -c '
      dir=$1 token=$2 lifetime=$3 pg_ctl=$4
      for ((i = 0; i < lifetime; i++)); do
        [[ "$(cat "$dir/.fixture-token" 2>/dev/null)" == "$token" ]] || exit 0
        sleep 1
      done
      runuser -u postgres -- "$pg_ctl" -D "$dir" -m immediate stop || "$pg_ctl" -D "$dir" -m immediate stop
      rm -rf "$dir"
    ' pg-fixture-watchdog "$DIR" "$token" "$LIFETIME" "$PG_CTL" </dev/null >/dev/null 2>&1 &
    echo "pg-fixture: ready on postgresql://postgres@127.0.0.1:$PORT/postgres (data in $DIR)"
    ;;
  stop)
    [[ $# -eq 2 ]] || usage
    DIR=$2
    [[ "$DIR" == /* ]] || DIR="$PWD/$DIR"
    [[ -d "$DIR" ]] || exit 0
    if [[ -f "$DIR/postmaster.pid" ]]; then
      need_pg
      as_pg "$PG_CTL" -D "$DIR" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    ;;
  *)
    usage
    ;;
esac
