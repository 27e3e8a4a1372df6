#!/usr/bin/env bash
# make bench: measures, in one run on this machine and side by side, this server (on SQLite
# and on PostgreSQL, alone, with an ECDSA certificate and as two instances behind HAProxy),
# nginx (TLS termination in its stream module, 2 workers) and openssl s_server (TLS 1.2, the
# same certificate), and the crypto floor (openssl speed), and prints one table of ratios.
# Figures go to bench-results/ (JSON from ./bench, and the table as table.md). Needs
# PostgreSQL 15's binaries and haproxy, as the tests do; installs Debian's nginx-light and
# libnginx-mod-stream when nginx or its stream module is missing (as root, with apt-get).
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

work=$(mktemp -d)
# Everything started in the background runs in a process group of its own (setsid), so that
# stopping the group stops a pipeline whole (s_server and the sleep that feeds it; nginx's
# master and its workers), not just the process started.
groups=()
start() { setsid "$@" & groups+=($!); }
policy_added=
cleanup() {
    for group in "${groups[@]}"; do kill -- "-$group" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    if [ -n "$policy_added" ]; then rm -f "$policy_added"; fi
}
trap cleanup EXIT
fail() { echo "bench: $*" >&2; exit 1; }
# running NAME PID LOG: fails, with what the process said, when it has stopped already.
running() { kill -0 "$2" 2>/dev/null || { cat "$3" >&2; fail "$1 did not start (its output is above)"; }; }

# nginx, for the peer run: Debian's nginx-light and its stream module, installed when missing.
# Installing the package may start a system nginx on port 80, which the bench does not use: a
# policy-rc.d that refuses every start (if the machine has none) keeps it from starting, and
# is removed afterwards.
nginx_stream=/usr/lib/nginx/modules/ngx_stream_module.so
nginx_bin() { PATH="$PATH:/usr/sbin" command -v nginx; }
if ! nginx_bin >/dev/null || [ ! -e "$nginx_stream" ]; then
    echo "== installing nginx-light and libnginx-mod-stream (apt-get)" >&2
    [ "$(id -u)" -eq 0 ] || fail "nginx or its stream module ($nginx_stream) is missing, and \
only root can install them: apt-get install nginx-light libnginx-mod-stream"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy_added=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# scripts/bench.sh: no service starts while it installs nginx\nexit 101\n' \
            >"$policy_added"
        chmod 755 "$policy_added"
    fi
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light libnginx-mod-stream; }
    if ! { apt_install || { apt-get update && apt_install; }; } >"$work/apt.log" 2>&1; then
        cat "$work/apt.log" >&2
        fail "could not install nginx-light and libnginx-mod-stream (apt-get's output is above)"
    fi
    if [ -n "$policy_added" ]; then rm -f "$policy_added"; policy_added=; fi
    nginx_bin >/dev/null && [ -e "$nginx_stream" ] \
        || fail "apt-get installed nginx-light and libnginx-mod-stream, yet nginx or $nginx_stream is missing"
fi
nginx=$(nginx_bin)

make --no-print-directory all >/dev/null
scripts/gencert.sh "$work/mycert.pem" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }
bench() { # NAME PORT "PID..." ARGS...: one measurement, figures in $out/NAME.json; the
    # server's CPU is that of every process listed (separated by spaces)
    local name=$1 port=$2 pid pids=(); shift 2
    for pid in $1; do pids+=(--pid "$pid"); done
    shift
    echo "== $name" >&2
    ./bench --cafile "$work/mycert.pem" -c "$CLIENTS" -d "$DURATION" "${pids[@]}" \
        --json "$out/$name.json" "$@" 127.0.0.1 "$port" >&2
}

cores=$(nproc)
echo "== crypto floor (openssl speed -multi $cores: every core at once)" >&2
# speed ALGORITHM TAG: the total rate of ALGORITHM with every core busy. Issue 13 defines
# the floor from `openssl speed -multi` on every core at once (-multi 2 on its 2-core
# machine), as the loaded server keeps every core busy and a lone core runs faster. With
# -multi N, openssl speed runs N copies at once, and its last line starting with +TAG is
# their total (the copies' own lines start with "Got:"). The copies count elapsed time, not
# CPU time (a lone `openssl speed` counts CPU time): other work on the machine slows them and
# so raises the floor, hence the load average printed with it. In -mr form: rsa2048 is +F2:index:bits:sign/s:verify/s,
# ecdsap256 +F4:index:bits:sign/s:verify/s, ecdhx25519 +F5:index:bits:ops/s:seconds per op,
# so the 4th field is the rate wanted in each.
speed() {
    local rate
    rate=$(openssl speed -seconds 3 -multi "$cores" -mr "$1" 2>/dev/null \
        | awk -F: -v tag="+$2:" 'index($0, tag) == 1 {print $4}')
    [ -n "$rate" ] || fail "openssl speed -multi $cores -mr $1 printed no +$2 line"
    echo "$rate"
}
load=$(cut -d' ' -f1 /proc/loadavg)
rsa_sign=$(speed rsa2048 F2)
ecdsa_sign=$(speed ecdsap256 F4)
x25519=$(speed ecdhx25519 F5)
# The rates of one core are the totals / $cores. A full TLS 1.2 handshake costs the server one
# signature (RSA-2048, or ECDSA P-256 with the ECDSA certificate) and two X25519 operations
# (its key share, then the shared secret).
floor_ms=$(python3 -c "print($cores * (1000/$rsa_sign + 2000/$x25519))")
ec_floor_ms=$(python3 -c "print($cores * (1000/$ecdsa_sign + 2000/$x25519))")
# One hash on each core at once, as in the loaded server (a lone hash runs faster).
./bench --mode hash -c "$cores" -d "$DURATION" --json "$out/hash.json" 127.0.0.1 1 >&2
# Mean CPU per hash (threads / rate), to compare with the server's mean CPU per operation.
hash_ms=$(python3 -c "print($cores * 1000 / $(json "$out/hash.json" ops_per_second))")

echo "== this server" >&2
port=$(free_port)
# Every load comes from 127.0.0.1: lift the per-address cap with the total.
start sh -c 'cd "$1" && exec "$2/server" --demo --bind 127.0.0.1 --max-clients "$3" --max-per-address "$3" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 --db users.db "$4"' \
    sh "$work" "$top" $((CONNECTIONS + 1000)) "$port" >/dev/null 2>"$work/server.err"
server_pid=$!
sleep 1
running "the server" "$server_pid" "$work/server.err"
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

echo "== this server with an RSA and an ECDSA certificate" >&2
scripts/gencert.sh "$work/mycert-ec.pem" ec >/dev/null
mkdir -p "$work/ecdsa"
ecport=$(free_port)
start sh -c 'cd "$1" && exec "$2/server" --bind 127.0.0.1 --cert "$3" --cert "$4" "$5"' \
    sh "$work/ecdsa" "$top" "$work/mycert.pem" "$work/mycert-ec.pem" "$ecport" \
    >/dev/null 2>"$work/server-ec.err"
ec_server_pid=$!
sleep 1
running "the server with two certificates" "$ec_server_pid" "$work/server-ec.err"
# The client's default cipher list puts the ECDSA suites first, so this server answers with
# its ECDSA certificate (the table checks the suite negotiated).
bench ours-ecdsa-handshake "$ecport" "$ec_server_pid" --cafile "$work/mycert-ec.pem" \
    --mode full --handshake-only

echo "== this server on PostgreSQL (a throwaway server on this machine)" >&2
. scripts/pg-throwaway.sh
pg_throwaway "$work"
pgport=$(free_port)
start "$top/server" --demo --bind 127.0.0.1 --cert "$work/mycert.pem" --db "$PG_URL" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 "$pgport" \
    >/dev/null 2>"$work/server-pg.err"
pg_server_pid=$!
sleep 1
running "the server on PostgreSQL" "$pg_server_pid" "$work/server-pg.err"
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
start haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
haproxy_pid=$!
sleep 1
running haproxy "$haproxy_pid" "$work/haproxy.log"
bench fleet-handshake "$hport" "$haproxy_pid" --mode full --handshake-only

echo "== nginx (stream module, TLS 1.2 termination, 2 workers, same certificate)" >&2
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CFG
# make bench's nginx: a private instance, every file it writes inside $work/nginx (a stream-only
# configuration has no temporary files; -e sends the log of start-up there too).
load_module $nginx_stream;
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
stream {
    server {
        listen 127.0.0.1:$nport ssl;
        ssl_certificate $work/mycert.pem;
        ssl_certificate_key $work/mycert.pem;
        ssl_protocols TLSv1.2;
        # Otherwise nginx's defaults, as ours: ssl_ciphers HIGH:!aNULL:!MD5, and the client's
        # order decides, as in ours and s_server (each peer negotiates the same suite with
        # ./bench: the table checks it); session tickets on (ours issues them too);
        # ssl_session_cache none (nothing kept per session; ours keeps OpenSSL's cache).
        #
        # After the handshake, "return" with an empty string ends the session at once:
        # close_notify, then close. nginx's cost is the handshake and the close, as ours with
        # ./bench --handshake-only; proxy_pass to a local sink would add a TCP connection to
        # an upstream, and its buffers, to every handshake.
        return "";
    }
}
CFG
start "$nginx" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
    >"$work/nginx/stderr" 2>&1
nginx_pid=$!
sleep 1
running nginx "$nginx_pid" "$work/nginx/error.log"
nginx_workers=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
[ "$(wc -w <<<"$nginx_workers")" -eq 2 ] \
    || fail "nginx runs $(wc -w <<<"$nginx_workers") workers, not 2 ($work/nginx/error.log: $(cat "$work/nginx/error.log"))"
# The master and both workers: the workers do the handshakes; the master only watches them.
bench nginx-handshake "$nport" "$nginx_pid $nginx_workers" --mode full --handshake-only

echo "== openssl s_server -tls1_2 (same certificate)" >&2
sport=$(free_port)
start sh -c 'sleep 100000 | openssl s_server -tls1_2 -quiet -accept "$1" -cert "$2" -key "$2"' \
    sh "$sport" "$work/mycert.pem" >/dev/null 2>&1
sleep 1
s_server_pid=$(pgrep -f "s_server -tls1_2 -quiet -accept $sport")
bench s_server-handshake "$sport" "$s_server_pid" --mode full --handshake-only

python3 - "$out" "$cores" "$load" "$floor_ms" "$ec_floor_ms" "$hash_ms" "$rsa_sign" "$ecdsa_sign" \
    "$x25519" "$baseline_kib" "$CONNECTIONS" "$CLIENTS" <<'PY' | tee "$out/table.md"
import json, sys
out, cores, load, floor, ec_floor, hash_ms, rsa_sign, ecdsa_sign, x25519, base_kib, conns, clients = sys.argv[1:]
cores, floor, ec_floor, hash_ms, base_kib, conns = int(cores), float(floor), float(ec_floor), float(hash_ms), float(base_kib), int(conns)
r = {n: json.load(open(f"{out}/{n}.json")) for n in [
    "ours-handshake", "ours-ecdsa-handshake", "ours-resumed", "ours-full", "ours-session",
    "ours-handshake-silent", "ours-idle", "nginx-handshake", "s_server-handshake", "ours-login",
    "pg-login", "pg-session", "fleet-handshake"]}
cpu = lambda n: r[n]["server_cpu_ms_per_op"]
rate = lambda n: r[n]["ops_per_second"]
per_conn = (r["ours-idle"]["server_peak_rss_kib"] - base_kib) / max(r["ours-idle"]["held"], 1)
full = f"Full-handshake throughput, {clients} clients"
rows = [
    ("Server CPU per full RSA handshake vs crypto floor", f"{cpu('ours-handshake'):.3f} ms vs {floor:.3f} ms", cpu("ours-handshake") / floor, "<= 1.5"),
    ("nginx CPU per handshake (master and 2 workers) vs crypto floor", f"{cpu('nginx-handshake'):.3f} ms vs {floor:.3f} ms", cpu("nginx-handshake") / floor, "(reference)"),
    ("openssl s_server CPU per handshake vs crypto floor", f"{cpu('s_server-handshake'):.3f} ms vs {floor:.3f} ms", cpu("s_server-handshake") / floor, "(reference)"),
    (f"{full}: ours vs nginx", f"{rate('ours-handshake'):.0f}/s vs {rate('nginx-handshake'):.0f}/s", rate("ours-handshake") / rate("nginx-handshake"), ">= 1.1"),
    (f"{full}: ours vs s_server", f"{rate('ours-handshake'):.0f}/s vs {rate('s_server-handshake'):.0f}/s", rate("ours-handshake") / rate("s_server-handshake"), ">= 2"),
    ("Server CPU per handshake with the ECDSA certificate vs the RSA floor", f"{cpu('ours-ecdsa-handshake'):.3f} ms vs {floor:.3f} ms", cpu("ours-ecdsa-handshake") / floor, "<= 0.9"),
    ("Server CPU per handshake with the ECDSA certificate vs the ECDSA floor", f"{cpu('ours-ecdsa-handshake'):.3f} ms vs {ec_floor:.3f} ms", cpu("ours-ecdsa-handshake") / ec_floor, "(reference)"),
    ("Resumed vs full handshakes (ours), rate", f"{rate('ours-resumed'):.0f}/s vs {rate('ours-handshake'):.0f}/s", rate("ours-resumed") / rate("ours-handshake"), ">= 6"),
    ("Resumed vs full handshakes (ours), server CPU", f"{cpu('ours-resumed'):.3f} ms vs {cpu('ours-handshake'):.3f} ms", cpu("ours-handshake") / cpu("ours-resumed"), "(reference)"),
    ("Legacy exchange with login vs handshake floor + one PBKDF2", f"{cpu('ours-full'):.2f} ms vs {floor + hash_ms:.2f} ms", cpu("ours-full") / (floor + hash_ms), "<= 1.05"),
    (f"{conns} connections held, then each served", f"{r['ours-idle']['held']} held, {r['ours-idle']['operations']} served, {per_conn:.1f} KiB each", per_conn / 50, "< 1 (50 KiB)"),
    (f"view on a persistent session, {clients} clients", f"server CPU {cpu('ours-session'):.3f} ms per view; {rate('ours-session'):.0f}/s, p99 {r['ours-session']['latency_ms']['p99']:.2f} ms", None, "(reported)"),
    (f"Logins (handshake, login, logout), {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-login'):.0f}/s vs {rate('ours-login'):.0f}/s", rate("pg-login") / rate("ours-login"), "(reference)"),
    (f"view on persistent sessions, {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-session'):.0f}/s vs {rate('ours-session'):.0f}/s, server CPU {cpu('pg-session'):.3f} vs {cpu('ours-session'):.3f} ms", rate("pg-session") / rate("ours-session"), "(reference)"),
    (f"Full handshakes, {clients} clients: through HAProxy to two instances vs one instance directly", f"{rate('fleet-handshake'):.0f}/s vs {rate('ours-handshake'):.0f}/s (HAProxy CPU {cpu('fleet-handshake'):.3f} ms per handshake)", rate("fleet-handshake") / rate("ours-handshake"), "(two instances share these two cores)"),
    ("Handshakes with a silent client held open vs without", f"{rate('ours-handshake-silent'):.0f}/s vs {rate('ours-handshake'):.0f}/s", rate("ours-handshake-silent") / rate("ours-handshake"), "~1.0"),
]
per_core = lambda total: float(total) / cores
print(f"Crypto floor (openssl speed -multi {cores}, the rates of one core with every core busy; "
      f"load average {load} before it, on {cores} cores): "
      f"RSA-2048 sign {per_core(rsa_sign):.0f}/s, ECDSA P-256 sign {per_core(ecdsa_sign):.0f}/s, "
      f"X25519 {per_core(x25519):.0f}/s -> {floor:.3f} ms per RSA handshake, {ec_floor:.3f} ms per "
      f"ECDSA handshake; PBKDF2-HMAC-SHA512 at 220,000 iterations: {hash_ms:.1f} ms\n")
print("| measure | figures | ratio | goal |\n|---|---|---|---|")
for name, figures, ratio, goal in rows:
    print(f"| {name} | {figures} | {'-' if ratio is None else f'{ratio:.2f}'} | {goal} |")
suites = lambda n: ", ".join(sorted(r[n]["ciphers"])) or "none"
peers = {"ours": "ours-handshake", "ours with the ECDSA certificate": "ours-ecdsa-handshake",
         "nginx": "nginx-handshake", "s_server": "s_server-handshake", "HAProxy": "fleet-handshake"}
print("\nCipher suites: " + "; ".join(f"{peer} {suites(n)}" for peer, n in peers.items()))
errors = {n: d["errors"] for n, d in r.items() if d["errors"]}
print(f"\nErrors: {errors or 'none'}")
# Ratios between servers mean something only when they did the same work.
problems = []
rsa_runs = ["ours-handshake", "nginx-handshake", "s_server-handshake", "fleet-handshake"]
if len({suites(n) for n in rsa_runs}) != 1:
    problems.append("the RSA peers negotiated different cipher suites: their ratios compare different work")
if any("-ECDSA-" not in suite for suite in r["ours-ecdsa-handshake"]["ciphers"]) or not r["ours-ecdsa-handshake"]["ciphers"]:
    problems.append(f"the ECDSA run negotiated {suites('ours-ecdsa-handshake')}, not an ECDSA suite")
for problem in problems:
    print(f"\nbench: {problem}")
sys.exit(1 if problems else 0)
PY
