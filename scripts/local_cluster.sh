#!/usr/bin/env bash
# A real two-node Ray cluster on this machine, every listener on 127.0.0.1, token authentication on.
#
#   scripts/local_cluster.sh start [--cpus N] [--object-store-mb MB]
#                                               -> prints KEY=VALUE lines: RAY_ADDRESS (127.0.0.1:PORT to join),
#                                                  the environment every driver needs (RAY_AUTH_MODE,
#                                                  RAY_AUTH_TOKEN_PATH, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0:
#                                                  see below), CLUSTER_DIR
#   scripts/local_cluster.sh kill-node DIR      -> SIGKILL the second node's whole process tree (a node failure)
#   scripts/local_cluster.sh stop DIR           -> stop both nodes and remove DIR
#
# Use it:  set -a; eval "$(scripts/local_cluster.sh start)"; set +a
#          biolingual-edge analyze ... --engine ray --ray-address "$RAY_ADDRESS"
#          scripts/local_cluster.sh stop "$CLUSTER_DIR"
#
# Each node is one `ray start` in its own session (setsid), so a node's processes are exactly its session;
# stop and kill-node touch only those, never `ray stop` (which stops every Ray on the machine). Ports are
# Ray's free-port picks (--port 0) and the temp dir is unique, so several clusters can share a machine.
#
# Authentication is Ray's token mode, configured the documented way: RAY_AUTH_MODE=token on every node and
# driver, the token in a file named by RAY_AUTH_TOKEN_PATH (mode 600, inside CLUSTER_DIR).
#
# Loopback only: Ray 2.60 rewrites 127.0.0.1 (in --address and --node-ip-address) to the machine's external
# address and then binds every interface. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take 127.0.0.1 as the
# node's address, and a raylet whose address is 127.0.0.1 binds only there; `ray start` refuses to join a
# second node in that mode, so the second node is started through Ray's own CLI entry point with that one
# refusal lifted and the loopback address kept as given. `start` checks the outcome with `ss -ltnp` and stops
# the cluster if anything listens elsewhere.
set -euo pipefail

die() { echo "error: $1" >&2; echo "hint: $2" >&2; exit 1; }

session_pids() {  # live (non-zombie) processes of session $1
    ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'
}

stop_session() {  # TERM a node's session, KILL what is left after 5 s
    local sid=$1 i
    [ -n "$sid" ] || return 0
    kill -TERM -- "-$sid" 2>/dev/null || true
    for i in $(seq 50); do
        [ -z "$(session_pids "$sid")" ] && return 0
        sleep 0.1
    done
    kill -KILL -- "-$sid" 2>/dev/null || true
    for i in $(seq 50); do
        [ -z "$(session_pids "$sid")" ] && return 0
        sleep 0.1
    done
    echo "warning: session $sid still has processes: $(session_pids "$sid" | tr '\n' ' ')" >&2
}

node_session() {  # session id of the raylet of node dir $1
    local pid
    pid=$(pgrep -f -- "--raylet_socket_name=$1/" | head -n1 || true)
    [ -n "$pid" ] && ps -o sid= -p "$pid" | tr -d ' '
}

non_loopback_listeners() {  # listening sockets of sessions $@ not on 127.0.0.1
    local sids=" $* " line pid
    ss -ltnpH | while read -r line; do
        for pid in $(grep -o 'pid=[0-9]*' <<<"$line" | cut -d= -f2); do
            if [[ $sids == *" $(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ') "* ]]; then
                local local_address
                local_address=$(awk '{print $4}' <<<"$line")
                case $local_address in 127.0.0.1:* | \[::ffff:127.0.0.1\]:*) ;; *) echo "$line" ;; esac
                break
            fi
        done
    done
}

start_second_node() {  # `ray start --address 127.0.0.1:PORT` that keeps 127.0.0.1 (see the header)
    python3 -c '
import sys
from ray._private import ray_constants, services
ray_constants.ENABLE_RAY_CLUSTER = True  # only the "multi-node needs ENABLE=1" refusal reads this here
services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 instead of the external address
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())' start "$@"
}

cmd_start() {
    local cpus=1 store_mb=100
    while [ $# -gt 0 ]; do
        case $1 in
            --cpus) cpus=$2; shift 2 ;;
            --object-store-mb) store_mb=$2; shift 2 ;;
            *) die "unknown option '$1' for start" "usage: $0 start [--cpus N] [--object-store-mb MB]" ;;
        esac
    done
    command -v ray >/dev/null || die "ray is not installed" "pip install 'biolingual-edge[ray]'"
    command -v ss >/dev/null || die "ss is not installed (needed to check the listeners)" "apt-get install iproute2"
    local dir
    dir=$(mktemp -d /tmp/blc.XXXXXX)  # short: Ray's unix socket paths must stay under 107 bytes
    python3 -c 'import secrets, sys; print(secrets.token_hex(32))' >"$dir/auth_token"
    chmod 600 "$dir/auth_token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    export RAY_USAGE_STATS_ENABLED=0
    local common=(--node-ip-address 127.0.0.1 --num-cpus "$cpus" --object-store-memory "${store_mb}000000"
                  --disable-usage-stats)
    trap 'cmd_stop "$dir" >/dev/null 2>&1' ERR
    setsid --wait ray start --head --port 0 --include-dashboard false --temp-dir "$dir/head" "${common[@]}" \
        >"$dir/head.log" 2>&1 || { cat "$dir/head.log" >&2; die "the head node did not start" "see $dir/head.log"; }
    local address
    address=$(cat "$dir/head/ray_current_cluster")
    [[ $address == 127.0.0.1:* ]] || die "the head took $address, not 127.0.0.1" "this Ray version ignores \
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
    setsid --wait bash -c "$(declare -f start_second_node); start_second_node --address $address --temp-dir $dir/node \
${common[*]}" >"$dir/node.log" 2>&1 || { cat "$dir/node.log" >&2; die "the second node did not join" "see $dir/node.log"; }
    local head_sid node_sid
    head_sid=$(node_session "$dir/head")
    node_sid=$(node_session "$dir/node")
    printf 'HEAD_SID=%s\nNODE_SID=%s\nRAY_ADDRESS=%s\n' "$head_sid" "$node_sid" "$address" >"$dir/cluster.env"
    local exposed
    exposed=$(non_loopback_listeners "$head_sid" "$node_sid")
    if [ -n "$exposed" ]; then
        cmd_stop "$dir" >/dev/null 2>&1
        die "the cluster listened beyond 127.0.0.1: $exposed" "this Ray version binds differently; do not use it"
    fi
    trap - ERR
    printf 'RAY_ADDRESS=%s\nRAY_AUTH_MODE=token\nRAY_AUTH_TOKEN_PATH=%s\nRAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n' \
        "$address" "$dir/auth_token"
    printf 'CLUSTER_DIR=%s\n' "$dir"
}

read_state() {  # $1: the cluster dir -> HEAD_SID, NODE_SID (from cluster.env, or the raylets of a half start)
    [ -n "${1:-}" ] && [ -f "$1/auth_token" ] || die "no cluster at '${1:-}'" "pass the CLUSTER_DIR that start printed"
    if [ -f "$1/cluster.env" ]; then
        # shellcheck disable=SC1091
        . "$1/cluster.env"
    else
        HEAD_SID=$(node_session "$1/head")
        NODE_SID=$(node_session "$1/node")
    fi
}

cmd_kill_node() {
    read_state "${1:-}"
    kill -KILL -- "-$NODE_SID" 2>/dev/null || true
    local i
    for i in $(seq 100); do
        [ -z "$(session_pids "$NODE_SID")" ] && return 0
        sleep 0.1
    done
    die "the second node (session $NODE_SID) survived SIGKILL" "look at: ps -s $NODE_SID"
}

cmd_stop() {
    read_state "${1:-}"
    stop_session "$NODE_SID"
    stop_session "$HEAD_SID"
    rm -rf -- "$1"
}

case ${1:-} in
    start) shift; cmd_start "$@" ;;
    kill-node) shift; cmd_kill_node "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) die "usage: $0 start [--cpus N] [--object-store-mb MB] | kill-node DIR | stop DIR" "start prints the DIR (CLUSTER_DIR)" ;;
esac
