#!/usr/bin/env bash
# make cluster: the scale-out set-up on one machine, for trying it: a throwaway PostgreSQL
# database, two server instances sharing it and one session-ticket key, and HAProxy in front
# (TCP mode, PROXY protocol v2, health checks) on port $PORT (8081), so that
#   ./client 127.0.0.1 8081
# reaches the fleet. Ctrl-C stops everything and removes what it made. make cluster HA=1
# (scripts/cluster-ha.sh) puts a Patroni-managed primary and standby behind it instead.
#
# Needs PostgreSQL 15's binaries (initdb, postgres: Debian's postgresql-15) and haproxy
# (Debian's haproxy); run as root, PostgreSQL runs as the postgres user.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PORT=${PORT:-8081}
. scripts/fleet.sh
fleet_begin cluster

# PostgreSQL (scripts/pg-throwaway.sh).
. scripts/pg-throwaway.sh
pg_throwaway "$work"
db=$PG_URL

fleet_start "$db"
cat <<MSG
cluster: PostgreSQL at $db, instances on ${instance_ports[0]} and ${instance_ports[1]},
HAProxy on 127.0.0.1:$PORT. The demo account aticle/123 exists. Try:
    ./client 127.0.0.1 $PORT
    ./client --portal 127.0.0.1 $PORT
Ctrl-C stops it all.
MSG
wait
