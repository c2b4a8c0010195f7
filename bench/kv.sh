#!/usr/bin/env bash
# Side-by-side KV benchmark of Shoal and etcd on loopback, fsync on for both.
#
# Installs etcd (Debian's etcd-server) if it is missing, builds shoal and shoal-bench in release
# mode, starts a 1-node and a 3-node cluster of each system with their data in a fresh `mktemp -d`,
# runs `shoal-bench kv` against the four clusters, and stops exactly the processes it started.
#
# Addresses (loopback only; the four clusters never share a port):
#   Shoal 1 node : 127.0.1.10            (HTTP 8500, cluster 2377)
#   Shoal 3 nodes: 127.0.1.1-3           (HTTP 8500, cluster 2377)
#   etcd  1 node : 127.0.2.10            (client 2379, peer 2380)
#   etcd  3 nodes: 127.0.2.1-3           (client 2379, peer 2380)
#
# Environment: DURATION (10s), WARMUP (2s), CLIENTS (64), KEYS (1000), VALUE_SIZE (256),
# WORKLOADS (put1,put64,get64), BENCH_DIR (parent of the temp dir, default $TMPDIR or /tmp; must be
# a real disk, not tmpfs), SKIP_BUILD=1 (use the binaries already in target/release), KEEP=1 (keep
# the temp dir with data and logs), OUT (also write the bench's stdout to this file).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLIENTS=${CLIENTS:-64}
KEYS=${KEYS:-1000}
VALUE_SIZE=${VALUE_SIZE:-256}
WORKLOADS=${WORKLOADS:-put1,put64,get64}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}

log() { echo "kv.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- etcd ------------------------------------------------------------------------------------
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install -y curl)"
if ! command -v etcd >/dev/null 2>&1; then
    log "installing etcd-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
    # The package enables etcd.service (127.0.0.1:2379). If installing started it, stop it: it would
    # share the machine with the benchmark. (Addresses never conflict: see above.)
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
        log "stopping the etcd.service the package started"
        systemctl stop etcd || true
    elif command -v service >/dev/null 2>&1 && service etcd status >/dev/null 2>&1; then
        log "stopping the etcd service the package started"
        service etcd stop || true
    fi
fi
if pgrep -x etcd >/dev/null 2>&1; then
    log "warning: an etcd not started by this script is running (pids $(pgrep -x etcd | tr '\n' ' '));" \
        "it does not conflict with the addresses used here but shares the machine"
fi

# --- build -----------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building shoal and shoal-bench (release)"
    (cd "$ROOT" && cargo build --release -p shoal -p shoal-bench)
fi
SHOAL=$ROOT/target/release/shoal
BENCH=$ROOT/target/release/shoal-bench
[[ -x $SHOAL && -x $BENCH ]] || die "missing $SHOAL or $BENCH (run without SKIP_BUILD=1)"

# --- processes -------------------------------------------------------------------------------
WORK=$(mktemp -d "$BENCH_DIR/shoal-kv-bench.XXXXXX")
fstype=$(stat -f -c %T "$WORK")
[[ $fstype == tmpfs || $fstype == ramfs ]] && die "$WORK is on $fstype: fsync would be free; set BENCH_DIR to a real disk"
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 || $status != 0 ]]; then
        log "data and logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what (logs in $WORK)"
        sleep 0.2
    done
}

http_ok() { curl -sf --noproxy '*' --max-time 2 "$@"; }

# start_shoal NAME IP [agent flags...]
start_shoal() {
    local name=$1 ip=$2
    shift 2
    "$SHOAL" agent --data-dir "$WORK/$name" --bind "$ip" --name "$name" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_until 30 "$name HTTP API" http_ok "http://$ip:8500/v1/status/leader"
}

# shoal_cluster PREFIX IP...: the first IP inits, the others join as managers (voters).
shoal_cluster() {
    local prefix=$1 first=$2
    shift 2
    start_shoal "$prefix-1" "$first" --init
    wait_until 30 "a leader on $first" sh -c "curl -sf --noproxy '*' http://$first:8500/v1/status/leader | grep -q 2377"
    local token i=2
    token=$("$SHOAL" --http-addr "$first:8500" join-token manager -q)
    for ip in "$@"; do
        start_shoal "$prefix-$i" "$ip" --join "$first:2377" --token "$token"
        wait_until 60 "$ip to be a voter" sh -c "curl -sf --noproxy '*' http://$first:8500/v1/status/peers | grep -q '\"$ip:2377\"'"
        i=$((i + 1))
    done
}

# etcd_cluster PREFIX IP...: a fresh static cluster, one member per IP.
etcd_cluster() {
    local prefix=$1
    shift
    local initial="" i=1
    for ip in "$@"; do
        initial+="${initial:+,}$prefix-$i=http://$ip:2380"
        i=$((i + 1))
    done
    i=1
    for ip in "$@"; do
        etcd --name "$prefix-$i" --data-dir "$WORK/$prefix-$i" \
            --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
            --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
            --initial-cluster "$initial" --initial-cluster-token "$prefix-$$" --initial-cluster-state new \
            --logger zap --log-outputs stderr \
            >"$WORK/$prefix-$i.log" 2>&1 &
        PIDS+=($!)
        i=$((i + 1))
    done
    for ip in "$@"; do
        wait_until 60 "etcd on $ip to be healthy" sh -c "curl -sf --noproxy '*' http://$ip:2379/health | grep -q true"
    done
}

log "data and logs in $WORK ($fstype)"
log "$("$SHOAL" --version), $(etcd --version | head -1)"
log "source: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other load skews the results)"
shoal_cluster shoal1 127.0.1.10
shoal_cluster shoal3 127.0.1.1 127.0.1.2 127.0.1.3
etcd_cluster etcd1 127.0.2.10
etcd_cluster etcd3 127.0.2.1 127.0.2.2 127.0.2.3
log "clusters up: pids ${PIDS[*]}"

bench=(
    "$BENCH" kv
    --target shoal:1=http://127.0.1.10:8500
    --target etcd:1=http://127.0.2.10:2379
    --target shoal:3=http://127.0.1.1:8500,http://127.0.1.2:8500,http://127.0.1.3:8500
    --target etcd:3=http://127.0.2.1:2379,http://127.0.2.2:2379,http://127.0.2.3:2379
    --workloads "$WORKLOADS" --duration "$DURATION" --warmup "$WARMUP"
    --clients "$CLIENTS" --keys "$KEYS" --value-size "$VALUE_SIZE"
)
log "running: ${bench[*]#"$ROOT/"}"
if [[ -n ${OUT:-} ]]; then
    "${bench[@]}" | tee "$OUT"
else
    "${bench[@]}"
fi
log "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
