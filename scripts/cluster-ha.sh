#!/usr/bin/env bash
# make cluster-ha (or make cluster HA=1): make cluster with a database that survives losing its
# primary, for trying failover by hand: etcd, two PostgreSQL 15 nodes under Patroni (pg1 and
# pg2, synchronous replication), two server instances on the multi-host URL
#   postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/accounts?target_session_attrs=read-write
# sharing one session-ticket key, and HAProxy in front of them on port $PORT (8081), all in a
# temporary directory. It prints which node is the primary and the commands that kill it,
# hang it, resume it or switch over to the standby, and prints them again whenever the
# primary or the synchronous standby changes. Ctrl-C stops everything and removes what it made.
#
# Needs Debian's patroni and etcd-server, PostgreSQL 15's binaries (postgresql-15; PG_BIN=DIR
# for others), haproxy and curl. Run as root: etcd, Patroni and PostgreSQL run as the postgres
# user (PostgreSQL and Patroni refuse root), in a directory of its own.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
PORT=${PORT:-8081}
. scripts/fleet.sh

missing=()
command -v patroni >/dev/null && command -v patronictl >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd)
if [ ${#missing[@]} -gt 0 ]; then
    echo "cluster-ha: not installed: ${missing[*]} (apt-get install patroni etcd-server)" >&2
    exit 1
fi
# Patroni's etcd: section (below) needs python-etcd, which Debian's patroni pulls in.
/usr/bin/python3 -c 'import etcd' 2>/dev/null || {
    echo "cluster-ha: Patroni's etcd client is missing: apt-get install python3-etcd" >&2
    exit 1
}
command -v curl >/dev/null || { echo "cluster-ha: curl is missing (apt-get install curl)" >&2; exit 1; }
bin=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
for tool in initdb postgres pg_ctl pg_isready pg_basebackup pg_rewind psql; do
    [ -x "$bin/$tool" ] || {
        echo "cluster-ha: $bin/$tool is missing: apt-get install postgresql-15 (or set PG_BIN)" >&2
        exit 1
    }
done

fleet_begin cluster-ha

# As the postgres user when root. setpriv execs (runuser would stay the parent, so a signal
# to the PID we know would miss Patroni), and env -i keeps a user's own Python off the path:
# /usr/bin/patroni needs the system's /usr/bin/python3 and its modules.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$work"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
chmod 700 "$work"
pg_env=(env -i HOME="$work" PATH=/usr/bin:/bin)

# The PostgreSQL started by Patroni is in a session of its own, not in Patroni's process group:
# stop_store stops it (the clean-up in scripts/fleet.sh calls it, so it is defined before
# anything starts), Patroni first so that it does not start it again. Whatever else runs as
# postgres and names $work (a Patroni started again by hand, pg_rewind, pg_basebackup) goes too.
ours() { pgrep -u "$(stat -c %U "$work")" -f -- "$work/" || true; }
stop_store() {
    local name postmaster pids
    for name in pg1 pg2; do
        postmaster=$(head -n 1 "$work/$name/postmaster.pid" 2>/dev/null) || continue
        pids=$(pgrep -P "$postmaster")
        # shellcheck disable=SC2086 # one PID a word
        kill -CONT "$postmaster" $pids 2>/dev/null
    done
    pids=$(ours)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -CONT $pids 2>/dev/null
    pids=$(pgrep -f -- "patroni $work/pg[12].yml")
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
    for name in pg1 pg2; do
        [ -f "$work/$name/postmaster.pid" ] || continue
        "${as_pg[@]}" "$bin/pg_ctl" stop -D "$work/$name" -m immediate -w -t 10 >/dev/null 2>&1
    done
    pids=$(ours)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
}

mapfile -t ports < <(free_ports 6)
etcd_client=${ports[0]} etcd_peer=${ports[1]}
declare -A pg_port=([pg1]=${ports[2]} [pg2]=${ports[3]})
declare -A rest_port=([pg1]=${ports[4]} [pg2]=${ports[5]})
declare -A other=([pg1]=pg2 [pg2]=pg1)

# --enable-v2: Patroni talks to etcd through its v2 API (why: node_config).
start "${as_pg[@]}" "${pg_env[@]}" etcd --name e1 --data-dir "$work/etcd" --enable-v2=true \
    --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "e1=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1
etcd_healthy() {
    curl -fsS -m 1 "http://127.0.0.1:$etcd_client/health" 2>/dev/null | grep -q '"health":"true"'
}
wait_until 30 "etcd answering on $etcd_client" etcd_healthy

# node_config NAME: Patroni's configuration of node NAME, to $work/NAME.yml, from
# scripts/patroni-node.yml (which says why each setting).
node_config() {
    local name=$1
    sed -e "s|@NAME@|$name|g" -e "s|@REST@|${rest_port[$name]}|g" -e "s|@ETCD@|$etcd_client|g" \
        -e "s|@PORT@|${pg_port[$name]}|g" -e "s|@DIR@|$work|g" -e "s|@BIN@|$bin|g" \
        "$top/scripts/patroni-node.yml" >"$work/$name.yml"
}

# node_script NAME: $work/NAME.start, which starts node NAME's Patroni (as the postgres user)
# and writes its PID to $work/NAME.patroni.pid (exec keeps the PID). This script starts each
# node with it, and a node killed by hand comes back with it.
node_script() {
    local name=$1
    cat >"$work/$name.start" <<SH
#!/bin/sh
# Node $name of make cluster-ha: its Patroni, which starts and watches its PostgreSQL.
echo \$\$ >$work/$name.patroni.pid
exec ${as_pg[*]} ${pg_env[*]} patroni $work/$name.yml >>$work/$name.log 2>&1
SH
    chmod 755 "$work/$name.start"
}

# answers NAME ENDPOINT: whether node NAME's Patroni answers 200 on ENDPOINT (/primary on the
# leader, /sync on the synchronous standby). A hung node costs a second.
answers() { curl -fs -o /dev/null -m 1 "http://127.0.0.1:${rest_port[$1]}/$2"; }

for name in pg1 pg2; do
    node_config "$name"
    node_script "$name"
done

# pg1 first, so that it is the one that bootstraps; pg2 then copies it.
start "$work/pg1.start"
wait_until 120 "pg1 (Patroni) leading with PostgreSQL on ${pg_port[pg1]}" answers pg1 primary
wait_until 30 "PostgreSQL on ${pg_port[pg1]} accepting connections" \
    "$bin/pg_isready" -q -h 127.0.0.1 -p "${pg_port[pg1]}" -U postgres
"$bin/psql" -q -h 127.0.0.1 -p "${pg_port[pg1]}" -U postgres -c 'CREATE DATABASE accounts' >/dev/null
start "$work/pg2.start"
wait_until 120 "pg2 replicating as the synchronous standby" answers pg2 sync

db="postgres://postgres@127.0.0.1:${pg_port[pg1]},127.0.0.1:${pg_port[pg2]}/accounts?target_session_attrs=read-write"
fleet_start "$db"
cat <<MSG
cluster-ha: etcd on $etcd_client; PostgreSQL pg1 on ${pg_port[pg1]} (Patroni ${rest_port[pg1]}), pg2 on ${pg_port[pg2]} (Patroni ${rest_port[pg2]});
instances on ${instance_ports[0]} and ${instance_ports[1]} with --db $db;
HAProxy on 127.0.0.1:$PORT. The demo account aticle/123 exists. Try:
    ./client 127.0.0.1 $PORT
    ./client --portal 127.0.0.1 $PORT
Logs: $work/*.log. Ctrl-C stops it all.
MSG

# show_state PRIMARY SYNC: which node is the primary, and the commands for it with today's
# PIDs; SYNC is the synchronous standby, or none (the other node is down or catching up).
show_state() {
    local primary=$1 sync=$2 standby patroni postmaster takeover
    standby=${other[$primary]}
    takeover="$standby takes over after ~12 s"
    [ "$sync" != none ] || takeover="nothing takes over: $standby is not in sync"
    patroni=$(cat "$work/$primary.patroni.pid" 2>/dev/null || echo '?')
    postmaster=$(head -n 1 "$work/$primary/postmaster.pid" 2>/dev/null || echo '?')
    echo
    echo "$(date +%T) cluster-ha: the primary is $primary (PostgreSQL on ${pg_port[$primary]}): Patroni PID $patroni, postmaster PID $postmaster"
    patronictl -c "$work/$primary.yml" list 2>&1 || true
    if [ "$sync" = none ]; then
        echo "  $standby is not the synchronous standby (yet): it cannot take over"
        if ! kill -0 "$(cat "$work/$standby.patroni.pid" 2>/dev/null)" 2>/dev/null; then
            echo "  bring $standby back (it rejoins as a standby; pg_rewind if it was the primary):"
            echo "    setsid $work/$standby.start &"
        fi
    fi
    cat <<MSG
  kill it (a machine dying: Patroni, postmaster and backends; $takeover):
    kill -KILL $patroni $postmaster \$(pgrep -P $postmaster)
  hang its PostgreSQL only (open connections still answer, new ones wait; no failover):
    kill -STOP $postmaster
  hang the machine (Patroni, postmaster and backends: nothing answers, nothing is reset;
  $takeover):
    kill -STOP $patroni $postmaster \$(pgrep -P $postmaster)
  resume it after either hang (it steps down to a standby if $standby took over):
    kill -CONT $patroni $postmaster \$(pgrep -P $postmaster)
  switch over to $standby (refused unless it is the Sync Standby):
    patronictl -c $work/$primary.yml switchover --leader $primary --candidate $standby --force
  the cluster's state:
    patronictl -c $work/$primary.yml list
MSG
}

# Watch the nodes and say whenever the primary or the synchronous standby changes.
shown=
while :; do
    primary=none
    for name in pg1 pg2; do
        if answers "$name" primary; then primary=$name; break; fi
    done
    sync=none
    if [ "$primary" != none ] && answers "${other[$primary]}" sync; then sync=${other[$primary]}; fi
    if [ "$primary/$sync" != "$shown" ]; then
        shown=$primary/$sync
        if [ "$primary" = none ]; then
            echo "$(date +%T) cluster-ha: no node is the primary (Patroni promotes the standby ~12 s after losing the old one)"
        else
            show_state "$primary" "$sync"
        fi
    fi
    sleep 1
done
