#!/usr/bin/env bash
# A real S3-compatible server (Garage, run as a separate process) on loopback for journeyd's
# test suite, set up as a single node with every port on 127.0.0.1.
#
#   scripts/s3-test-server.sh install           build garage once into the tools cache, print its path
#   scripts/s3-test-server.sh start STATE_DIR   start a fresh single-node server, print STATE_DIR/env
#   scripts/s3-test-server.sh stop STATE_DIR    stop the server started in STATE_DIR
#
# Everything a server owns (config, metadata, data, log, pid) lives in STATE_DIR, and its ports
# are picked free at start, so several servers can run side by side. STATE_DIR/env holds `export`
# lines for the tests: JOURNEYD_TEST_S3_{ENDPOINT,REGION,ACCESS_KEY_ID,SECRET_ACCESS_KEY,BUCKET,
# GARAGE_CONFIG,GARAGE_BIN}.
set -euo pipefail

GARAGE_VERSION="2.5.0"
REGION="garage"
KEY_NAME="journeyd-tests"
BUCKET="journeyd-tests"
READY_TIMEOUT_S=30

tools_dir="${JOURNEYD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/journeyd-tools}"
garage_bin="$tools_dir/garage/bin/garage"

# Garage reads GARAGE_* variables (RPC host, RPC secret, config file, tokens) as overrides of the
# config file; drop any inherited ones so every call goes to the server this script started.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^GARAGE_' || true)

die() {
    echo "s3-test-server: $*" >&2
    exit 1
}

usage() {
    sed -n '5,7s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

# ---- install --------------------------------------------------------------------------------

cmd_install() {
    if [ ! -x "$garage_bin" ]; then
        echo "installing garage $GARAGE_VERSION into $tools_dir/garage (takes ~10 min)" >&2
        cargo install --locked --version "$GARAGE_VERSION" --root "$tools_dir/garage" garage >&2
    fi
    echo "$garage_bin"
}

# ---- start ----------------------------------------------------------------------------------

# Prints three distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
pick_ports() {
    python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

random_hex() { python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"; }

# True while $1 is a live (non-zombie) process.
alive() {
    local state
    state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ "$state" != Z* ]]
}

log_tail() {
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2 || true
    echo "----" >&2
}

# Every garage CLI call, bounded so a wedged server cannot hang the caller; readiness probes
# get a shorter bound so the ~30 s start timeout holds.
g() { timeout 20 "$garage_bin" -c "$config" "$@"; }
probe() { timeout 5 "$garage_bin" -c "$config" "$@"; }

# Retries "$@" (quietly) until it succeeds, the server dies or READY_TIMEOUT_S passes.
wait_for() {
    local what="$1"
    shift
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$pid"; then
            echo "s3-test-server: garage exited while waiting for $what" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "s3-test-server: garage did not become ready ($what) within ${READY_TIMEOUT_S}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

write_config() {
    local rpc_port="$1" s3_port="$2" admin_port="$3"
    (
        umask 077
        cat >"$config" <<EOF
# Single-node Garage for journeyd's tests, written by scripts/s3-test-server.sh.
metadata_dir = "$state_dir/meta"
data_dir = "$state_dir/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3_port"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(random_hex 32)"
EOF
    )
}

# Set while start is under way: if anything fails, show the server log and stop the
# half-started server.
cleanup_failed_start() {
    [ -f "$log" ] && log_tail
    if [ -n "${pid:-}" ] && alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
}

cmd_start() {
    [ $# -eq 1 ] || usage
    [ -x "$garage_bin" ] || die "no garage binary at $garage_bin (run: $0 install)"
    mkdir -p "$1"
    state_dir="$(cd "$1" && pwd)"
    config="$state_dir/garage.toml"
    log="$state_dir/garage.log"
    pid_file="$state_dir/garage.pid"
    local env_file="$state_dir/env"

    if [ -f "$pid_file" ] && alive "$(cat "$pid_file")"; then
        die "a server is already running in $state_dir (pid $(cat "$pid_file"))"
    fi
    mkdir -p "$state_dir/meta" "$state_dir/data"
    trap cleanup_failed_start EXIT

    # Ports are free when picked but could be taken before garage binds them; if garage exits
    # on a bind error, pick again.
    local attempt rpc_port s3_port admin_port
    for attempt in 1 2 3; do
        read -r rpc_port s3_port admin_port < <(pick_ports)
        write_config "$rpc_port" "$s3_port" "$admin_port"
        "$garage_bin" -c "$config" server </dev/null >"$log" 2>&1 &
        pid=$!
        echo "$pid" >"$pid_file"
        # The CLI talks to the server over RPC: once `status` answers, the node is up.
        if wait_for "status" probe status; then
            break
        fi
        if ! alive "$pid" && grep -qi "address already in use" "$log" && [ "$attempt" -lt 3 ]; then
            echo "s3-test-server: port taken, retrying with new ports" >&2
            continue
        fi
        exit 1
    done

    # A one-node layout: this node holds every partition.
    local node_id
    node_id="$(g node id -q)"
    g layout assign -z dc1 -c 1G "${node_id:0:16}" >/dev/null
    g layout apply --version 1 >/dev/null
    wait_for "healthy cluster after layout apply" probe health -q || exit 1

    # The tests' key (allowed to create buckets through S3) and their default bucket.
    local key_id secret
    g key create "$KEY_NAME" >/dev/null
    key_id="$(g key info "$KEY_NAME" --key-id)"
    secret="$(g key info "$KEY_NAME" --secret-key)"
    g key allow --create-bucket "$key_id" >/dev/null
    g bucket create "$BUCKET" >/dev/null
    g bucket allow --read --write --owner "$BUCKET" --key "$key_id" >/dev/null

    # The env file holds the secret key: readable by its owner only.
    (umask 077 && : >"$env_file.tmp")
    {
        printf 'export JOURNEYD_TEST_S3_ENDPOINT=%q\n' "http://127.0.0.1:$s3_port"
        printf 'export JOURNEYD_TEST_S3_REGION=%q\n' "$REGION"
        printf 'export JOURNEYD_TEST_S3_ACCESS_KEY_ID=%q\n' "$key_id"
        printf 'export JOURNEYD_TEST_S3_SECRET_ACCESS_KEY=%q\n' "$secret"
        printf 'export JOURNEYD_TEST_S3_BUCKET=%q\n' "$BUCKET"
        printf 'export JOURNEYD_TEST_S3_GARAGE_CONFIG=%q\n' "$config"
        printf 'export JOURNEYD_TEST_S3_GARAGE_BIN=%q\n' "$garage_bin"
    } >"$env_file.tmp"
    mv "$env_file.tmp" "$env_file"

    trap - EXIT
    echo "$env_file"
}

# ---- stop -----------------------------------------------------------------------------------

cmd_stop() {
    [ $# -eq 1 ] || usage
    local state_dir pid_file pid args i
    # Nothing recorded (never started, start failed, or already stopped): nothing to do.
    [ -f "$1/garage.pid" ] || return 0
    state_dir="$(cd "$1" && pwd)"
    pid_file="$state_dir/garage.pid"
    pid="$(cat "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || die "bad pid in $pid_file"

    # Only signal the pid if it is still the garage server of this state dir (pids get reused).
    if alive "$pid"; then
        args="$(ps -o args= -p "$pid" 2>/dev/null || true)"
        if [[ "$args" == *"-c $state_dir/garage.toml server"* ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                alive "$pid" || break
                sleep 0.1
            done
            if alive "$pid"; then
                echo "s3-test-server: garage (pid $pid) ignored TERM, killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        else
            echo "s3-test-server: pid $pid is no longer garage; not touching it" >&2
        fi
    fi
    rm -f "$pid_file"
}

case "${1:-}" in
    install) shift; [ $# -eq 0 ] || usage; cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) usage ;;
esac
