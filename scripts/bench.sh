#!/usr/bin/env bash
# make bench: measures, in one run on this machine and side by side, this server (on SQLite
# and on PostgreSQL, alone and as two instances behind HAProxy), openssl s_server (TLS 1.2,
# same certificate) and the crypto floor (openssl speed), and prints a table of ratios. Figures
# go to bench-results/ (JSON from ./bench, and the table as table.md). Needs PostgreSQL 15's
# binaries and haproxy, as the tests do.
#
# DURATION (seconds per measurement, default 10), CLIENTS (default 16) and CONNECTIONS (held
# at once in the idle run, default 10000) can be set in the environment.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
CONNECTIONS=${CONNECTIONS:-10000}
out="$top/bench-results"
mkdir -p "$out"
make --no-print-directory all >/dev/null

work=$(mktemp -d)
# Everything started in the background runs in a process group of its own (setsid), so that
# stopping the group stops a pipeline whole (s_server and the sleep that feeds it), not just
# the shell around it.
groups=()
start() { setsid "$@" & groups+=($!); }
cleanup() {
    for group in "${groups[@]}"; do kill -- "-$group" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
scripts/gencert.sh "$work/mycert.pem" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }
bench() { # NAME PORT PID ARGS...: one measurement, figures in $out/NAME.json
    local name=$1 port=$2 pid=$3; shift 3
    echo "== $name" >&2
    ./bench --cafile "$work/mycert.pem" -c "$CLIENTS" -d "$DURATION" --pid "$pid" \
        --json "$out/$name.json" "$@" 127.0.0.1 "$port" >&2
}

echo "== crypto floor (openssl speed, one core)" >&2
sign=$(openssl speed -seconds 3 -mr rsa2048 2>/dev/null | awk -F: '/^\+F2:/{print $4}')
x25519=$(openssl speed -seconds 3 -mr ecdhx25519 2>/dev/null | awk -F: '/^\+F5:/{print $4}')
# A full TLS 1.2 handshake costs the server one RSA-2048 signature and two X25519
# operations (its key share, then the shared secret).
floor_ms=$(python3 -c "print(1000/$sign + 2000/$x25519)")
# One hash on each core at once, as in the loaded server (a lone hash runs faster).
./bench --mode hash -c "$(nproc)" -d "$DURATION" --json "$out/hash.json" 127.0.0.1 1 >&2
# Mean CPU per hash (threads / rate), to compare with the server's mean CPU per operation.
hash_ms=$(python3 -c "print($(nproc) * 1000 / $(json "$out/hash.json" ops_per_second))")

echo "== this server" >&2
port=$(free_port)
# Every load comes from 127.0.0.1: lift the per-address cap with the total.
start sh -c 'cd "$1" && exec "$2/server" --demo --bind 127.0.0.1 --max-clients "$3" --max-per-address "$3" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 --db users.db "$4"' \
    sh "$work" "$top" $((CONNECTIONS + 1000)) "$port" >/dev/null 2>"$work/server.err"
server_pid=$!
sleep 1
bench ours-handshake "$port" "$server_pid" --mode full --handshake-only
bench ours-resumed "$port" "$server_pid" --mode resume --handshake-only
bench ours-full "$port" "$server_pid" --mode full
bench ours-session "$port" "$server_pid" --mode session
bench ours-login "$port" "$server_pid" --mode login
# A silent client next to the full load.
start python3 -c 'import socket,time,sys; s=socket.create_connection(("127.0.0.1", int(sys.argv[1]))); time.sleep(3600)' "$port"
silent=$!
bench ours-handshake-silent "$port" "$server_pid" --mode full --handshake-only
kill "$silent"
baseline_kib=$(grep VmRSS "/proc/$server_pid/status" | awk '{print $2}')
bench ours-idle "$port" "$server_pid" --mode idle --connections "$CONNECTIONS"

echo "== this server on PostgreSQL (a throwaway server on this machine)" >&2
. scripts/pg-throwaway.sh
pg_throwaway "$work"
pgport=$(free_port)
start "$top/server" --demo --bind 127.0.0.1 --cert "$work/mycert.pem" --db "$PG_URL" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 "$pgport" \
    >/dev/null 2>"$work/server-pg.err"
pg_server_pid=$!
sleep 1
bench pg-login "$pgport" "$pg_server_pid" --mode login
bench pg-session "$pgport" "$pg_server_pid" --mode session

echo "== two instances behind HAProxy (TCP mode, PROXY protocol v2)" >&2
fleet_ports=()
for name in one two; do
    fport=$(free_port)
    fleet_ports+=("$fport")
    mkdir -p "$work/$name"
    start sh -c 'cd "$1" && exec "$2/server" --bind 127.0.0.1 --cert "$3" \
        --proxy-protocol-from 127.0.0.1/32 --max-clients 5000 --max-per-address 5000 "$4"' \
        sh "$work/$name" "$top" "$work/mycert.pem" "$fport" >/dev/null 2>&1
done
hport=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 3s
    timeout client 60s
    timeout server 60s
frontend fleet
    bind 127.0.0.1:$hport
    default_backend instances
backend instances
    balance roundrobin
    default-server send-proxy-v2
    server one 127.0.0.1:${fleet_ports[0]}
    server two 127.0.0.1:${fleet_ports[1]}
CFG
start haproxy -db -f "$work/haproxy.cfg"
haproxy_pid=$!
sleep 1
bench fleet-handshake "$hport" "$haproxy_pid" --mode full --handshake-only

echo "== openssl s_server -tls1_2 (same certificate)" >&2
sport=$(free_port)
start sh -c 'sleep 100000 | openssl s_server -tls1_2 -quiet -accept "$1" -cert "$2" -key "$2"' \
    sh "$sport" "$work/mycert.pem" >/dev/null 2>&1
sleep 1
s_server_pid=$(pgrep -f "s_server -tls1_2 -quiet -accept $sport")
bench s_server-handshake "$sport" "$s_server_pid" --mode full --handshake-only

python3 - "$out" "$floor_ms" "$hash_ms" "$sign" "$x25519" "$baseline_kib" "$CONNECTIONS" "$CLIENTS" <<'PY' | tee "$out/table.md"
import json, sys
out, floor, hash_ms, sign, x25519, base_kib, conns, clients = sys.argv[1:]
floor, hash_ms, base_kib, conns = float(floor), float(hash_ms), float(base_kib), int(conns)
r = {n: json.load(open(f"{out}/{n}.json")) for n in [
    "ours-handshake", "ours-resumed", "ours-full", "ours-session", "ours-handshake-silent",
    "ours-idle", "s_server-handshake", "ours-login", "pg-login", "pg-session", "fleet-handshake"]}
cpu = lambda n: r[n]["server_cpu_ms_per_op"]
rate = lambda n: r[n]["ops_per_second"]
per_conn = (r["ours-idle"]["server_peak_rss_kib"] - base_kib) / max(r["ours-idle"]["held"], 1)
rows = [
    ("Server CPU per full TLS 1.2 handshake vs crypto floor", f"{cpu('ours-handshake'):.3f} ms vs {floor:.3f} ms", cpu("ours-handshake") / floor, "<= 1.15"),
    ("openssl s_server CPU per handshake vs crypto floor", f"{cpu('s_server-handshake'):.3f} ms vs {floor:.3f} ms", cpu("s_server-handshake") / floor, "(reference)"),
    (f"Full-handshake throughput, {clients} clients: ours vs s_server", f"{rate('ours-handshake'):.0f}/s vs {rate('s_server-handshake'):.0f}/s", rate("ours-handshake") / rate("s_server-handshake"), ">= 1.5"),
    ("Resumed vs full handshakes (ours), rate", f"{rate('ours-resumed'):.0f}/s vs {rate('ours-handshake'):.0f}/s", rate("ours-resumed") / rate("ours-handshake"), ">= 5"),
    ("Resumed vs full handshakes (ours), server CPU", f"{cpu('ours-resumed'):.3f} ms vs {cpu('ours-handshake'):.3f} ms", cpu("ours-handshake") / cpu("ours-resumed"), "(>= 5)"),
    (f"Persistent sessions, view, {clients} clients", f"{rate('ours-session'):.0f}/s, p99 {r['ours-session']['latency_ms']['p99']:.2f} ms", rate("ours-session") / 20000, ">= 1 (20,000/s), p99 < 5 ms"),
    (f"{conns} connections held, then each served", f"{r['ours-idle']['held']} held, {r['ours-idle']['operations']} served, {per_conn:.1f} KiB each", per_conn / 100, "<= 1 (100 KiB)"),
    ("Legacy exchange with login vs handshake floor + one PBKDF2", f"{cpu('ours-full'):.2f} ms vs {floor + hash_ms:.2f} ms", cpu("ours-full") / (floor + hash_ms), "<= 1.10"),
    (f"Logins (handshake, login, logout), {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-login'):.0f}/s vs {rate('ours-login'):.0f}/s", rate("pg-login") / rate("ours-login"), "(reference)"),
    (f"view on persistent sessions, {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-session'):.0f}/s vs {rate('ours-session'):.0f}/s, server CPU {cpu('pg-session'):.3f} vs {cpu('ours-session'):.3f} ms", rate("pg-session") / rate("ours-session"), "(reference)"),
    (f"Full handshakes, {clients} clients: through HAProxy to two instances vs one instance directly", f"{rate('fleet-handshake'):.0f}/s vs {rate('ours-handshake'):.0f}/s (HAProxy CPU {cpu('fleet-handshake'):.3f} ms per handshake)", rate("fleet-handshake") / rate("ours-handshake"), "(two instances share these two cores)"),
    ("Handshakes with a silent client held open vs without", f"{rate('ours-handshake-silent'):.0f}/s vs {rate('ours-handshake'):.0f}/s", rate("ours-handshake-silent") / rate("ours-handshake"), "~1.0"),
]
print(f"Crypto floor: RSA-2048 sign {float(sign):.0f}/s, X25519 {float(x25519):.0f}/s -> {floor:.3f} ms per handshake; PBKDF2-HMAC-SHA512 at 220,000 iterations: {hash_ms:.1f} ms\n")
print("| measure | figures | ratio | goal |\n|---|---|---|---|")
for name, figures, ratio, goal in rows:
    print(f"| {name} | {figures} | {ratio:.2f} | {goal} |")
errors = {n: d["errors"] for n, d in r.items() if d["errors"]}
print(f"\nErrors: {errors or 'none'}")
PY
