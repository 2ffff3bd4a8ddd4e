#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright's own download does not work here).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "ERROR: /usr/bin/chromium is missing; install it with: sudo apt-get install -y chromium" >&2
exit 1
