#!/usr/bin/env bash
# Starts (creating it the first time) a scratch PostgreSQL cluster for Plait's tests, from
# Debian's packages, listening on localhost only, and prints its URL. Tests create their own
# databases in it. Usage: export PLAIT_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)
set -euo pipefail

port="${PLAIT_TEST_POSTGRES_PORT:-55432}"
cluster=plait-test
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if [ -z "$version" ]; then
  echo "PostgreSQL is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if ! $sudo pg_lsclusters -h | awk '{print $2}' | grep -qx "$cluster"; then
  # Trust on loopback: a scratch cluster for tests, reachable only from this machine.
  $sudo pg_createcluster "$version" "$cluster" -p "$port" \
    -o listen_addresses=localhost -- --auth=trust >/dev/null
fi
if ! $sudo pg_lsclusters -h | awk -v c="$cluster" '$2 == c {print $4}' | grep -qx online; then
  # To stderr: only the URL may reach stdout, and pg_ctlcluster prints notes there
  # ("Removed stale pid file." after a reboot) that would end up inside the caller's URL.
  $sudo pg_ctlcluster "$version" "$cluster" start >&2
fi
for _ in $(seq 50); do
  if pg_isready -q -h 127.0.0.1 -p "$port"; then
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    exit 0
  fi
  sleep 0.2
done
echo "PostgreSQL cluster $cluster did not come up on port $port" >&2
exit 1
