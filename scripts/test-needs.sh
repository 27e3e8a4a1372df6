#!/usr/bin/env bash
# make test's first step: the programs the tests run for real, each named with the Debian
# package to install when it is missing, so that a machine without one stops at once instead
# of failing tests one by one minutes later (.ci/run installs them all).
set -euo pipefail
PATH="$PATH:/usr/sbin:/usr/lib/postgresql/15/bin"
missing=()
# program package
while read -r program package; do
    command -v "$program" >/dev/null || missing+=("$program ($package)")
done <<'NEEDS'
initdb postgresql-15
haproxy haproxy
pgbouncer pgbouncer
patroni patroni
patronictl patroni
etcd etcd-server
gcc gcc
NEEDS
if [ ${#missing[@]} -gt 0 ]; then
    echo "make test: missing: ${missing[*]}" >&2
    echo "make test: install them (apt-get install <package>; .ci/run does it as root)" >&2
    exit 1
fi
