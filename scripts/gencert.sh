#!/usr/bin/env bash
# Writes a self-signed certificate and its private key into one PEM file (./mycert.pem by
# default), without prompts: the original's documented
#   openssl req -x509 -nodes -days 365 -newkey rsa:1024 -keyout mycert.pem -out mycert.pem
# with a key OpenSSL 3 accepts (RSA 2048), CN=localhost and a subjectAltName for localhost,
# 127.0.0.1 and ::1, so clients can verify it by name or address.
#
# With `ec`, the key is ECDSA on P-256 (prime256v1) instead, with the same subject and names:
# the second certificate of a server given `--cert mycert.pem --cert mycert-ec.pem`, which
# OpenSSL then chooses between for each client (`make cert KEY=ec` writes mycert-ec.pem).
#
# With a NAME after the key type, the certificate is a client's instead: CN=NAME, no
# addresses, for TLS client authentication: what a user presents with `client --cert` to
# enroll it and then sign in with it (`make client-cert NAME=alice` writes alice.pem). Only
# its key identifies it to the server; the name is for people.
#
# Usage: scripts/gencert.sh [FILE] [rsa|ec] [NAME]    FORCE=1 replaces an existing FILE.
set -euo pipefail

usage="usage: scripts/gencert.sh [FILE] [rsa|ec] [NAME] (FORCE=1 replaces an existing FILE)"
if [ $# -gt 3 ]; then
    echo "gencert: expects at most a file, a key type and a client's name; $usage" >&2
    exit 2
fi
out=${1:-mycert.pem}
kind=${2:-rsa}
client=${3:-}
if [ -n "$client" ] && ! [[ "$client" =~ ^[A-Za-z0-9._-]{1,64}$ ]]; then
    echo "gencert: \"$client\" is not a name: letters, digits, '.', '_' and '-' only; $usage" >&2
    exit 2
fi
case "$out" in
    rsa | ec)
        # `gencert.sh ec` would otherwise write an RSA certificate into a file named "ec".
        echo "gencert: \"$out\" is a key type, not a file; $usage" >&2
        exit 2
        ;;
esac
case "$kind" in
    rsa)
        newkey=(-newkey rsa:2048)
        described="" # the line `make cert` has always printed
        ;;
    ec)
        newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
        described=" ECDSA P-256"
        ;;
    *)
        echo "gencert: \"$kind\" is not a key type: rsa (the default) or ec; $usage" >&2
        exit 2
        ;;
esac

if [ -e "$out" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "$out exists; keeping it (FORCE=1 makes a new one)"
    exit 0
fi

# Only the owner may read the key, from the first byte written.
umask 077
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ -n "$client" ]; then
    identity=(-subj "/CN=$client" -addext "extendedKeyUsage=clientAuth")
    described="$described client certificate"
else
    identity=(-subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1")
fi
if ! log=$(openssl req -x509 -nodes -days 365 "${newkey[@]}" \
        -keyout "$tmp" -out "$tmp" "${identity[@]}" 2>&1); then
    echo "$log" >&2
    echo "gencert: openssl req failed" >&2
    exit 1
fi
chmod 600 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "wrote $out (self-signed$described, CN=${client:-localhost}, valid 365 days)"
if [ -n "$client" ]; then
    echo "enroll it once logged in: ./client --cert $out HOST PORT enroll --user $client"
    echo "then sign in with it:     ./client --cert $out HOST PORT view --user $client --cert-login"
fi
