#!/usr/bin/env bash
# Writes a TLS session-ticket key for `server --ticket-key-file` (./ticket.key by default):
# 80 random bytes from `openssl rand 80`, read as nginx reads its 80-byte
# ssl_session_ticket_key files (16-byte name | 32-byte HMAC key | 32-byte AES-256 key), mode
# 0600. Servers given the same file resume each other's TLS sessions.
#
# Usage: scripts/ticketkey.sh [FILE]     FORCE=1 replaces an existing FILE.
# The new file replaces the old in one rename, so a server rereading it never sees half a key.
set -euo pipefail

out=${1:-ticket.key}
if [ -e "$out" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "$out exists; keeping it (FORCE=1 makes a new one)"
    exit 0
fi

# Only the owner may read the key, from the first byte written.
umask 077
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if ! log=$(openssl rand -out "$tmp" 80 2>&1) || [ "$(wc -c <"$tmp")" -ne 80 ]; then
    echo "$log" >&2
    echo "ticketkey: openssl rand failed" >&2
    exit 1
fi
chmod 600 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "wrote $out (a session-ticket key: 80 random bytes)"
