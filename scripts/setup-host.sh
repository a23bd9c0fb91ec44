#!/usr/bin/env bash
# Install and start, idempotently, what archlift's tests and demo need on a Debian 12
# host (Ubuntu 24.04: best effort, see below): the Docker engine and CLI with buildx
# (containerd image store), QEMU binfmt for arm64, the CNCF distribution registry,
# containerd's ctr, oras, skopeo, cosign, and nox (Debian's package: the system python
# refuses `pip install` outside a virtual environment, PEP 668).
#
# It installs every command it then uses, and checks each one at the end. It never
# stops a running dockerd because a check failed; it restarts only a dockerd it
# started itself, and only when the daemon configuration really changed (and says so).
# /etc/docker/daemon.json is merged into, never overwritten. No registry host name is
# written into the repository: the Debian mirror is the machine's own.
set -euo pipefail

log() { printf '[setup-host] %s\n' "$*"; }
die() { printf '[setup-host] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  # It installs packages and starts dockerd: elevate when we can.
  command -v sudo >/dev/null || die "run as root (it installs packages and starts dockerd)"
  exec sudo -- "$0" "$@"
fi
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 and Ubuntu 24.04 only"
# Our own commands come from the system's directories, whatever the caller's PATH holds
# (a docker CLI in /usr/local/bin must not hide a missing install).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# shellcheck disable=SC1091
. /etc/os-release
DISTRO="${ID:-debian}"
TRIXIE_SOURCES=/etc/apt/sources.list.d/archlift-trixie.sources
TRIXIE_PIN=/etc/apt/preferences.d/archlift-trixie
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/archlift-dockerd.log
DOCKERD_PID=/run/archlift-dockerd.pid   # set only for a dockerd this script started
UPDATED=/var/lib/apt/archlift-updated
HERE=$(cd "$(dirname "$0")" && pwd)

add_trixie_source() {
  # Debian 12 has no docker buildx, and its engine (20.10) cannot build multi-platform images into
  # its store; Debian 13 has both as static Go binaries that install on 12 without upgrading
  # anything else. Pinned to priority 100: nothing else comes from trixie by accident.
  [ "$DISTRO" = debian ] || return 0
  if [ -f "$TRIXIE_SOURCES" ]; then log "trixie apt source present"; return; fi
  local src=/etc/apt/sources.list.d/debian.sources uris keyring
  [ -f "$src" ] || die "$src not found: cannot reuse the machine's Debian mirror"
  uris=$(awk '/^URIs:/ {print $2; exit}' "$src")   # the first (main archive) entry
  [ -n "$uris" ] || die "no URIs line in $src"
  keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
  {
    echo "Types: deb"
    echo "URIs: $uris"
    echo "Suites: trixie"
    echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } >"$TRIXIE_SOURCES"
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >"$TRIXIE_PIN"
  log "added the trixie apt source (pinned to priority 100)"
  rm -f "$UPDATED"
}

missing_pkgs() {
  local p
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null || true)" == "install ok installed" ]] || echo "$p"
  done
}

apt_update_once() {
  if [ ! -f "$UPDATED" ]; then
    apt-get update -qq
    touch "$UPDATED"
  fi
}

install_packages() {
  local want
  if [ "$DISTRO" = debian ]; then
    # docker-cli: the `docker` command (docker.io only recommends it, so a bare machine has none)
    want=(docker.io/trixie docker-cli/trixie docker-buildx/trixie oras/trixie cosign/trixie
          containerd docker-registry skopeo qemu-user-static binfmt-support
          apache2-utils openssl git ca-certificates python3 python3-venv nox)
  else
    # Ubuntu 24.04: its own archive has the engine, the CLI, buildx and the registry, not oras or
    # cosign (the check below says so; install them from your own mirror).
    want=(docker.io docker-buildx containerd docker-registry skopeo qemu-user-static binfmt-support
          apache2-utils openssl git ca-certificates python3 python3-venv nox)
  fi
  local missing
  missing=$(missing_pkgs "${want[@]}")
  if [ -z "$missing" ]; then log "packages already installed"; return; fi
  log "installing: $(echo "$missing" | tr '\n' ' ')"
  apt_update_once
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  log "packages installed"
}

BUSYBOX_DIR=/var/cache/archlift/busybox-static
fetch_busybox_debs() {
  # Debian's busybox-static for both architectures: the seed of every local two-platform base
  # image (no public registry is reachable here).
  if ls "$BUSYBOX_DIR"/busybox-static_*_amd64.deb "$BUSYBOX_DIR"/busybox-static_*_arm64.deb >/dev/null 2>&1; then
    log "busybox-static debs present in $BUSYBOX_DIR"; return
  fi
  if [[ " $(dpkg --print-foreign-architectures | tr '\n' ' ') " != *" arm64 "* ]]; then
    dpkg --add-architecture arm64
    rm -f "$UPDATED"
    log "added the arm64 dpkg architecture"
  fi
  apt_update_once
  mkdir -p "$BUSYBOX_DIR"
  chown _apt "$BUSYBOX_DIR" 2>/dev/null || true   # apt downloads as _apt where it can
  (cd "$BUSYBOX_DIR" && apt-get download -qq busybox-static:amd64 busybox-static:arm64)
  log "downloaded busybox-static (amd64, arm64) into $BUSYBOX_DIR"
}

enable_binfmt() {
  if [ ! -f /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    log "mounted binfmt_misc"
  fi
  if [ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    log "qemu-aarch64 binfmt enabled"
  else
    update-binfmts --enable qemu-aarch64
    log "enabled qemu-aarch64 binfmt"
  fi
}

CONFIG_CHANGED=0
configure_docker() {
  # The containerd image store: the default `docker` buildx driver then builds multi-platform
  # images, pushes OCI indexes and exports registry caches. Merged into an existing file: every
  # other setting stays as it is (the old file is kept beside it).
  mkdir -p /etc/docker
  local result
  result=$(python3 "$HERE/merge-daemon-json.py" "$DAEMON_JSON") || die "cannot update $DAEMON_JSON"
  case "$result" in
    unchanged) log "dockerd is configured for the containerd image store" ;;
    merged) log "merged the containerd image store into $DAEMON_JSON (the old file: $DAEMON_JSON.archlift-backup)"; CONFIG_CHANGED=1 ;;
    *) log "wrote $DAEMON_JSON (containerd image store)"; CONFIG_CHANGED=1 ;;
  esac
}

ours() { [ -f "$DOCKERD_PID" ] && kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; }

wait_for_docker() {
  # (gives up early when the dockerd this script started has exited)
  local _ pid=""
  [ "${2:-}" = ours ] && pid=$(cat "$DOCKERD_PID")
  for _ in $(seq 1 "${1:-60}"); do
    docker info >/dev/null 2>&1 && return 0
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

launch_dockerd() {
  setsid /usr/sbin/dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
  echo $! >"$DOCKERD_PID"
}

data_root() {
  python3 -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("data-root") or "/var/lib/docker")
except (OSError, ValueError):
    print("/var/lib/docker")' "$DAEMON_JSON"
}

# Docker 26 with the containerd image store cannot start once BuildKit holds many cache records:
# loading them outlasts a start-up deadline and dockerd exits with "context deadline exceeded"
# (moby/moby#48569, fixed in Docker 27.4; Debian ships 26.1). Only the build cache is in the way,
# and the daemon cannot start with it, so it is set aside, dockerd started again, and the leases
# that held the old cache's layers in containerd released (images and containers are kept).
startup_deadline_bug() {
  ! ours && [ "$(tail -n 1 "$DOCKERD_LOG")" = "context deadline exceeded" ] \
    && grep -q 'Daemon has completed initialization' "$DOCKERD_LOG" \
    && [ -d "$(data_root)/buildkit" ]
}

reset_build_cache_and_start() {
  local root aside since leases
  root=$(data_root)
  aside="$root/buildkit.archlift-set-aside"
  log "dockerd exited while BuildKit loaded its cache records: Docker 26 cannot start with this many (moby/moby#48569, fixed in Docker 27.4). Emptying the build cache (images and containers are kept) and starting dockerd again."
  rm -rf "$aside"
  mv "$root/buildkit" "$aside"
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  launch_dockerd
  wait_for_docker 60 ours || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd did not start even with an empty build cache (log: $DOCKERD_LOG; the old cache: $aside)"; }
  # the old records' leases, all created before this start, keep their layers alive in containerd
  local sock=/var/run/docker/containerd/containerd.sock
  if leases=$(ctr --address "$sock" --namespace moby leases ls | awk -v since="$since" 'NR > 1 && $2 < since {print $1}') \
     && { [ -z "$leases" ] || xargs -n 500 ctr --address "$sock" --namespace moby leases rm <<<"$leases" >/dev/null; }; then
    rm -rf "$aside"
    log "the build cache is empty ($(wc -w <<<"$leases") old leases released); the next builds fill it again"
  else
    log "WARNING: could not release the old cache's leases through $sock: its layers stay in containerd's store (the old cache is kept in $aside)"
  fi
}

start_dockerd() {
  if pgrep -x dockerd >/dev/null; then
    if [ "$CONFIG_CHANGED" = 1 ]; then
      if ours; then
        log "restarting the dockerd this script started: $DAEMON_JSON changed"
        kill "$(cat "$DOCKERD_PID")"
        for _ in $(seq 1 30); do ours || break; sleep 1; done
        ours && die "the dockerd this script started (pid $(cat "$DOCKERD_PID")) did not stop"
        rm -f "$DOCKERD_PID"
      else
        die "a dockerd this script did not start is running, and $DAEMON_JSON changed: restart it yourself when its builds allow (e.g. 'systemctl restart docker'), then run this again"
      fi
    else
      wait_for_docker 15 || die "dockerd is running but 'docker info' does not answer (it was left running):
$(docker info 2>&1 | tail -5)"
      log "dockerd running"
      return
    fi
  fi
  launch_dockerd
  if ! wait_for_docker 60 ours; then
    if startup_deadline_bug; then
      reset_build_cache_and_start
    else
      tail -20 "$DOCKERD_LOG" >&2
      die "dockerd did not start (log: $DOCKERD_LOG)"
    fi
  fi
  log "started dockerd (log: $DOCKERD_LOG)"
}

check() {
  local fail=0 c
  for c in docker dockerd docker-registry ctr oras skopeo cosign htpasswd openssl git dpkg-deb \
           qemu-aarch64-static update-binfmts python3 nox; do
    command -v "$c" >/dev/null || { echo "[setup-host] missing command: $c" >&2; fail=1; }
  done
  python3 -c 'import ensurepip, venv' 2>/dev/null || { echo "[setup-host] python3 cannot make virtual environments (python3-venv)" >&2; fail=1; }
  docker buildx version >/dev/null 2>&1 || { echo "[setup-host] docker buildx is not available" >&2; fail=1; }
  # (read whole, then matched: `cmd | grep -q` under pipefail fails when grep stops reading early)
  local driver builder
  driver=$(docker info --format '{{.DriverStatus}}' 2>/dev/null || true)
  [[ "$driver" == *io.containerd.snapshotter* ]] \
    || { echo "[setup-host] dockerd does not use the containerd image store" >&2; fail=1; }
  builder=$(docker buildx inspect 2>/dev/null || true)
  [[ "$builder" == *linux/arm64* ]] \
    || { echo "[setup-host] the buildx builder does not list linux/arm64 (QEMU binfmt)" >&2; fail=1; }
  ls "$BUSYBOX_DIR"/busybox-static_*_arm64.deb >/dev/null 2>&1 || { echo "[setup-host] no arm64 busybox-static deb in $BUSYBOX_DIR" >&2; fail=1; }
  [ "$fail" = 0 ] || die "host is not ready"
  log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker buildx version | awk '{print "buildx", $2}'), $(oras version | awk '/Version/ {print "oras", $2; exit}'), nox $(nox --version 2>&1)"
}

add_trixie_source
install_packages
fetch_busybox_debs
enable_binfmt
configure_docker
start_dockerd
check
