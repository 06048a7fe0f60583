#!/usr/bin/env bash
# Brings up PostgreSQL, Redis and NATS (with JetStream) on loopback for local development,
# CI and `npm run bench`, on a Debian machine, as root, and installs Chromium for the browser
# test of the ops page (test/ops.test.ts). Idempotent: a service that already answers on its
# port is left alone; a missing binary is installed from Debian packages; nothing depends on
# systemd.
#
#   deploy/services.sh            # make sure all three are up, Chromium and iptables installed
#   deploy/services.sh --bench    # ... and install wrk for `npm run bench`
#
# Ports can be overridden for a second, throw-away set of servers (the defaults are what the
# tests and core/config.ts expect):
#   PGPORT=5432 REDIS_PORT=6379 NATS_PORT=4222
#   REDIS_DIR=/var/lib/redis REDIS_LOG=/var/log/redis/ci.log
#   NATS_STORE_DIR=/var/lib/nats-server NATS_LOG=/var/log/nats-server.log
#   WAIT_SECONDS=30 (how long to wait for each service to answer after starting it)
set -euo pipefail

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
NATS_PORT="${NATS_PORT:-4222}"
REDIS_DIR="${REDIS_DIR:-/var/lib/redis}"
REDIS_LOG="${REDIS_LOG:-/var/log/redis/ci.log}"
NATS_STORE_DIR="${NATS_STORE_DIR:-/var/lib/nats-server}"
NATS_LOG="${NATS_LOG:-/var/log/nats-server.log}"
WAIT_SECONDS="${WAIT_SECONDS:-30}"
HOST=127.0.0.1

export DEBIAN_FRONTEND=noninteractive
# pg_ctlcluster, start-stop-daemon and nats-server live in sbin directories that a non-login
# root shell (sudo, docker exec) may not have on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Nothing below uses relative paths; running from / keeps commands that switch to the postgres
# user from warning that they cannot read the caller's working directory.
script="$(readlink -f "${BASH_SOURCE[0]:-$0}")"
cd /

bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    -h | --help)
      sed -n '2,/^set -euo pipefail$/{/^#/s/^# \{0,1\}//p}' "$script"
      exit 0
      ;;
    *)
      echo "services.sh: unknown argument '$arg' (expected --bench or --help)" >&2
      exit 2
      ;;
  esac
done

log() { echo "$*"; }
die() {
  echo "services.sh: $*" >&2
  exit 1
}

need_root() {
  [[ $EUID -eq 0 ]] || die "$1 needs root; re-run as root (e.g. sudo $script)"
}

# ---------------------------------------------------------------- apt

apt_updated=0
apt_update_once() {
  [[ $apt_updated -eq 0 ]] || return 0
  need_root "apt-get update"
  log "apt: updating package lists"
  apt-get update -q
  apt_updated=1
}

apt_install() {
  need_root "installing $*"
  apt_update_once
  log "apt: installing $*"
  # C.UTF-8 always exists on Debian; an unset or ungenerated locale in the caller's environment
  # would otherwise make postgresql's postinst skip creating its cluster.
  LC_ALL=C.UTF-8 apt-get install -y -q --no-install-recommends "$@"
}

# Whether the archive has a real (not purely virtual) package of that name.
apt_has_package() {
  apt_update_once # a fresh image has no package lists at all
  apt-cache show "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- probes

# True when something accepts TCP connections on $HOST:$1.
tcp_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$HOST" -p "$PGPORT" -t 2
  else
    tcp_open "$PGPORT"
  fi
}

redis_up() { tcp_open "$REDIS_PORT"; }
nats_up() { tcp_open "$NATS_PORT"; }

# The first line a NATS server sends is INFO {...}; it says whether JetStream is enabled.
nats_has_jetstream() {
  local info
  # shellcheck disable=SC2016 # $1 and $2 expand in the inner shell
  info="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 2 line <&3 && printf "%s" "$line"' _ "$HOST" "$NATS_PORT" 2>/dev/null)" || return 1
  [[ $info == *'"jetstream":true'* ]]
}

# wait_for <probe function>: polls every 0.5 s for up to WAIT_SECONDS.
wait_for() {
  local probe=$1 tries=$((WAIT_SECONDS * 2)) i
  for ((i = 0; i < tries; i++)); do
    if "$probe"; then return 0; fi
    sleep 0.5
  done
  return 1
}

declare -A state

# ---------------------------------------------------------------- PostgreSQL

# Newest version under /usr/lib/postgresql that has a server binary (empty when none).
pg_server_version() {
  local f
  for f in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x $f ]] || continue
    f="${f#/usr/lib/postgresql/}"
    printf '%s\n' "${f%/bin/postgres}"
  done | sort -V | tail -1
}

# Clusters as "version/name", one a line, from their config directories.
pg_clusters() {
  local f
  for f in /etc/postgresql/*/*/postgresql.conf; do
    [[ -e $f ]] || continue
    f="${f#/etc/postgresql/}"
    printf '%s\n' "${f%/postgresql.conf}"
  done
}

pg_running() { # version name
  pg_ctlcluster --skip-systemctl-redirect "$1" "$2" status >/dev/null 2>&1
}

# Makes a cluster this script created (itself, or through the package's postinst) accept
# passwordless connections from loopback: the tests connect as postgres://postgres@127.0.0.1.
pg_trust_loopback() { # version name
  local hba="/etc/postgresql/$1/$2/pg_hba.conf" tmp
  [[ -f $hba ]] || die "postgres: $hba not found"
  if grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust([[:space:]]|$)' "$hba" &&
    grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust([[:space:]]|$)' "$hba" &&
    grep -Eq '^[[:space:]]*local[[:space:]]+all[[:space:]]+all[[:space:]]+trust([[:space:]]|$)' "$hba"; then
    return 0
  fi
  log "postgres: setting trust auth for loopback in $hba"
  tmp="$(mktemp)"
  # Rewrite the method of Debian's stock loopback rules (local all all|postgres, host all all
  # 127.0.0.1/32 and ::1/128) in place, keeping their order.
  awk '
    /^[[:space:]]*#/ || NF == 0 { print; next }
    $1 == "local" && $2 == "all" && ($3 == "all" || $3 == "postgres") && NF == 4 { $4 = "trust" }
    $1 == "host" && $2 == "all" && $3 == "all" && ($4 == "127.0.0.1/32" || $4 == "::1/128") && NF == 5 { $5 = "trust" }
    { print }
  ' OFS='\t' "$hba" >"$tmp"
  # Rules with options or in an unusual form were left alone; put trust rules first so they win.
  if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust$' "$tmp" ||
    ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+::1/128[[:space:]]+trust$' "$tmp" ||
    ! grep -Eq '^local[[:space:]]+all[[:space:]]+all[[:space:]]+trust$' "$tmp"; then
    {
      printf '# added by deploy/services.sh: passwordless loopback access\n'
      printf 'local\tall\tall\ttrust\nhost\tall\tall\t127.0.0.1/32\ttrust\nhost\tall\tall\t::1/128\ttrust\n\n'
      cat "$tmp"
    } >"$tmp.2"
    mv "$tmp.2" "$tmp"
  fi
  cat "$tmp" >"$hba" # keeps the file's owner and mode
  rm -f "$tmp"
}

start_postgres() {
  if pg_up; then
    log "postgres: already running"
    state[postgres]="up (pre-existing)"
    return
  fi

  local before ver cluster created=0
  before="$(pg_clusters)"
  if [[ -z $(pg_server_version) ]] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    local pkgs=(postgresql)
    # Debian 12's server package already contains contrib (postgresql-contrib is only a
    # metapackage there); releases where it is a separate package need it for extensions.
    if apt_has_package postgresql-contrib; then pkgs+=(postgresql-contrib); fi
    apt_install "${pkgs[@]}"
  fi
  ver="$(pg_server_version)"
  [[ -n $ver ]] || die "postgres: no server binary under /usr/lib/postgresql after installing postgresql"

  # The package's postinst normally creates (and may start) a cluster; it counts as ours.
  if [[ -n $(comm -13 <(printf '%s\n' "$before" | sort) <(pg_clusters | sort) | sed '/^$/d') ]]; then
    created=1
  fi

  # shellcheck disable=SC2012 # version directory names
  cluster="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)"
  if [[ -z $cluster || ! -f /etc/postgresql/$cluster/main/postgresql.conf ]]; then
    need_root "creating a PostgreSQL cluster"
    log "postgres: creating cluster $ver/main on port $PGPORT"
    LC_ALL=C.UTF-8 pg_createcluster --port "$PGPORT" --locale C.UTF-8 "$ver" main
    cluster="$ver"
    created=1
  fi

  need_root "starting PostgreSQL"
  install -d -m 2775 -o postgres -g postgres /var/run/postgresql
  if [[ $created -eq 1 ]]; then
    pg_trust_loopback "$cluster" main
    local port
    port="$(pg_conftool -s "$cluster" main show port 2>/dev/null || echo 5432)"
    if [[ $port != "$PGPORT" ]]; then
      log "postgres: moving cluster $cluster/main from port $port to $PGPORT"
      pg_conftool "$cluster" main set port "$PGPORT"
      if pg_running "$cluster" main; then
        pg_ctlcluster --skip-systemctl-redirect "$cluster" main stop
      fi
    fi
    if pg_running "$cluster" main; then
      pg_ctlcluster --skip-systemctl-redirect "$cluster" main reload
    fi
  fi

  if pg_running "$cluster" main; then
    log "postgres: cluster $cluster/main is running"
  else
    log "postgres: starting cluster $cluster/main"
    pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  fi

  wait_for pg_up ||
    die "postgres: not accepting connections on $HOST:$PGPORT after ${WAIT_SECONDS}s (cluster $cluster/main; see pg_lsclusters and /var/log/postgresql/postgresql-$cluster-main.log)"
  state[postgres]="up (started)"
}

# ---------------------------------------------------------------- Redis

start_redis() {
  if redis_up; then
    log "redis: already running"
    state[redis]="up (pre-existing)"
    return
  fi

  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    # On a systemd host the package starts its own instance on 6379; take it if it answers.
    if redis_up; then
      log "redis: started by the redis-server package"
      state[redis]="up (started by package)"
      return
    fi
  fi

  need_root "starting Redis"
  mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOG")"
  log "redis: starting on $HOST:$REDIS_PORT"
  # No persistence: this is a cache and presence store for dev/CI. The pid file is per port so
  # a second instance never overwrites the first one's.
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_LOG" --pidfile "/var/run/redis-ci-$REDIS_PORT.pid"

  wait_for redis_up ||
    die "redis: not accepting connections on $HOST:$REDIS_PORT after ${WAIT_SECONDS}s (see $REDIS_LOG)"
  state[redis]="up (started)"
}

# ---------------------------------------------------------------- NATS

start_nats() {
  if nats_up; then
    log "nats: already running"
    state[nats]="up (pre-existing)"
    if ! nats_has_jetstream; then
      echo "nats: WARNING: the server on $HOST:$NATS_PORT does not report JetStream; actorbase needs it (-js)" >&2
      state[nats]="up (pre-existing, JetStream NOT enabled)"
    fi
    return
  fi

  if ! command -v nats-server >/dev/null 2>&1; then
    apt_install nats-server
    # On a systemd host the package starts nats-server.service from /etc/nats-server.conf,
    # which has no JetStream. It was installed just now, so stop it and run ours instead.
    if nats_up && ! nats_has_jetstream && [[ -d /run/systemd/system ]]; then
      log "nats: stopping the package's nats-server.service (no JetStream)"
      systemctl stop nats-server.service || true
      systemctl disable nats-server.service >/dev/null 2>&1 || true
      local i
      for ((i = 0; i < 20; i++)); do
        nats_up || break
        sleep 0.5
      done
    fi
  fi
  local bin
  bin="$(command -v nats-server)" || die "nats: nats-server not found after installing it"

  need_root "starting NATS"
  mkdir -p "$NATS_STORE_DIR" "$(dirname "$NATS_LOG")"
  log "nats: starting on $HOST:$NATS_PORT with JetStream in $NATS_STORE_DIR"
  # The pid file is per port: start-stop-daemon then matches on it as well as the executable,
  # so a nats-server already running on another port does not count as "this one is running".
  start-stop-daemon --start --oknodo --background \
    --pidfile "/var/run/nats-server-ci-$NATS_PORT.pid" --make-pidfile \
    --exec "$bin" -- -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" -l "$NATS_LOG"

  wait_for nats_up ||
    die "nats: not accepting connections on $HOST:$NATS_PORT after ${WAIT_SECONDS}s (see $NATS_LOG)"
  state[nats]="up (started)"
}

# ---------------------------------------------------------------- the app's database

# `npm start` uses postgres://postgres@127.0.0.1:5432/app by default; make it exist so the README's quick start
# works on a fresh machine. Leaves an existing database alone.
APP_DATABASE="${APP_DATABASE:-app}"
ensure_app_database() {
  local exists
  exists=$(psql -h "$HOST" -p "$PGPORT" -U postgres -d postgres -Atc "select 1 from pg_database where datname = '$APP_DATABASE'" 2>/dev/null) ||
    die "postgres: cannot query databases as user postgres on $HOST:$PGPORT"
  if [[ "$exists" == "1" ]]; then
    state[database]="exists"
  else
    psql -h "$HOST" -p "$PGPORT" -U postgres -d postgres -qc "create database \"$APP_DATABASE\"" >/dev/null ||
      die "postgres: could not create database $APP_DATABASE"
    state[database]="created"
  fi
}

# ---------------------------------------------------------------- tools

# A command the tests or benchmarks need, installed from its Debian package when missing:
# wrk (`--bench`), and iptables, with which a test partitions one Postgres session by dropping
# its packets on loopback (test/support/packet-drop.ts).
ensure_command() {
  local cmd=$1 pkg=$2
  if command -v "$cmd" >/dev/null 2>&1; then
    state[$cmd]="installed (pre-existing)"
  else
    apt_install "$pkg"
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd: not on PATH after installing $pkg"
    state[$cmd]="installed (just now)"
  fi
}

# ---------------------------------------------------------------- Chromium

# The ops page test drives Debian's Chromium with playwright-core (which is not allowed to
# download a browser of its own). fonts-liberation is only a recommendation of the package,
# and apt_install skips those; without it screenshots fall back to whatever font is there.
ensure_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    state[chromium]="installed (pre-existing)"
  else
    apt_install chromium fonts-liberation
    [[ -x /usr/bin/chromium ]] || die "chromium: /usr/bin/chromium not found after installing it"
    state[chromium]="installed (just now)"
  fi
}

# ---------------------------------------------------------------- main

start_postgres
start_redis
start_nats
ensure_app_database
ensure_chromium
ensure_command iptables iptables
if [[ $bench -eq 1 ]]; then ensure_command wrk wrk; fi

echo
printf '%-9s %-22s %s\n' postgres "$HOST:$PGPORT" "${state[postgres]}"
printf '%-9s %-22s %s\n' redis "$HOST:$REDIS_PORT" "${state[redis]}"
printf '%-9s %-22s %s\n' nats "$HOST:$NATS_PORT" "${state[nats]}"
printf '%-9s %-22s %s\n' database "$APP_DATABASE" "${state[database]}"
printf '%-9s %-22s %s\n' chromium /usr/bin/chromium "${state[chromium]}"
printf '%-9s %-22s %s\n' iptables "$(command -v iptables)" "${state[iptables]}"
if [[ $bench -eq 1 ]]; then
  printf '%-9s %-22s %s\n' wrk "$(command -v wrk)" "${state[wrk]}"
fi
