#!/usr/bin/env bash
# The conformance suite's Vercel AI SDK client runs on Debian's Node.js (20 or newer) and npm.
set -euo pipefail
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's nodejs and npm for the conformance suite ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  exit 0
fi
echo "ERROR: node and npm are missing; install them with: sudo apt-get install -y nodejs npm" >&2
exit 1
