#!/usr/bin/env bash
# The Debian packages of `make stack` (python -m devstack stack) and tests/stack: PostgreSQL and Redis.
# Idempotent and quiet, like scripts/install_browser.sh: does nothing when both are installed. Only the
# binaries are used (the stack runs its own cluster and its own redis-server under .stack/); the
# distribution's services are not needed and are left as the packages set them up.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_redis() { command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ]; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_stack.sh: run as root or install sudo" >&2; exit 1; }
    SUDO="sudo"
fi
command -v apt-get >/dev/null || { echo "install_stack.sh: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
echo "installing ${missing[*]} (Debian packages) ..."
$SUDO apt-get update -qq >/dev/null
# policy-rc.d-free containers may try to start the services; their failure to do so is harmless here
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_postgres || { echo "install_stack.sh: no /usr/lib/postgresql/*/bin/initdb after install" >&2; exit 1; }
have_redis || { echo "install_stack.sh: no redis-server after install" >&2; exit 1; }
