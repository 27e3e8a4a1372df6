#!/usr/bin/env bash
# Writes a self-signed certificate and its private key into one PEM file (./mycert.pem by
# default), without prompts: the original's documented
#   openssl req -x509 -nodes -days 365 -newkey rsa:1024 -keyout mycert.pem -out mycert.pem
# with a key OpenSSL 3 accepts (RSA 2048), CN=localhost and a subjectAltName for localhost,
# 127.0.0.1 and ::1, so clients can verify it by name or address.
#
# Usage: scripts/gencert.sh [FILE]     FORCE=1 replaces an existing FILE.
set -euo pipefail

out=${1:-mycert.pem}
if [ -e "$out" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "$out exists; keeping it (FORCE=1 makes a new one)"
    exit 0
fi

# Only the owner may read the key, from the first byte written.
umask 077
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if ! log=$(openssl req -x509 -nodes -days 365 -newkey rsa:2048 \
        -keyout "$tmp" -out "$tmp" \
        -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" 2>&1); then
    echo "$log" >&2
    echo "gencert: openssl req failed" >&2
    exit 1
fi
chmod 600 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "wrote $out (self-signed, CN=localhost, valid 365 days)"
