#!/usr/bin/env bash
# make bench: measures, in one run on this machine and side by side, this server (on SQLite,
# on PostgreSQL, on a synchronously replicated PostgreSQL under Patroni, alone, with an ECDSA
# certificate and as two instances behind HAProxy), nginx (TLS termination in its stream
# module, 2 workers) and openssl s_server (TLS 1.2, the same certificate), and the crypto floor
# (openssl speed), and prints one table of ratios. Figures go to bench-results/ (JSON from
# ./bench, and the table as table.md). Needs PostgreSQL 15's binaries, haproxy, patroni and
# etcd-server, as the tests do; installs Debian's nginx-light and libnginx-mod-stream when
# nginx or its stream module is missing (as root, with apt-get).
#
# The handshake comparisons (ours with each certificate, resumed, nginx, s_server, and the
# crypto floor) run in ROUNDS rounds, one after another within each round, and the table gives
# their medians and the medians of the ratios within each round: the machine is shared, and
# how fast it runs drifts by tens of percent over minutes, which rounds spread over all peers
# alike.
#
# DURATION (seconds per measurement, default 10; a handshake comparison gets DURATION/ROUNDS
# in each round), ROUNDS (default 3), CLIENTS (default 16) and CONNECTIONS (held at once in the
# idle run, default 10000) can be set in the environment.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
ROUND_SECS=$(( (DURATION + ROUNDS - 1) / ROUNDS ))
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
. scripts/apt-install.sh
cleanup() {
    for group in "${groups[@]}"; do kill -- "-$group" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    if [ -n "$apt_policy_added" ]; then rm -f "$apt_policy_added"; fi
}
trap cleanup EXIT
fail() { echo "bench: $*" >&2; exit 1; }
# running NAME PID LOG: fails, with what the process said, when it has stopped already.
running() { kill -0 "$2" 2>/dev/null || { cat "$3" >&2; fail "$1 did not start (its output is above)"; }; }

# nginx, for the peer run: Debian's nginx-light and its stream module, installed when missing
# (without starting the system nginx on port 80 that the package would: scripts/apt-install.sh).
nginx_stream=/usr/lib/nginx/modules/ngx_stream_module.so
nginx_bin() { PATH="$PATH:/usr/sbin" command -v nginx; }
if ! nginx_bin >/dev/null || [ ! -e "$nginx_stream" ]; then
    apt_need bench nginx-light libnginx-mod-stream || exit 1
    nginx_bin >/dev/null && [ -e "$nginx_stream" ] \
        || fail "apt-get installed nginx-light and libnginx-mod-stream, yet nginx or $nginx_stream is missing"
fi
nginx=$(nginx_bin)

make --no-print-directory all >/dev/null
scripts/gencert.sh "$work/mycert.pem" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
bench() { # NAME PORT "PID..." ARGS...: one measurement, figures in $out/NAME.json; the
    # server's CPU is that of every process listed (separated by spaces)
    local name=$1 port=$2 pid pids=(); shift 2
    for pid in $1; do pids+=(--pid "$pid"); done
    shift
    echo "== $name" >&2
    ./bench --cafile "$work/mycert.pem" -c "$CLIENTS" -d "${SECS:-$DURATION}" "${pids[@]}" \
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
    rate=$(openssl speed -seconds 2 -multi "$cores" -mr "$1" 2>/dev/null \
        | awk -F: -v tag="+$2:" 'index($0, tag) == 1 {print $4}')
    [ -n "$rate" ] || fail "openssl speed -multi $cores -mr $1 printed no +$2 line"
    echo "$rate"
}
# floor ROUND: the three rates of this round, as JSON in $out/floor.ROUND.json.
floor() {
    local load rsa ecdsa x
    load=$(cut -d' ' -f1 /proc/loadavg)
    rsa=$(speed rsa2048 F2); ecdsa=$(speed ecdsap256 F4); x=$(speed ecdhx25519 F5)
    echo "{\"load\": $load, \"rsa_sign\": $rsa, \"ecdsa_sign\": $ecdsa, \"x25519\": $x}" \
        >"$out/floor.$1.json"
}

echo "== this server" >&2
port=$(free_port)
# Every load comes from 127.0.0.1: lift the per-address cap with the total.
start sh -c 'cd "$1" && exec "$2/server" --demo --bind 127.0.0.1 --max-clients "$3" --max-per-address "$3" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 \
    --max-logins-per-account 1000000000 --max-logins-per-address 1000000000 --db users.db "$4"' \
    sh "$work" "$top" $((CONNECTIONS + 1000)) "$port" >/dev/null 2>"$work/server.err"
server_pid=$!
sleep 1
running "the server" "$server_pid" "$work/server.err"

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

echo "== this server on PostgreSQL (a throwaway server on this machine)" >&2
. scripts/pg-throwaway.sh
pg_throwaway "$work"
pgport=$(free_port)
start "$top/server" --demo --bind 127.0.0.1 --cert "$work/mycert.pem" --db "$PG_URL" \
    --max-login-failures 1000000000 --max-address-failures 1000000000 \
    --max-logins-per-account 1000000000 --max-logins-per-address 1000000000 "$pgport" \
    >/dev/null 2>"$work/server-pg.err"
pg_server_pid=$!
sleep 1
running "the server on PostgreSQL" "$pg_server_pid" "$work/server-pg.err"
bench pg-login "$pgport" "$pg_server_pid" --mode login
bench pg-session "$pgport" "$pg_server_pid" --mode session

echo "== synchronous replication: make cluster-ha's fleet against make cluster's" >&2
# Writes through two fleets alike (HAProxy, two instances, the PROXY protocol), on a
# synchronously replicated PostgreSQL under Patroni (make cluster-ha: etcd, two nodes,
# synchronous_mode) and on an unreplicated one with PostgreSQL's same defaults (make cluster:
# fsync and synchronous_commit on), in alternated rounds.
command -v patroni >/dev/null && command -v etcd >/dev/null \
    || fail "patroni or etcd is missing: apt-get install patroni etcd-server"
limits="--max-login-failures 1000000000 --max-address-failures 1000000000 \
--max-logins-per-account 1000000000 --max-logins-per-address 1000000000"
# fleet SCRIPT LOG: starts SCRIPT (scripts/cluster.sh or scripts/cluster-ha.sh) with HAProxy
# on a free port and the login limits lifted, and waits until it says HAProxy listens; sets
# fleet_front (HAProxy's port) and fleet_pids (the two instances').
fleet() {
    local script=$1 log=$2 port pid ports
    fleet_front=$(free_port)
    start env PORT="$fleet_front" SERVER_ARGS="$limits" "$script" >"$log" 2>&1
    for _ in $(seq 900); do
        grep -q "^HAProxy on 127.0.0.1:$fleet_front\." "$log" && break
        kill -0 "${groups[-1]}" 2>/dev/null || { cat "$log" >&2; fail "$script did not start (its output is above)"; }
        sleep 0.2
    done
    grep -q "^HAProxy on 127.0.0.1:$fleet_front\." "$log" \
        || { cat "$log" >&2; fail "$script did not start within 180 s"; }
    read -r -a ports <<<"$(sed -n 's/.*instances on \([0-9]*\) and \([0-9]*\).*/\1 \2/p' "$log")"
    fleet_pids=
    for port in "${ports[@]}"; do
        pid=$(ss -Htlnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
        fleet_pids="$fleet_pids $pid"
    done
}
fleet scripts/cluster.sh "$work/cluster.out"
plain_front=$fleet_front plain_pids=$fleet_pids
fleet scripts/cluster-ha.sh "$work/cluster-ha.out"
ha_front=$fleet_front ha_pids=$fleet_pids
for round in $(seq "$ROUNDS"); do
    # The fleets serve the repository's mycert.pem (make cert).
    SECS=$ROUND_SECS bench "plain-update.$round" "$plain_front" "$plain_pids" \
        --cafile "$top/mycert.pem" --mode update
    SECS=$ROUND_SECS bench "ha-update.$round" "$ha_front" "$ha_pids" \
        --cafile "$top/mycert.pem" --mode update
done

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
nginx_pids="$nginx_pid $nginx_workers"

echo "== openssl s_server -tls1_2 (same certificate)" >&2
sport=$(free_port)
start sh -c 'sleep 100000 | openssl s_server -tls1_2 -quiet -accept "$1" -cert "$2" -key "$2"' \
    sh "$sport" "$work/mycert.pem" >/dev/null 2>&1
sleep 1
s_server_pid=$(pgrep -f "s_server -tls1_2 -quiet -accept $sport")
running "openssl s_server" "$s_server_pid" /dev/null

echo "== the handshake comparisons, in $ROUNDS rounds of $ROUND_SECS s each" >&2
for round in $(seq "$ROUNDS"); do
    floor "$round"
    # One hash on each core at once, as in the loaded server (a lone hash runs faster): the
    # reference of the legacy exchange with a login, measured next to it.
    ./bench --mode hash -c "$cores" -d "$ROUND_SECS" --json "$out/hash.$round.json" 127.0.0.1 1 >&2
    SECS=$ROUND_SECS bench "ours-full.$round" "$port" "$server_pid" --mode full
    SECS=$ROUND_SECS bench "ours-handshake.$round" "$port" "$server_pid" --mode full --handshake-only
    SECS=$ROUND_SECS bench "nginx-handshake.$round" "$nport" "$nginx_pids" --mode full --handshake-only
    SECS=$ROUND_SECS bench "s_server-handshake.$round" "$sport" "$s_server_pid" --mode full --handshake-only
    SECS=$ROUND_SECS bench "ours-ecdsa-handshake.$round" "$ecport" "$ec_server_pid" \
        --cafile "$work/mycert-ec.pem" --mode full --handshake-only
    SECS=$ROUND_SECS bench "ours-resumed.$round" "$port" "$server_pid" --mode resume --handshake-only
done

# After the comparisons: thousands of connections held at once leave as many threads, which
# wait a minute for further clients before they exit.
echo "== this server: sessions, logins, a silent client, connections held" >&2
bench ours-session "$port" "$server_pid" --mode session
bench ours-login "$port" "$server_pid" --mode login
# A silent client next to the full load.
start python3 -c 'import socket,time,sys; s=socket.create_connection(("127.0.0.1", int(sys.argv[1]))); time.sleep(3600)' "$port"
silent=$!
bench ours-handshake-silent "$port" "$server_pid" --mode full --handshake-only
kill "$silent"
baseline_kib=$(grep VmRSS "/proc/$server_pid/status" | awk '{print $2}')
bench ours-idle "$port" "$server_pid" --mode idle --connections "$CONNECTIONS"

python3 - "$out" "$cores" "$ROUNDS" "$baseline_kib" "$CONNECTIONS" "$CLIENTS" <<'PY' | tee "$out/table.md"
import json, statistics, sys
out, cores, rounds, base_kib, conns, clients = sys.argv[1:]
cores, rounds, base_kib, conns = int(cores), int(rounds), float(base_kib), int(conns)
load = lambda n: json.load(open(f"{out}/{n}.json"))
r = {n: load(n) for n in [
    "ours-session", "ours-handshake-silent", "ours-idle", "ours-login",
    "pg-login", "pg-session", "fleet-handshake"]}
# The handshake comparisons: one measurement of each per round.
per_round = ["ours-handshake", "ours-ecdsa-handshake", "ours-resumed", "nginx-handshake",
             "s_server-handshake", "ours-full", "plain-update", "ha-update"]
R = [{n: load(f"{n}.{i}") for n in per_round + ["floor", "hash"]} for i in range(1, rounds + 1)]
# The floor of a round: one signature (RSA-2048, or ECDSA P-256 with the ECDSA certificate) and
# two X25519 operations, at the rates of one core (the totals of `-multi` / the cores).
rsa_floor = lambda f: cores * (1000 / f["rsa_sign"] + 2000 / f["x25519"])
ec_floor = lambda f: cores * (1000 / f["ecdsa_sign"] + 2000 / f["x25519"])
for rd in R:
    rd["floor"]["rsa_ms"], rd["floor"]["ec_ms"] = rsa_floor(rd["floor"]), ec_floor(rd["floor"])
    # Mean CPU per hash (threads / rate), to compare with the server's mean CPU per operation.
    rd["floor"]["hash_ms"] = cores * 1000 / rd["hash"]["ops_per_second"]
med = statistics.median
def cpu(n):
    return med(rd[n]["server_cpu_ms_per_op"] for rd in R) if n in per_round else r[n]["server_cpu_ms_per_op"]
def p50(n):
    return med(rd[n]["latency_ms"]["p50"] for rd in R)
def rate(n):
    return med(rd[n]["ops_per_second"] for rd in R) if n in per_round else r[n]["ops_per_second"]
floor, efloor = med(rd["floor"]["rsa_ms"] for rd in R), med(rd["floor"]["ec_ms"] for rd in R)
hash_ms = med(rd["floor"]["hash_ms"] for rd in R)
# A ratio between two per-round figures: the median of the ratios within each round.
paired = lambda f: med(f(rd) for rd in R)
c = lambda rd, n: rd[n]["server_cpu_ms_per_op"]
q = lambda rd, n: rd[n]["ops_per_second"]
spread = lambda f: f" (rounds {', '.join(f'{f(rd):.2f}' for rd in R)})" if rounds > 1 else ""
per_conn = (r["ours-idle"]["server_peak_rss_kib"] - base_kib) / max(r["ours-idle"]["held"], 1)
full = f"Full-handshake throughput, {clients} clients"
vs_floor = lambda n, which="rsa_ms": lambda rd: c(rd, n) / rd["floor"][which]
ratio_row = lambda name, figures, f, goal: (name, figures + spread(f), paired(f), goal)
rows = [
    ratio_row("Server CPU per full RSA handshake vs crypto floor", f"{cpu('ours-handshake'):.3f} ms vs {floor:.3f} ms", vs_floor("ours-handshake"), "<= 1.5"),
    ratio_row("nginx CPU per handshake (master and 2 workers) vs crypto floor", f"{cpu('nginx-handshake'):.3f} ms vs {floor:.3f} ms", vs_floor("nginx-handshake"), "(reference)"),
    ratio_row("openssl s_server CPU per handshake vs crypto floor", f"{cpu('s_server-handshake'):.3f} ms vs {floor:.3f} ms", vs_floor("s_server-handshake"), "(reference)"),
    ratio_row("Server CPU per full RSA handshake: ours vs nginx", f"{cpu('ours-handshake'):.3f} ms vs {cpu('nginx-handshake'):.3f} ms", lambda rd: c(rd, "ours-handshake") / c(rd, "nginx-handshake"), "(reference)"),
    ratio_row(f"{full}: ours vs nginx", f"{rate('ours-handshake'):.0f}/s vs {rate('nginx-handshake'):.0f}/s", lambda rd: q(rd, "ours-handshake") / q(rd, "nginx-handshake"), ">= 1.1"),
    ratio_row(f"{full}: ours vs s_server", f"{rate('ours-handshake'):.0f}/s vs {rate('s_server-handshake'):.0f}/s", lambda rd: q(rd, "ours-handshake") / q(rd, "s_server-handshake"), ">= 2"),
    ratio_row("Server CPU per handshake with the ECDSA certificate vs the RSA floor", f"{cpu('ours-ecdsa-handshake'):.3f} ms vs {floor:.3f} ms", vs_floor("ours-ecdsa-handshake"), "<= 0.9"),
    ratio_row("Server CPU per handshake with the ECDSA certificate vs the ECDSA floor", f"{cpu('ours-ecdsa-handshake'):.3f} ms vs {efloor:.3f} ms", vs_floor("ours-ecdsa-handshake", "ec_ms"), "(reference)"),
    ratio_row("Resumed vs full handshakes (ours), rate", f"{rate('ours-resumed'):.0f}/s vs {rate('ours-handshake'):.0f}/s", lambda rd: q(rd, "ours-resumed") / q(rd, "ours-handshake"), ">= 6"),
    ratio_row("Resumed vs full handshakes (ours), server CPU", f"{cpu('ours-resumed'):.3f} ms vs {cpu('ours-handshake'):.3f} ms", lambda rd: c(rd, "ours-handshake") / c(rd, "ours-resumed"), "(reference)"),
    ratio_row("Legacy exchange with login vs handshake floor + one PBKDF2", f"{cpu('ours-full'):.2f} ms vs {floor + hash_ms:.2f} ms", lambda rd: c(rd, "ours-full") / (rd["floor"]["rsa_ms"] + rd["floor"]["hash_ms"]), "<= 1.05"),
    (f"{conns} connections held, then each served", f"{r['ours-idle']['held']} held, {r['ours-idle']['operations']} served, {per_conn:.1f} KiB each", per_conn / 50, "< 1 (50 KiB)"),
    (f"view on a persistent session, {clients} clients", f"server CPU {cpu('ours-session'):.3f} ms per view; {rate('ours-session'):.0f}/s, p99 {r['ours-session']['latency_ms']['p99']:.2f} ms", None, "(reported)"),
    (f"Logins (handshake, login, logout), {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-login'):.0f}/s vs {rate('ours-login'):.0f}/s", rate("pg-login") / rate("ours-login"), "(reference)"),
    (f"view on persistent sessions, {clients} clients: PostgreSQL vs SQLite", f"{rate('pg-session'):.0f}/s vs {rate('ours-session'):.0f}/s, server CPU {cpu('pg-session'):.3f} vs {cpu('ours-session'):.3f} ms", rate("pg-session") / rate("ours-session"), ">= 0.6"),
    ratio_row(f"update on persistent sessions, {clients} clients, through HAProxy and two instances: synchronous Patroni primary vs unreplicated PostgreSQL", f"{rate('ha-update'):.0f}/s vs {rate('plain-update'):.0f}/s, p50 {p50('ha-update'):.2f} vs {p50('plain-update'):.2f} ms", lambda rd: q(rd, "ha-update") / q(rd, "plain-update"), "(the cost of synchronous commit)"),
    (f"Full handshakes, {clients} clients: through HAProxy to two instances vs one instance directly", f"{rate('fleet-handshake'):.0f}/s vs {rate('ours-handshake'):.0f}/s (HAProxy CPU {cpu('fleet-handshake'):.3f} ms per handshake)", rate("fleet-handshake") / rate("ours-handshake"), f"(two instances share these {cores} cores)"),
    ("Handshakes with a silent client held open vs without", f"{rate('ours-handshake-silent'):.0f}/s vs {rate('ours-handshake'):.0f}/s", rate("ours-handshake-silent") / rate("ours-handshake"), "~1.0"),
]
per_core = lambda key: med(rd["floor"][key] for rd in R) / cores
loads = ", ".join(f"{rd['floor']['load']:.2f}" for rd in R)
print(f"Crypto floor (openssl speed -multi {cores}, the rates of one core with every core busy, "
      f"medians of {rounds} rounds; load average {loads} before each, on {cores} cores): "
      f"RSA-2048 sign {per_core('rsa_sign'):.0f}/s, ECDSA P-256 sign {per_core('ecdsa_sign'):.0f}/s, "
      f"X25519 {per_core('x25519'):.0f}/s -> {floor:.3f} ms per RSA handshake, {efloor:.3f} ms per "
      f"ECDSA handshake; PBKDF2-HMAC-SHA512 at 220,000 iterations: {hash_ms:.1f} ms\n")
print("| measure | figures | ratio | goal |\n|---|---|---|---|")
for name, figures, ratio, goal in rows:
    print(f"| {name} | {figures} | {'-' if ratio is None else f'{ratio:.2f}'} | {goal} |")
runs = dict(r, **{f"{n}.{i}": rd[n] for i, rd in enumerate(R, 1) for n in per_round})
suites = lambda names: ", ".join(sorted(set().union(*(runs[n]["ciphers"] for n in names)))) or "none"
of = lambda n: [f"{n}.{i}" for i in range(1, rounds + 1)] if n in per_round else [n]
peers = {"ours": "ours-handshake", "ours with the ECDSA certificate": "ours-ecdsa-handshake",
         "nginx": "nginx-handshake", "s_server": "s_server-handshake", "HAProxy": "fleet-handshake"}
print("\nCipher suites: " + "; ".join(f"{peer} {suites(of(n))}" for peer, n in peers.items()))
errors = {n: d["errors"] for n, d in runs.items() if d["errors"]}
print(f"\nErrors: {errors or 'none'}")
# Ratios between servers mean something only when they did the same work.
problems = []
rsa_runs = ["ours-handshake", "nginx-handshake", "s_server-handshake", "fleet-handshake"]
if len({suites(of(n)) for n in rsa_runs}) != 1:
    problems.append("the RSA peers negotiated different cipher suites: their ratios compare different work")
ecdsa_suites = set().union(*(runs[n]["ciphers"] for n in of("ours-ecdsa-handshake")))
if not ecdsa_suites or any("-ECDSA-" not in suite for suite in ecdsa_suites):
    problems.append(f"the ECDSA run negotiated {suites(of('ours-ecdsa-handshake'))}, not an ECDSA suite")
for problem in problems:
    print(f"\nbench: {problem}")
sys.exit(1 if problems else 0)
PY
