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

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! have cargo; then
  echo "Rust is missing: install it with rustup (https://rustup.rs), rustc 1.95 or newer" >&2
  exit 1
fi

# Front-end test dependencies (playwright-core only; it drives Debian's chromium, never downloads one).
if [ ! -d web/node_modules/playwright-core ]; then
  (cd web && npm ci --no-audit --no-fund)
fi
