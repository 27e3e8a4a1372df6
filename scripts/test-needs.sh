#!/usr/bin/env bash
# make test's first step, before anything is built: the programs the tests run for real.
# What is missing is installed, as root, from Debian's packages (without starting their
# services: scripts/apt-install.sh). Anyone else gets one line naming the exact apt-get
# command, and make test stops at once instead of failing tests one by one minutes later.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin:/usr/lib/postgresql/15/bin"
. scripts/apt-install.sh
trap 'if [ -n "$apt_policy_added" ]; then rm -f "$apt_policy_added"; fi' EXIT

# missing: the packages of the programs not on the PATH, one a line, each once.
missing() {
    local program package
    while read -r program package; do
        command -v "$program" >/dev/null || echo "$package"
    done <<'NEEDS' | awk '!seen[$0]++'
python3 python3
gcc gcc
initdb postgresql-15
postgres postgresql-15
haproxy haproxy
pgbouncer pgbouncer
patroni patroni
patronictl patroni
etcd etcd-server
sslscan sslscan
NEEDS
}

mapfile -t packages < <(missing)
[ ${#packages[@]} -eq 0 ] && exit 0
apt_need "make test" "${packages[@]}"
mapfile -t packages < <(missing)
if [ ${#packages[@]} -gt 0 ]; then
    echo "make test: apt-get installed, yet the programs of ${packages[*]} are missing" >&2
    exit 1
fi
