#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need, if they are missing.
# Debian 12 / Ubuntu 22.04+; run as root or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have cc || need+=(build-essential)
have pkg-config || need+=(pkg-config)
have cmake || need+=(cmake)
# HiGHS (the scheduler's MILP solver) is built from source: cmake, a C++ compiler, libclang.
have c++ || need+=(g++)
pkg_installed libclang-dev || need+=(libclang-dev)
have curl || need+=(curl)
have node || need+=(nodejs)
have npm || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
pkg_installed fonts-noto-cjk || need+=(fonts-noto-cjk)
# GStreamer 1.22 for the classroom agent: headers for gstreamer-rs, and the plugins it uses
# (test sources, clock overlay from -x, vp8/x264/opus encoders, matroska, v4l2/pulse/alsa).
for p in libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
  gstreamer1.0-alsa gstreamer1.0-x gstreamer1.0-tools; do
  pkg_installed "$p" || need+=("$p")
done
# libopus for the load generator's teacher voice (the `opus` crate links it via pkg-config).
pkg_installed libopus-dev || need+=(libopus-dev)
# Janus, for the load generator's side-by-side run (it starts its own Janus in a network
# namespace it makes with iproute2; the packaged service is not used).
have janus || need+=(janus)
have ip || need+=(iproute2)
# Xvfb: a display for the test of courseware captured from the screen (ximagesrc).
have Xvfb || need+=(xvfb)
# Redis, the cluster's directory of nodes and rooms (tests and the demo start their own
# redis-server on a free port; the packaged service is not used).
[ -x /usr/bin/redis-server ] || need+=(redis-server)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
  if [[ " ${need[*]} " == *" janus "* ]] && have systemctl; then
    $SUDO systemctl disable --now janus >/dev/null 2>&1 || true
  fi
  if [[ " ${need[*]} " == *" redis-server "* ]] && have systemctl; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

if ! have cargo; then
  echo "Rust is missing: install it with rustup (https://rustup.rs), rustc 1.95 or newer" >&2
  exit 1
fi

# Front-end test dependencies: playwright-core (drives Debian's chromium, never downloads one) and
# ical.js (parses the timetable's iCalendar export in its test).
if [ ! -d web/node_modules/playwright-core ] || [ ! -d web/node_modules/ical.js ]; then
  (cd web && npm ci --no-audit --no-fund)
fi
