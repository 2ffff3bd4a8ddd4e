#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use is up; start the local cluster if needed; fail loudly.
set -euo pipefail
host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | head -n 1)
  echo "PostgreSQL is down; starting cluster $version/main ..."
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h "$host" -p "$port" && exit 0
    sleep 1
  done
fi
echo "ERROR: PostgreSQL is not reachable at $host:$port and could not be started." >&2
echo "       The tests run on PostgreSQL too and never skip it; start it and retry." >&2
exit 1
