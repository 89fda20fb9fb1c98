#!/usr/bin/env bash
# A private PostgreSQL cluster for `cairn-bench server` (the `peers` feature), and only for it:
# the tests and CI never need PostgreSQL.
#
#   setup-postgres.sh start DIR PORT [TIMEOUT_SECS]   initdb in DIR/data, start on 127.0.0.1:PORT
#   setup-postgres.sh stop DIR                        stop the cluster in DIR/data (fast)
#
# PostgreSQL comes from Debian's packages: when no server binaries are installed, `start` runs
# `apt-get install postgresql` (as root). initdb and the server refuse to run as root, so as
# root they run as the `postgres` user that the package creates; otherwise as the caller.
# The cluster trusts local connections of the user `bench` (loopback only) and keeps the
# defaults except: max_connections 200 (64 client threads plus the loaders), shared_buffers
# 256MB (the whole benchmark table fits, as it fits in cairn's cache), fsync on. The benchmark
# sets synchronous_commit per connection.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR PORT [TIMEOUT_SECS] | stop DIR" >&2
    exit 2
}

bindir() {
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$newest" && -x "$newest/initdb" ]]; then
        echo "$newest"
    fi
}

# Runs a command as the cluster's owner.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install_postgres() {
    if [[ -n "$(bindir)" ]]; then
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "$0: PostgreSQL is not installed; run as root or 'apt-get install postgresql'" >&2
        exit 1
    fi
    echo "$0: installing PostgreSQL from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

command=${1:-}
case "$command" in
start)
    [[ $# -ge 3 ]] || usage
    dir=$2
    port=$3
    timeout=${4:-60}
    install_postgres
    bin=$(bindir)
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$dir"
    fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=bench --auth=trust \
        --encoding=UTF8 --locale=C --no-instructions >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    cat >>"$dir/data/postgresql.conf" <<EOF
# cairn-bench server
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
EOF
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait \
        --timeout="$timeout" start >&2 || {
        cat "$dir/postgres.log" >&2
        exit 1
    }
    "$bin/postgres" --version
    ;;
stop)
    [[ $# -ge 2 ]] || usage
    dir=$2
    bin=$(bindir)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >&2
    ;;
*)
    usage
    ;;
esac
