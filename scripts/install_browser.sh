#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/e2e), from Debian's packages: /usr/bin/chromium.
# Idempotent and quiet: does nothing when it is already installed. Never downloads a browser build
# (`playwright install` cannot reach its CDN here); playwright-python drives this one.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_browser.sh: run as root or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null || { echo "install_browser.sh: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
echo "installing chromium (Debian package) ..."
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
"$CHROMIUM" --version 2>/dev/null | head -1 || { echo "install_browser.sh: $CHROMIUM missing after install" >&2; exit 1; }
