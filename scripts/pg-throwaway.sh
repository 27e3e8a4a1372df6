# Sourced by scripts/cluster.sh and scripts/bench.sh: a throwaway PostgreSQL server in a
# directory of the caller's, started with the caller's `start` (which runs a command in a
# process group of its own, stopped by the caller's cleanup).
#
# pg_throwaway DIR: initdb in DIR/pg (DIR must be a directory of its own, not below one only
# root can enter: when root, it is handed to the postgres user), the server on a free port of 127.0.0.1 (as the postgres
# user when root: PostgreSQL refuses to run as root), and a database `accounts`; sets PG_URL
# to postgres://postgres@127.0.0.1:PORT/accounts. Needs PostgreSQL 15's binaries ($PG_BIN,
# else `pg_config --bindir`, else Debian's /usr/lib/postgresql/15/bin).

pg_throwaway() {
    local dir=$1 bin port
    bin=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
    for tool in initdb postgres pg_isready psql; do
        [ -x "$bin/$tool" ] || {
            echo "$bin/$tool is missing: apt-get install postgresql-15 (or set PG_BIN)" >&2
            return 1
        }
    done
    local as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as_pg=(runuser -u postgres --)
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as_pg[@]}" "$bin/initdb" -A trust -U postgres -E UTF8 --no-sync -D "$dir/pg" >/dev/null
    start "${as_pg[@]}" "$bin/postgres" -D "$dir/pg" -k "$dir" -p "$port" \
        -c listen_addresses=127.0.0.1 -c max_connections=300 >"$dir/postgres.log" 2>&1
    for _ in $(seq 200); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.1
    done
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE accounts" >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:$port/accounts"
}
