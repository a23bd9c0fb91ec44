#!/usr/bin/env bash
# Install and start, idempotently, what archlift's tests and demo need on a
# Debian 12 host: Docker engine with buildx (containerd image store), QEMU
# binfmt for arm64, the CNCF distribution registry, oras, skopeo, cosign.
# Prints each step; fails loudly when something is missing afterwards.
# Never writes a registry host name into the repository.
set -euo pipefail

log() { printf '[setup-host] %s\n' "$*"; }
die() { printf '[setup-host] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  # It installs Debian packages and starts dockerd: elevate when we can.
  command -v sudo >/dev/null || die "run as root (it installs Debian packages and starts dockerd)"
  exec sudo -- "$0" "$@"
fi
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian-based hosts only"

TRIXIE_SOURCES=/etc/apt/sources.list.d/archlift-trixie.sources
TRIXIE_PIN=/etc/apt/preferences.d/archlift-trixie
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/archlift-dockerd.log

add_trixie_source() {
  if [ -f "$TRIXIE_SOURCES" ]; then log "trixie apt source present"; return; fi
  local src=/etc/apt/sources.list.d/debian.sources uris
  [ -f "$src" ] || die "$src not found: cannot reuse the machine's Debian mirror"
  # The URIs of the first (main archive) entry; the host name stays out of the repo.
  uris=$(awk '/^URIs:/ {print $2; exit}' "$src")
  [ -n "$uris" ] || die "no URIs line in $src"
  local keyring
  keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
  {
    echo "Types: deb"
    echo "URIs: $uris"
    echo "Suites: trixie"
    echo "Components: main"
    [ -n "$keyring" ] && echo "Signed-By: $keyring"
  } >"$TRIXIE_SOURCES"
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' >"$TRIXIE_PIN"
  log "added trixie apt source (pinned to priority 100)"
  rm -f /var/lib/apt/archlift-updated
}

need_pkgs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  printf '%s\n' "${missing[@]:-}"
}

install_packages() {
  local want=(docker.io/trixie docker-buildx/trixie oras/trixie cosign/trixie
              docker-registry skopeo qemu-user-static binfmt-support
              apache2-utils openssl git)
  local missing
  missing=$(need_pkgs "${want[@]}" | grep -v '^$' || true)
  if [ -z "$missing" ]; then log "packages already installed"; return; fi
  log "installing: $(echo $missing | tr '\n' ' ')"
  if [ ! -f /var/lib/apt/archlift-updated ]; then
    apt-get update -qq
    touch /var/lib/apt/archlift-updated
  fi
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  log "packages installed"
}

BUSYBOX_DIR=/var/cache/archlift/busybox-static
fetch_busybox_debs() {
  # Debian's busybox-static for both architectures: the seed of every local
  # two-platform base image (no public registry is reachable here).
  if ls "$BUSYBOX_DIR"/busybox-static_*_amd64.deb "$BUSYBOX_DIR"/busybox-static_*_arm64.deb >/dev/null 2>&1; then
    log "busybox-static debs present in $BUSYBOX_DIR"; return
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
    log "added the arm64 dpkg architecture"
  fi
  mkdir -p "$BUSYBOX_DIR"
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

configure_docker() {
  mkdir -p /etc/docker
  local want='{"features":{"containerd-snapshotter":true}}'
  if [ -f "$DAEMON_JSON" ] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("features",{}).get("containerd-snapshotter") else 1)' "$DAEMON_JSON"; then
    log "dockerd already uses the containerd image store"
  else
    echo "$want" >"$DAEMON_JSON"
    log "wrote $DAEMON_JSON (containerd image store)"
    RESTART_DOCKERD=1
  fi
}

start_dockerd() {
  if docker info >/dev/null 2>&1 && [ "${RESTART_DOCKERD:-0}" = 0 ]; then
    log "dockerd running"
  else
    if pgrep -x dockerd >/dev/null; then
      log "restarting dockerd"; pkill -x dockerd || true
      for _ in $(seq 1 30); do pgrep -x dockerd >/dev/null || break; sleep 1; done
    fi
    setsid /usr/sbin/dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$DOCKERD_LOG" >&2; die "dockerd did not start (log: $DOCKERD_LOG)"; }
    log "started dockerd (log: $DOCKERD_LOG)"
  fi
}

check() {
  local fail=0
  for c in docker docker-registry oras skopeo cosign htpasswd openssl git qemu-aarch64-static; do
    command -v "$c" >/dev/null || { echo "[setup-host] missing command: $c" >&2; fail=1; }
  done
  docker buildx version >/dev/null 2>&1 || { echo "[setup-host] docker buildx is not available" >&2; fail=1; }
  docker info --format '{{.DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter' \
    || { echo "[setup-host] dockerd does not use the containerd image store" >&2; fail=1; }
  docker buildx inspect 2>/dev/null | grep -q 'linux/arm64' \
    || { echo "[setup-host] the buildx builder does not list linux/arm64 (QEMU binfmt)" >&2; fail=1; }
  ls "$BUSYBOX_DIR"/busybox-static_*_arm64.deb >/dev/null 2>&1 || { echo "[setup-host] no arm64 busybox-static deb in $BUSYBOX_DIR" >&2; fail=1; }
  [ "$fail" = 0 ] || die "host is not ready"
  log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker buildx version | awk '{print "buildx", $2}'), $(oras version | awk '/Version/ {print "oras", $2; exit}')"
}

add_trixie_source
install_packages
fetch_busybox_debs
enable_binfmt
configure_docker
start_dockerd
check
