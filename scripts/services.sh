#!/usr/bin/env bash
# Local PostgreSQL 15 and ClickHouse for development and tests, without Docker.
#
# Usage: scripts/services.sh up|down|restart|status|env
#
#   up       install the Debian packages if missing (postgresql-15,
#            clickhouse-server, clickhouse-client), create the data folders,
#            start both servers on 127.0.0.1 and wait until they answer.
#            A no-op for servers that are already running.
#   down     stop the servers this script started (found by their pid files).
#   restart  down, then up.
#   status   say what is running; exit 0 only if both servers answer.
#   env      print `export` lines for SETTLE_POSTGRES_URL and
#            SETTLE_CLICKHOUSE_URL: eval "$(scripts/services.sh env)"
#
# Environment:
#   SETTLE_LOCAL_DIR         data, logs and configs (default: <repo>/.local/services)
#   SETTLE_PG_PORT           PostgreSQL port on 127.0.0.1 (default 54329)
#   SETTLE_CH_PORT           ClickHouse native port on 127.0.0.1 (default 19000)
#   SETTLE_CH_HTTP_PORT      ClickHouse HTTP port on 127.0.0.1 (default 18123)
#   SETTLE_SERVICES_TIMEOUT  seconds to wait for a server to start or stop (default 60)
#
# Both servers listen on 127.0.0.1 only. PostgreSQL trusts every local
# connection (user postgres, no password) and runs with fsync=off: it is for
# development and tests, never for data you care about. When run as root, the
# servers run as the postgres and clickhouse system users.
#
# Debian's ClickHouse is 18.16.1. With clickhouse-go/v2 (which warns that it
# is unsupported) SELECTs, DDL and PrepareBatch("INSERT INTO t (c1, c2, ...)")
# work, but an INSERT ... VALUES sent through Exec hangs until its deadline,
# and PrepareBatch("INSERT INTO t") without a column list sees no columns.
set -euo pipefail

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")

LOCAL_DIR=${SETTLE_LOCAL_DIR:-$REPO_DIR/.local/services}
case $LOCAL_DIR in
  /*) ;;
  *) LOCAL_DIR=$PWD/$LOCAL_DIR ;;
esac
PG_PORT=${SETTLE_PG_PORT:-54329}
CH_PORT=${SETTLE_CH_PORT:-19000}
CH_HTTP_PORT=${SETTLE_CH_HTTP_PORT:-18123}
TIMEOUT=${SETTLE_SERVICES_TIMEOUT:-60}

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=$LOCAL_DIR/postgres
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/log/postgresql.log
PG_OPTS_FILE=$PG_DIR/started-with
PG_SOCK_DIR=$PG_DIR/run

CH_DIR=$LOCAL_DIR/clickhouse
CH_CONFIG=$CH_DIR/config.xml
CH_USERS=$CH_DIR/users.xml
CH_PID_FILE=$CH_DIR/run/clickhouse-server.pid
CH_LOG=$CH_DIR/log/clickhouse-server.log
CH_ERR_LOG=$CH_DIR/log/clickhouse-server.err.log
CH_STDERR_LOG=$CH_DIR/log/stderr.log

PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
CH_URL="clickhouse://default:@127.0.0.1:$CH_PORT/default"
CH_HTTP_URL="http://127.0.0.1:$CH_HTTP_PORT/"

IS_ROOT=0
if [ "$(id -u)" -eq 0 ]; then
  IS_ROOT=1
fi

log() { printf 'services: %s\n' "$*" >&2; }
die() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

check_port_var() { # NAME VALUE
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
    die "$1 must be a TCP port number, got '$2'"
  fi
}

check_settings() {
  check_port_var SETTLE_PG_PORT "$PG_PORT"
  check_port_var SETTLE_CH_PORT "$CH_PORT"
  check_port_var SETTLE_CH_HTTP_PORT "$CH_HTTP_PORT"
  if ! [[ $TIMEOUT =~ ^[0-9]+$ ]] || [ "$TIMEOUT" -lt 1 ]; then
    die "SETTLE_SERVICES_TIMEOUT must be a positive number of seconds, got '$TIMEOUT'"
  fi
  if [ "$CH_PORT" = "$CH_HTTP_PORT" ] || [ "$PG_PORT" = "$CH_PORT" ] || [ "$PG_PORT" = "$CH_HTTP_PORT" ]; then
    die "SETTLE_PG_PORT, SETTLE_CH_PORT and SETTLE_CH_HTTP_PORT must differ"
  fi
}

# Unix sockets paths are limited to 107 bytes: fall back to a short
# directory under /tmp when the data folder is deeply nested.
pick_pg_socket_dir() {
  if [ $((${#PG_SOCK_DIR} + 16)) -gt 100 ]; then
    local sum
    sum=$(printf '%s' "$PG_DIR" | cksum | cut -d' ' -f1)
    PG_SOCK_DIR=${TMPDIR:-/tmp}/settle-pg-$sum
  fi
}

# --- helpers ----------------------------------------------------------------

# Tail of a log file, indented, for error messages.
show_log() { # FILE [LINES]
  local f=$1 n=${2:-40}
  if [ -s "$f" ]; then
    printf -- '--- last %s lines of %s ---\n' "$n" "$f" >&2
    tail -n "$n" -- "$f" >&2 || true
    printf -- '--- end of %s ---\n' "$f" >&2
  else
    printf -- '(%s is empty or missing)\n' "$f" >&2
  fi
}

# Is something accepting connections on 127.0.0.1:PORT?
port_in_use() { # PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Name of the process PID (as in /proc/PID/comm), empty if there is none.
proc_comm() {
  cat "/proc/$1/comm" 2>/dev/null || true
}

proc_cmdline() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# First line of a pid file if it is a number, else empty.
read_pid() { # FILE
  local pid=""
  if [ -r "$1" ]; then
    IFS= read -r pid <"$1" || true
  fi
  if [[ $pid =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$pid"
  fi
}

# The command prefix that runs a command as USER: nothing when that is who
# we are, else (as root) setpriv, which execs in place and so keeps the pid.
AS_USER=()
as_user() { # USER
  AS_USER=()
  if [ "$1" != "$(id -un)" ]; then
    command -v setpriv >/dev/null 2>&1 || die "setpriv (util-linux) is needed to run servers as $1"
    AS_USER=(env HOME=/ setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups --)
  fi
}

# Run a command as USER, from / (the server users may not be able to read
# the working directory), with the lock's file descriptor closed so that no
# server inherits the lock.
run_as() { # USER CMD...
  as_user "$1"
  shift
  (cd / && exec "${AS_USER[@]}" "$@" 9>&-)
}

# As root: make sure the system USER exists.
ensure_system_user() { # USER HOME
  if ! id -u "$1" >/dev/null 2>&1; then
    log "creating system user $1"
    useradd --system --user-group --home-dir "$2" --no-create-home --shell /usr/sbin/nologin "$1"
  fi
}

# As root: make DIR (recursively) owned by USER, and make sure USER can reach it.
give_dir_to() { # USER DIR
  local user=$1 dir=$2 d
  if [ "$(stat -c %U -- "$dir")" != "$user" ] ||
    [ -n "$(find "$dir" ! -user "$user" -print -quit 2>/dev/null)" ]; then
    chown -R "$user:$(id -gn "$user")" -- "$dir"
  fi
  if ! run_as "$user" test -x "$dir"; then
    d=$(dirname -- "$dir")
    while [ "$d" != "/" ]; do
      if ! run_as "$user" test -x "$d"; then
        log "adding o+x to $d so that $user can reach $dir"
        chmod o+x -- "$d"
      fi
      d=$(dirname -- "$d")
    done
    run_as "$user" test -x "$dir" || die "user $user cannot reach $dir"
  fi
}

xml_escape() {
  local s=$1
  s=${s//&/&amp;}
  s=${s//</&lt;}
  s=${s//>/&gt;}
  printf '%s' "$s"
}

# Wait until CMD succeeds, TIMEOUT seconds at most; fail early if PID dies.
wait_for() { # PID CMD...
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && [ ! -e "/proc/$pid" ]; then
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.2
  done
}

# Send SIGTERM to PID, wait for it to exit, SIGKILL after TIMEOUT seconds.
stop_pid() { # PID NAME
  local pid=$1 name=$2 deadline=$((SECONDS + TIMEOUT))
  if ! kill -TERM "$pid" 2>/dev/null && [ -e "/proc/$pid" ]; then
    die "cannot signal $name (pid $pid): it runs as another user"
  fi
  while [ -e "/proc/$pid" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name (pid $pid) did not stop after ${TIMEOUT}s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  if [ -e "/proc/$pid" ]; then
    die "could not stop $name (pid $pid)"
  fi
}

lock() {
  mkdir -p -- "$LOCAL_DIR"
  exec 9>"$LOCAL_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w "$TIMEOUT" 9 || die "another services.sh is holding $LOCAL_DIR/.lock"
  fi
}

# --- installation -----------------------------------------------------------

have_pg() { [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/pg_isready" ]; }
have_ch_server() { command -v clickhouse-server >/dev/null 2>&1; }
have_ch_client() { command -v clickhouse-client >/dev/null 2>&1; }

# Database server processes (postgres, clickhouse-server) now alive.
server_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    comm=$(cat "$p/comm" 2>/dev/null) || continue
    case $comm in
      postgres | postmaster | clickhouse-serv*) printf '%s\n' "${p#/proc/}" ;;
    esac
  done
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=/usr/sbin/policy-rc.d.settle-services-backup
POLICY_CREATED=0
SUDO=()

restore_policy() {
  if [ "$POLICY_CREATED" = 1 ]; then
    "${SUDO[@]}" rm -f -- "$POLICY"
    if [ -e "$POLICY_BACKUP" ]; then
      "${SUDO[@]}" mv -- "$POLICY_BACKUP" "$POLICY"
    fi
    POLICY_CREATED=0
  fi
}

install_packages() {
  local missing=()
  have_pg || missing+=(postgresql-15)
  have_ch_server || missing+=(clickhouse-server)
  have_ch_client || missing+=(clickhouse-client)
  [ "${#missing[@]}" -eq 0 ] && return 0

  if [ "$IS_ROOT" = 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      die "missing packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"
    fi
    if [ -t 0 ]; then
      SUDO=(sudo)
    else
      SUDO=(sudo -n)
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get"

  log "installing ${missing[*]} (apt-get output in $LOCAL_DIR/apt.log)"
  local apt_log=$LOCAL_DIR/apt.log before after p
  before=$(server_pids | sort)

  # Keep the packages from starting their own services (the default
  # cluster on 5432, clickhouse-server on 9000/8123): invoke-rc.d asks
  # policy-rc.d, and "exit 101" means "action forbidden".
  if ! { [ -x "$POLICY" ] && grep -qx 'exit 101' "$POLICY"; }; then
    if [ -e "$POLICY" ]; then
      "${SUDO[@]}" mv -- "$POLICY" "$POLICY_BACKUP"
    fi
    POLICY_CREATED=1
    trap restore_policy EXIT
    trap 'restore_policy; exit 130' INT TERM HUP
    printf '#!/bin/sh\n# Written by settle scripts/services.sh for the duration of an apt-get install.\nexit 101\n' |
      "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
  fi

  local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing[@]}"; } \
    </dev/null >"$apt_log" 2>&1; then
    restore_policy
    show_log "$apt_log" 30
    die "apt-get install ${missing[*]} failed"
  fi
  restore_policy
  trap - EXIT INT TERM HUP

  # Belt and braces: stop any database server that the install started
  # anyway (one that was not running before it), and nothing else.
  after=$(server_pids | sort)
  for p in $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after")); do
    # Only the parents: a postmaster takes its children down itself.
    case $(proc_comm "$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)") in
      postgres | postmaster) continue ;;
    esac
    if [ -e "/proc/$p" ]; then
      log "stopping $(proc_comm "$p") (pid $p) started by the package install"
      "${SUDO[@]}" kill -TERM "$p" 2>/dev/null || true
    fi
  done

  have_pg || die "postgresql-15 installed but $PG_BIN/postgres is missing"
  have_ch_server || die "clickhouse-server installed but not on PATH"
  have_ch_client || die "clickhouse-client installed but not on PATH"
}

# --- PostgreSQL -------------------------------------------------------------

pg_user() {
  if [ "$IS_ROOT" = 1 ]; then echo postgres; else id -un; fi
}

# Pid of the postmaster running on our data folder, empty if none.
pg_pid() {
  local pid
  pid=$(read_pid "$PG_DATA/postmaster.pid")
  [ -n "$pid" ] || return 0
  case $(proc_comm "$pid") in
    postgres | postmaster) ;;
    *) return 0 ;;
  esac
  case $(proc_cmdline "$pid") in
    *"$PG_DATA"*) printf '%s\n' "$pid" ;;
  esac
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2
}

pg_options() {
  printf '%s' "-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$PG_SOCK_DIR'" \
    " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
}

pg_init() {
  local user
  user=$(pg_user)
  mkdir -p -- "$PG_DATA" "$PG_DIR/log" "$PG_SOCK_DIR"
  chmod 700 -- "$PG_DATA"
  if [ "$IS_ROOT" = 1 ]; then
    ensure_system_user postgres /var/lib/postgresql
    give_dir_to postgres "$PG_DIR"
    if [ "$PG_SOCK_DIR" != "$PG_DIR/run" ]; then
      give_dir_to postgres "$PG_SOCK_DIR"
    fi
  fi
  if [ -s "$PG_DATA/PG_VERSION" ]; then
    local v
    v=$(cat "$PG_DATA/PG_VERSION")
    [ "$v" = 15 ] || die "$PG_DATA holds a PostgreSQL $v cluster; remove it (scripts/services.sh down; rm -rf $PG_DATA)"
    return 0
  fi
  log "initialising PostgreSQL data in $PG_DATA"
  if ! run_as "$user" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C >"$PG_DIR/log/initdb.log" 2>&1; then
    show_log "$PG_DIR/log/initdb.log"
    die "initdb failed"
  fi
}

pg_stop() {
  local pid
  pid=$(pg_pid)
  if [ -z "$pid" ]; then
    return 0
  fi
  log "stopping PostgreSQL (pid $pid)"
  if ! run_as "$(stat -c %U -- "$PG_DATA")" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast \
    -w -t "$TIMEOUT" -s stop >/dev/null 2>&1; then
    stop_pid "$pid" PostgreSQL
  fi
}

pg_up() {
  local pid opts
  pick_pg_socket_dir
  opts=$(pg_options)
  pid=$(pg_pid)
  if [ -n "$pid" ]; then
    if [ "$(cat "$PG_OPTS_FILE" 2>/dev/null || true)" = "$opts" ] && pg_ready; then
      log "PostgreSQL already running (pid $pid)"
      return 0
    fi
    log "PostgreSQL (pid $pid) runs with other settings or does not answer: restarting it"
    pg_stop
  elif [ -e "$PG_DATA/postmaster.pid" ]; then
    log "removing stale $PG_DATA/postmaster.pid"
    rm -f -- "$PG_DATA/postmaster.pid"
  fi

  pg_init
  if port_in_use "$PG_PORT"; then
    die "port 127.0.0.1:$PG_PORT is taken by another program; set SETTLE_PG_PORT"
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  printf '%s\n' "$opts" >"$PG_OPTS_FILE"
  if ! run_as "$(pg_user)" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "$opts" \
    -w -t "$TIMEOUT" -s start >/dev/null 2>&1; then
    show_log "$PG_LOG"
    die "PostgreSQL did not start within ${TIMEOUT}s"
  fi
  pid=$(pg_pid)
  if ! wait_for "$pid" pg_ready; then
    show_log "$PG_LOG"
    die "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"
  fi
}

pg_status() {
  local pid
  pid=$(pg_pid)
  if [ -z "$pid" ]; then
    if [ -e "$PG_DATA/postmaster.pid" ]; then
      echo "postgres:   stopped (stale pid file $PG_DATA/postmaster.pid)"
    else
      echo "postgres:   stopped"
    fi
    return 1
  fi
  if pg_ready; then
    echo "postgres:   running, pid $pid, $PG_URL"
  else
    echo "postgres:   pid $pid alive but not answering on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
    return 1
  fi
}

# --- ClickHouse -------------------------------------------------------------

ch_user() {
  if [ "$IS_ROOT" = 1 ]; then echo clickhouse; else id -un; fi
}

# Pid of the clickhouse-server running on our config, empty if none.
ch_pid() {
  local pid
  pid=$(read_pid "$CH_PID_FILE")
  [ -n "$pid" ] || return 0
  case $(proc_comm "$pid") in
    clickhouse-serv*) ;;
    *) return 0 ;;
  esac
  case $(proc_cmdline "$pid") in
    *"$CH_CONFIG"*) printf '%s\n' "$pid" ;;
  esac
}

ch_ready() {
  timeout 10 clickhouse-client --host 127.0.0.1 --port "$CH_PORT" -q 'SELECT 1' </dev/null
}

ch_write_configs() { # DIR: write config.xml and users.xml into DIR
  local out=$1 d
  d=$(xml_escape "$CH_DIR")
  cat >"$out/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/services.sh on every "up": edit the script, not this file. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>

    <!-- Loopback only; no interserver_http_port: no replication port at all. -->
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$CH_PORT</tcp_port>
    <http_port>$CH_HTTP_PORT</http_port>

    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>

    <!-- Modest caches (the packaged defaults are 8 GiB and 5 GiB). -->
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>

    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>

    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>

    <!-- Let tests drop tables and partitions of any size. -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
</yandex>
EOF
  cat >"$out/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by scripts/services.sh on every "up": edit the script, not this file. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <max_memory_usage_for_all_queries>4000000000</max_memory_usage_for_all_queries>
            <background_pool_size>4</background_pool_size>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <log_queries>0</log_queries>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>

    <users>
        <!-- Empty password, loopback only. -->
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>

    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

# Write the configs; set CH_CONFIG_CHANGED=1 if they changed.
CH_CONFIG_CHANGED=0
ch_init() {
  local tmp f
  CH_CONFIG_CHANGED=1
  mkdir -p -- "$CH_DIR"/{data,tmp,user_files,format_schemas,log,run}
  tmp=$(mktemp -d "$CH_DIR/.config.XXXXXX")
  ch_write_configs "$tmp"
  if cmp -s "$tmp/config.xml" "$CH_CONFIG" && cmp -s "$tmp/users.xml" "$CH_USERS"; then
    CH_CONFIG_CHANGED=0
  else
    for f in config.xml users.xml; do
      mv -f -- "$tmp/$f" "$CH_DIR/$f"
    done
  fi
  rm -rf -- "$tmp"
  if [ "$IS_ROOT" = 1 ]; then
    ensure_system_user clickhouse /var/lib/clickhouse
    give_dir_to clickhouse "$CH_DIR"
  fi
}

ch_stop() {
  local pid
  pid=$(ch_pid)
  if [ -n "$pid" ]; then
    log "stopping ClickHouse (pid $pid)"
    stop_pid "$pid" ClickHouse
  fi
  rm -f -- "$CH_PID_FILE"
}

ch_up() {
  local pid bg
  ch_init
  pid=$(ch_pid)
  if [ -n "$pid" ]; then
    if [ "$CH_CONFIG_CHANGED" = 0 ] && ch_ready >/dev/null 2>&1; then
      log "ClickHouse already running (pid $pid)"
      return 0
    fi
    log "ClickHouse (pid $pid) runs with other settings or does not answer: restarting it"
    ch_stop
  elif [ -e "$CH_PID_FILE" ]; then
    log "removing stale $CH_PID_FILE"
    rm -f -- "$CH_PID_FILE"
  fi

  if port_in_use "$CH_PORT"; then
    die "port 127.0.0.1:$CH_PORT is taken by another program; set SETTLE_CH_PORT"
  fi
  if port_in_use "$CH_HTTP_PORT"; then
    die "port 127.0.0.1:$CH_HTTP_PORT is taken by another program; set SETTLE_CH_HTTP_PORT"
  fi
  log "starting ClickHouse on 127.0.0.1:$CH_PORT (HTTP $CH_HTTP_PORT)"
: >"$CH_STDERR_LOG"
  # In the foreground (--daemon would send early errors to /dev/null), in
  # its own session, detached from this shell; every step execs in place,
  # so $! is the server's pid (this server does not write a pid file unless
  # it daemonises).
  as_user "$(ch_user)"
  (cd / && exec "${AS_USER[@]}" setsid clickhouse-server --config-file="$CH_CONFIG" \
    </dev/null >>"$CH_STDERR_LOG" 2>&1 9>&-) &
  bg=$!
  printf '%s\n' "$bg" >"$CH_PID_FILE"
  if ! wait_for "$bg" ch_ready; then
    show_log "$CH_STDERR_LOG" 20
    show_log "$CH_ERR_LOG"
    if [ -e "/proc/$bg" ]; then
      die "ClickHouse (pid $bg) does not answer on 127.0.0.1:$CH_PORT after ${TIMEOUT}s"
    fi
    rm -f -- "$CH_PID_FILE"
    die "ClickHouse exited during startup"
  fi
  pid=$(ch_pid)
  [ "$pid" = "$bg" ] || die "ClickHouse answers but pid $bg is not clickhouse-server"
}

ch_status() {
  local pid
  pid=$(ch_pid)
  if [ -z "$pid" ]; then
    if [ -e "$CH_PID_FILE" ]; then
      echo "clickhouse: stopped (stale pid file $CH_PID_FILE)"
    else
      echo "clickhouse: stopped"
    fi
    return 1
  fi
  if ch_ready >/dev/null 2>&1; then
    echo "clickhouse: running, pid $pid, $CH_URL (HTTP $CH_HTTP_URL)"
  else
    echo "clickhouse: pid $pid alive but not answering on 127.0.0.1:$CH_PORT (log: $CH_ERR_LOG)"
    return 1
  fi
}

# --- commands ---------------------------------------------------------------

cmd_env() {
  printf "export SETTLE_POSTGRES_URL='%s'\n" "$PG_URL"
  printf "export SETTLE_CLICKHOUSE_URL='%s'\n" "$CH_URL"
}

cmd_up() {
  lock
  install_packages
  pg_up
  ch_up
  echo "PostgreSQL: $PG_URL"
  echo "ClickHouse: $CH_URL (HTTP $CH_HTTP_URL)"
  echo "Export both with: eval \"\$($SCRIPT_DIR/services.sh env)\""
}

cmd_down() {
  lock
  pick_pg_socket_dir
  pg_stop
  ch_stop
  log "stopped"
}

cmd_status() {
  local rc=0
  pick_pg_socket_dir
  pg_status || rc=1
  ch_status || rc=1
  echo "data:       $LOCAL_DIR"
  echo "logs:       $PG_LOG"
  echo "            $CH_LOG"
  return "$rc"
}

main() {
  local cmd=${1:-}
  case $cmd in
    up | down | restart | status) check_settings ;;
  esac
  case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    restart)
      cmd_down
      cmd_up
      ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
