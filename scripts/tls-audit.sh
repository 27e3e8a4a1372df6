#!/usr/bin/env bash
# Starts the server on a free loopback port with a fresh certificate and scans it with sslscan
# (installed from Debian's packages if missing, as root). Fails if the server offers any protocol but
# TLS 1.2, any cipher suite without forward secrecy (ECDHE/DHE) or without AEAD (GCM or
# ChaCha20-Poly1305), TLS compression, or insecure renegotiation.
#
# Usage: scripts/tls-audit.sh [SERVER-BINARY]     (default: target/release/server)
#        SERVER_ARGS="..." adds options to the server's command line, SSLSCAN_ARGS="..." to
#        sslscan's.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
server=${1:-$top/target/release/server}
[ -x "$server" ] || { echo "tls-audit: no server binary at $server (run make first)" >&2; exit 1; }
server=$(realpath "$server")

. "$top/scripts/apt-install.sh"
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
    if [ -n "$apt_policy_added" ]; then rm -f "$apt_policy_added"; fi
}
trap cleanup EXIT

if ! command -v sslscan >/dev/null; then
    apt_need tls-audit sslscan
    command -v sslscan >/dev/null \
        || { echo "tls-audit: apt-get installed sslscan, yet it is missing" >&2; exit 1; }
fi

"$top/scripts/gencert.sh" "$work/mycert.pem" >/dev/null
# shellcheck disable=SC2086 # SERVER_ARGS is a list of options
(cd "$work" && exec "$server" -v --bind 127.0.0.1 --db users.db ${SERVER_ARGS:-} 0) \
    >"$work/server.out" 2>"$work/server.err" &
pid=$!
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/server.err")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.err" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "tls-audit: the server did not start" >&2; exit 1; }

# shellcheck disable=SC2086 # SSLSCAN_ARGS is a list of options
scan=$(timeout 300 sslscan --no-colour ${SSLSCAN_ARGS:-} "127.0.0.1:$port")
echo "$scan" | sed -n '/SSL\/TLS Protocols:/,/Server Key Exchange/p'

failures=()
for protocol in SSLv2 SSLv3 TLSv1.0 TLSv1.1 TLSv1.3; do
    if echo "$scan" | grep -Eq "^$protocol +enabled"; then
        failures+=("$protocol is offered")
    fi
done
echo "$scan" | grep -Eq '^TLSv1\.2 +enabled' || failures+=("TLS 1.2 is not offered")
suites=$(echo "$scan" | awk '/^(Preferred|Accepted) /{print $5}')
[ -n "$suites" ] || failures+=("no cipher suite found in the scan")
for suite in $suites; do
    case "$suite" in
        ECDHE-*GCM*|DHE-*GCM*|ECDHE-*CHACHA20-POLY1305|DHE-*CHACHA20-POLY1305) ;;
        *) failures+=("cipher suite $suite lacks forward secrecy or AEAD") ;;
    esac
done
if echo "$scan" | grep -q "^Compression enabled"; then
    failures+=("TLS compression is enabled")
fi
if echo "$scan" | grep -qi "^Insecure session renegotiation supported"; then
    failures+=("insecure renegotiation is supported")
fi

if [ ${#failures[@]} -gt 0 ]; then
    printf 'tls-audit: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "tls-audit: passed: TLS 1.2 only, $(echo "$suites" | wc -w) forward-secret AEAD suites, no compression, no insecure renegotiation"
