#!/usr/bin/env bash
# Install the Debian packages of the real peers the interop tests drive.
#
# Idempotent: asks dpkg which packages are missing and runs apt-get only for
# those. Uses sudo only when not root. Services a package starts on install
# (kamailio would take 5060) are stopped and disabled: the tests run private
# instances on free ports.
set -euo pipefail

# Peer packages. libnginx-mod-stream puts TLS in front of nginx-rtmp for rtmps:// tests;
# chromium plays the WebRTC player page (driven by Playwright, never a downloaded browser).
PEER_PACKAGES=(kamailio kamailio-tls-modules sip-tester baresip-core baresip-ffmpeg baresip-gstreamer ffmpeg nginx
  libnginx-mod-rtmp libnginx-mod-stream chromium chromium-driver openssl)
# Programs that must be on PATH afterwards (the tests' require_binary names).
PEER_BINARIES=(kamailio sipp baresip ffmpeg ffprobe nginx chromium openssl)
# Services the packages above may start by themselves (add nginx with nginx).
PEER_SERVICES=(kamailio nginx)

log() { printf 'install-peers: %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  SUDO=(sudo)
fi

installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
for pkg in "${PEER_PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
# `make venv` runs `python3 -m venv`, which needs ensurepip (Debian: python3-venv).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && [[ $(command -v python3) == /usr/bin/* ]]; then
  missing+=(python3-venv)
fi

if ((${#missing[@]} == 0)); then
  log "all present: ${PEER_PACKAGES[*]}"
else
  log "installing: ${missing[*]}"
  if ((${#SUDO[@]})) && ! command -v sudo >/dev/null 2>&1; then
    log "not root and no sudo: install ${missing[*]} by hand" >&2
    exit 1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Stop and disable a packaged service. Both managers act on the service's own
# unit / pidfile only, never on the private instances tests run. CI containers
# often have no systemd (or no `service`): whatever is missing is skipped.
stop_service() {
  local svc=$1
  log "making sure service $svc is stopped and disabled"
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl stop "$svc" >/dev/null 2>&1 || true
    "${SUDO[@]}" systemctl disable --quiet "$svc" >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/$svc ]]; then
    "${SUDO[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    if command -v update-rc.d >/dev/null 2>&1; then
      "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  fi
}

# After an install (or always as root, where it costs no password prompt).
if ((${#missing[@]})) || ((${#SUDO[@]} == 0)); then
  for svc in "${PEER_SERVICES[@]}"; do
    if installed "$svc"; then
      stop_service "$svc"
    fi
  done
fi

for bin in "${PEER_BINARIES[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || { log "$bin still missing after install" >&2; exit 1; }
done
log "ok"
