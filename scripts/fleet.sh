# shellcheck shell=bash disable=SC2154,SC2153 # top and PORT are set by the caller
# Sourced by scripts/cluster.sh and scripts/cluster-ha.sh, which differ only in the database
# behind the fleet: what both need around it. The caller sets `top` (the repository) and
# `PORT` (HAProxy's port) first.
#
# fleet_begin NAME: checks for haproxy, builds (make all cert), makes the temporary
#   directory $work, and arms the clean-up that Ctrl-C, SIGTERM or any failure runs (it says
#   so when SIGINT cannot be caught, as when started with & from a script): every process
#   group started with `start` gets SIGCONT first (a SIGSTOPped process leaves SIGTERM
#   pending), the caller's stop_store runs if it defined one, the groups get SIGTERM (SIGKILL
#   after 10 s), and $work is removed. After a failure the tail of $work/*.log is shown before
#   it goes. NAME starts every message.
# start CMD...: CMD in a process group of its own (setsid), recorded for the clean-up.
# free_ports N: N distinct free ports of 127.0.0.1, one a line.
# wait_until SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds; fails (and so cleans
#   up) saying WHAT did not happen after SECONDS, or as soon as a started process has exited.
# listening PORT: whether something listens on 127.0.0.1:PORT.
# fleet_start DB_URL: two instances on DB_URL sharing one session-ticket key (the first with
#   the demo account aticle/123), the PROXY protocol required from HAProxy (127.0.0.1), and
#   HAProxy in front of them on 127.0.0.1:$PORT (TCP mode, PROXY protocol v2, health checks);
#   sets instance_ports. SERVER_ARGS (split on white space) go to both instances too.

groups=()
group_commands=()
start() {
    setsid "$@" &
    groups+=($!)
    group_commands+=("$*")
}

signal_groups() {
    local group
    for group in "${groups[@]}"; do kill -"$1" -- "-$group" 2>/dev/null || true; done
}

groups_alive() {
    local group
    for group in "${groups[@]}"; do kill -0 -- "-$group" 2>/dev/null && return 0; done
    return 1
}

cleanup() {
    local why=$1 status=$2 _ log
    trap - INT TERM EXIT
    # Stop as much as can be stopped, whatever fails on the way; and no "Killed" line for each
    # process that had to be killed (groups_alive watches them instead).
    set +e
    disown -a
    signal_groups CONT
    if [ "$why" = EXIT ] && [ "$status" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -f "$log" ] || continue
            echo "--- the end of $log:" >&2
            tail -n 15 "$log" >&2
        done
    fi
    if declare -F stop_store >/dev/null; then stop_store; fi
    signal_groups TERM
    for _ in $(seq 100); do
        groups_alive || break
        sleep 0.1
    done
    signal_groups KILL
    wait 2>/dev/null
    rm -rf "$work"
    echo "$fleet_name: stopped, and $work removed"
    case $why in
        INT) exit 130 ;;
        TERM) exit 143 ;;
        *) exit "$status" ;;
    esac
}

fleet_begin() {
    fleet_name=$1
    command -v haproxy >/dev/null || { echo "$fleet_name: haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
    make --no-print-directory -C "$top" all cert >/dev/null
    work=$(mktemp -d)
    trap 'cleanup INT 130' INT
    trap 'cleanup TERM 143' TERM
    trap 'cleanup EXIT $?' EXIT
    # Started with & from a script, a command inherits SIGINT ignored, and bash cannot trap a
    # signal that was ignored when it started: Ctrl-C would do nothing, SIGTERM still works.
    if (( 0x$(awk '/^SigIgn:/ {print $2}' /proc/$$/status) & 2 )); then
        echo "$fleet_name: SIGINT is ignored here (started with & from a script?): stop it with" \
            "kill -TERM -- -$(ps -o pgid= -p $$ | tr -d ' ')" >&2
    fi
}

free_ports() {
    # All held open together, so that no port is handed out twice.
    python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
for s in held:
    print(s.getsockname()[1])
PY
}

wait_until() {
    local limit=$1 what=$2 deadline i
    shift 2
    deadline=$((SECONDS + limit))
    until "$@"; do
        for i in "${!groups[@]}"; do
            kill -0 "${groups[$i]}" 2>/dev/null && continue
            echo "$fleet_name: waiting for $what, this exited: ${group_commands[$i]}" >&2
            exit 1
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$fleet_name: $what did not happen within $limit s" >&2
            exit 1
        fi
        sleep 0.2
    done
}

listening() { [ -n "$(ss -Htln "src 127.0.0.1 and sport = :$1")" ]; }

fleet_start() {
    local db=$1 names=(one two) i instance port demo extra=()
    read -r -a extra <<<"${SERVER_ARGS:-}"
    mapfile -t instance_ports < <(free_ports 2)
    "$top/scripts/ticketkey.sh" "$work/ticket.key" >/dev/null
    for i in 0 1; do
        instance=${names[$i]}
        port=${instance_ports[$i]}
        demo=()
        [ "$instance" = one ] && demo=(--demo)
        start "$top/server" "${demo[@]}" --bind 127.0.0.1 --db "$db" --cert "$top/mycert.pem" \
            --ticket-key-file "$work/ticket.key" --proxy-protocol-from 127.0.0.1/32 \
            "${extra[@]}" "$port" \
            > >(sed -u "s/^/[$instance] /") 2> >(sed -u "s/^/[$instance] /" >&2)
        # One at a time: the first migrates the schema and makes the demo account.
        wait_until 60 "instance $instance listening on $port" listening "$port"
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
    server one 127.0.0.1:${instance_ports[0]}
    server two 127.0.0.1:${instance_ports[1]}
CFG
    start haproxy -db -f "$work/haproxy.cfg"
    wait_until 10 "HAProxy listening on $PORT" listening "$PORT"
}
