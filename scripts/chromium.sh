#!/usr/bin/env bash
# Debian's Chromium for the browser tests (internal/browsertest), without Docker.
#
# Usage: scripts/chromium.sh [install|path]
#
#   install  (the default) install the Debian packages chromium and
#            fonts-liberation with apt-get if /usr/bin/chromium is missing.
#            Quiet and a no-op when it is already there. `apt-get update`
#            runs only when apt does not know the package yet, or when an
#            install from the current package lists fails (stale lists).
#   path     print the browser the tests will use (as internal/browsertest
#            finds it); exit 1 if there is none.
#
# Environment:
#   SETTLE_CHROMIUM    a browser binary to use instead; when it is set and
#                      executable, nothing is installed.
#   SETTLE_LOCAL_DIR   where chromium-apt.log goes (default: <repo>/.local/services)
#
# fonts-liberation (metric-compatible Arial, Times and Courier) is a
# Recommends of chromium that --no-install-recommends would leave out; with
# it, page screenshots do not depend on whatever fonts the machine has.
# Chromium runs headless with --no-sandbox, so chromium-sandbox is not needed.
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
CHROMIUM_BIN=/usr/bin/chromium
PACKAGES=(chromium fonts-liberation)

log() { printf 'chromium: %s\n' "$*" >&2; }
die() {
  printf 'chromium: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# The browser the tests will use, in internal/browsertest's order; empty if none.
find_browser() {
  if [ -n "${SETTLE_CHROMIUM:-}" ] && [ -x "$SETTLE_CHROMIUM" ]; then
    printf '%s\n' "$SETTLE_CHROMIUM"
  elif [ -x "$CHROMIUM_BIN" ]; then
    printf '%s\n' "$CHROMIUM_BIN"
  else
    command -v chromium 2>/dev/null || true
  fi
}

# Does apt have an installation candidate for PACKAGE in its current lists?
apt_knows() { # PACKAGE
  local c
  c=$(apt-cache policy -- "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

cmd_install() {
  if [ -n "${SETTLE_CHROMIUM:-}" ]; then
    [ -x "$SETTLE_CHROMIUM" ] || die "SETTLE_CHROMIUM=$SETTLE_CHROMIUM is not an executable file"
    return 0
  fi
  [ -x "$CHROMIUM_BIN" ] && return 0

  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      die "$CHROMIUM_BIN is missing; install it as root: apt-get install ${PACKAGES[*]}"
    fi
    if [ -t 0 ]; then
      sudo=(sudo)
    else
      sudo=(sudo -n)
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "$CHROMIUM_BIN is missing and there is no apt-get; set SETTLE_CHROMIUM"

  mkdir -p -- "$LOCAL_DIR"
  local apt_log=$LOCAL_DIR/chromium-apt.log start=$SECONDS p need_update=0
  log "installing ${PACKAGES[*]} (apt-get output in $apt_log)"
  # Wait for a dpkg lock held by another install (services.sh, unattended
  # upgrades) rather than failing at once.
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
    -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  for p in "${PACKAGES[@]}"; do
    apt_knows "$p" || need_update=1
  done
  : >"$apt_log"
  if [ "$need_update" = 1 ] && ! "${apt[@]}" update </dev/null >>"$apt_log" 2>&1; then
    tail -n 30 -- "$apt_log" >&2 || true
    die "apt-get update failed"
  fi
  if ! "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}" </dev/null >>"$apt_log" 2>&1; then
    # The lists may name package versions the mirror no longer has.
    if [ "$need_update" = 1 ] ||
      ! { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${PACKAGES[@]}"; } \
        </dev/null >>"$apt_log" 2>&1; then
      tail -n 30 -- "$apt_log" >&2 || true
      die "apt-get install ${PACKAGES[*]} failed"
    fi
  fi
  [ -x "$CHROMIUM_BIN" ] || die "chromium installed but $CHROMIUM_BIN is missing"
  log "installed $("$CHROMIUM_BIN" --version 2>/dev/null || echo chromium) in $((SECONDS - start))s"
}

cmd_path() {
  local b
  b=$(find_browser)
  [ -n "$b" ] || return 1
  printf '%s\n' "$b"
}

main() {
  case ${1:-install} in
    install) cmd_install ;;
    path) cmd_path ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
