#!/usr/bin/env bash
# Debian's chromium for the cockpit's browser test (tests/service/test_cockpit_browser.py).
#
#   bash .ci/chromium.sh        # installs the `chromium` package with apt-get if /usr/bin/chromium is missing
#
# Playwright (pip) drives this binary; nothing downloads a browser build of its own (no
# `playwright install`). Needs root to install; progress goes to stderr. Idempotent.
set -euo pipefail
log() { echo "chromium.sh: $*" >&2; }
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  log "chromium is not installed and installing it needs root (apt-get install chromium)"
  exit 1
fi
log "installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq chromium >&2
[[ -x /usr/bin/chromium ]] || { log "apt-get installed chromium but /usr/bin/chromium is missing"; exit 1; }
