#!/usr/bin/env bash
# make cluster: the scale-out set-up on one machine, for trying it: a throwaway PostgreSQL
# database, two server instances sharing it and one session-ticket key, and HAProxy in front
# (TCP mode, PROXY protocol v2, health checks) on port $PORT (8081), so that
#   ./client 127.0.0.1 8081
# reaches the fleet. Ctrl-C stops everything and removes what it made.
#
# Needs PostgreSQL 15's binaries (initdb, postgres: Debian's postgresql-15) and haproxy
# (Debian's haproxy); run as root, PostgreSQL runs as the postgres user.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PORT=${PORT:-8081}
command -v haproxy >/dev/null || { echo "cluster: haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
make --no-print-directory all cert >/dev/null

work=$(mktemp -d)
groups=()
start() { setsid "$@" & groups+=($!); }
cleanup() {
    trap - INT TERM EXIT
    for group in "${groups[@]}"; do kill -- "-$group" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    echo "cluster: stopped, and $work removed"
}
trap cleanup INT TERM EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL (scripts/pg-throwaway.sh).
. scripts/pg-throwaway.sh
pg_throwaway "$work"
db=$PG_URL

# Two instances, one ticket key, the PROXY protocol required from HAProxy (127.0.0.1).
scripts/ticketkey.sh "$work/ticket.key" >/dev/null
ports=()
for name in one two; do
    port=$(free_port)
    ports+=("$port")
    demo=()
    [ "$name" = one ] && demo=(--demo)
    start "$top/server" "${demo[@]}" --bind 127.0.0.1 --db "$db" --cert "$top/mycert.pem" \
        --ticket-key-file "$work/ticket.key" --proxy-protocol-from 127.0.0.1/32 "$port" \
        > >(sed -u "s/^/[$name] /") 2> >(sed -u "s/^/[$name] /" >&2)
    sleep 0.5
done

cat >"$work/haproxy.cfg" <<CFG
defaults
    mode tcp
    timeout connect 3s
    timeout client 5m
    timeout server 5m
    retries 2
    option redispatch

frontend fleet
    bind 127.0.0.1:$PORT
    default_backend instances

backend instances
    balance roundrobin
    default-server send-proxy-v2 check-send-proxy check inter 1s fall 2 rise 1
    tcp-check connect default linger
    server one 127.0.0.1:${ports[0]}
    server two 127.0.0.1:${ports[1]}
CFG
start haproxy -db -f "$work/haproxy.cfg"
sleep 0.5
cat <<MSG
cluster: PostgreSQL at $db, instances on ${ports[0]} and ${ports[1]},
HAProxy on 127.0.0.1:$PORT. The demo account aticle/123 exists. Try:
    ./client 127.0.0.1 $PORT
    ./client --portal 127.0.0.1 $PORT
Ctrl-C stops it all.
MSG
wait
