#!/usr/bin/env bash
# make test's first step: the programs the tests run for real. Patroni and etcd (the failover
# tests) are installed when missing, as root, from Debian's packages (without starting their
# services: scripts/apt-install.sh); anything else missing is named with its package and
# stops make test at once, instead of failing tests one by one minutes later (.ci/run
# installs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin:/usr/lib/postgresql/15/bin"
. scripts/apt-install.sh
trap 'if [ -n "$apt_policy_added" ]; then rm -f "$apt_policy_added"; fi' EXIT

# missing: the "program (package)" pairs not on the PATH, one a line.
missing() {
    local program package
    while read -r program package; do
        command -v "$program" >/dev/null || echo "$program ($package)"
    done <<'NEEDS'
initdb postgresql-15
haproxy haproxy
pgbouncer pgbouncer
patroni patroni
patronictl patroni
etcd etcd-server
gcc gcc
NEEDS
}

if missing | grep -q '(patroni)\|(etcd-server)' && [ "$(id -u)" -eq 0 ]; then
    echo "make test: installing patroni and etcd-server (apt-get), for the failover tests" >&2
    log=$(mktemp)
    apt_install_quietly "$log" patroni etcd-server \
        || { rm -f "$log"; echo "make test: could not install patroni and etcd-server" >&2; exit 1; }
    rm -f "$log"
fi
mapfile -t absent < <(missing)
if [ ${#absent[@]} -gt 0 ]; then
    echo "make test: missing: ${absent[*]}" >&2
    echo "make test: install them (apt-get install <package>; .ci/run does it as root)" >&2
    exit 1
fi
