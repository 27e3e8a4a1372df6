# shellcheck shell=bash
# Sourced by scripts/bench.sh, scripts/test-needs.sh and scripts/tls-audit.sh: Debian
# packages installed for a script, as root, without starting their services.
#
# apt_install_quietly LOG PACKAGE...: installs the PACKAGEs with apt-get (again after an
# update if the first try fails), its output to LOG, shown if it fails. While it runs, a
# policy-rc.d that refuses every start (if the machine has none) keeps a package's service
# (nginx's on port 80, etcd's) from starting; it is removed afterwards, and its path is in
# apt_policy_added meanwhile, for the caller's clean-up if the script is stopped then.
apt_policy_added=
apt_install_quietly() {
    local log=$1 status=0
    shift
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        apt_policy_added=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# scripts/apt-install.sh: no service starts while it installs\nexit 101\n' \
            >"$apt_policy_added"
        chmod 755 "$apt_policy_added"
    fi
    {
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" \
            || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; }
    } >"$log" 2>&1 || status=$?
    if [ -n "$apt_policy_added" ]; then rm -f "$apt_policy_added"; apt_policy_added=; fi
    [ "$status" -eq 0 ] || cat "$log" >&2
    return "$status"
}

# apt_need WHO PACKAGE...: installs the PACKAGEs as root, saying so on stderr as WHO; anyone
# else gets one line naming the apt-get command that would (which, run by hand, also starts
# the packages' services: the tests and benchmarks start their own, on ports of their own),
# and a failure.
apt_need() {
    local who=$1 log status=0
    shift
    if [ "$(id -u)" -ne 0 ]; then
        echo "$who: missing $*: run sudo apt-get install $*" >&2
        return 1
    fi
    echo "$who: installing $* (apt-get)" >&2
    log=$(mktemp)
    apt_install_quietly "$log" "$@" || status=$?
    rm -f "$log"
    [ "$status" -eq 0 ] || echo "$who: could not install $* (apt-get's output is above)" >&2
    return "$status"
}
