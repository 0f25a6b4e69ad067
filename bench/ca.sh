#!/usr/bin/env bash
# Benchmark of devicetrust-ca: enrollments/s and mutual-TLS renewals/s, with p50/p99.
#
# Builds release binaries, starts `devicetrust-ca dev` on 127.0.0.1 (a free port, a fresh
# data directory, every device managed), runs the load generator (tests/src/bin/ca-loadgen.rs)
# on the same machine, stops the CA with SIGTERM, and prints a Markdown table.
#
#   bench/ca.sh                      # 10000 devices, 16 requests in flight
#   DEVICES=20000 CONCURRENCY=32 bench/ca.sh
#
# The CA's JSON line (which holds the enrollment token) stays in a 0700 temporary
# directory and reaches the load generator on stdin, never on a command line.
set -euo pipefail

DEVICES=${DEVICES:-10000}
CONCURRENCY=${CONCURRENCY:-16}
export RUST_LOG=${RUST_LOG:-info}

cd "$(dirname "$0")/.."
cargo build --release --quiet -p ca-server --bin devicetrust-ca
cargo build --release --quiet -p tests --bin ca-loadgen

work=$(mktemp -d)
ca_pid=
cleanup() {
    if [[ -n "$ca_pid" ]] && kill -0 "$ca_pid" 2>/dev/null; then
        kill -TERM "$ca_pid" 2>/dev/null || true
        wait "$ca_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Every request comes from 127.0.0.1: lift the per-address budgets (a fleet has many
# addresses); the connection caps stay above the concurrency.
cat >"$work/limits.toml" <<'LIMITS'
requests_per_minute_per_address = 100000000
auth_failures_per_minute_per_address = 100000000
LIMITS

start_ca() {
    target/release/devicetrust-ca dev --listen 127.0.0.1:0 --data-dir "$work/data-$1" --limits "$work/limits.toml" \
        >"$work/ready-$1.json" 2>"$work/ca-$1.log" &
    ca_pid=$!
    for _ in $(seq 1 100); do
        [[ -s "$work/ready-$1.json" ]] && return 0
        kill -0 "$ca_pid" 2>/dev/null || { cat "$work/ca-$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "devicetrust-ca did not become ready" >&2
    exit 1
}

stop_ca() {
    kill -TERM "$ca_pid"
    wait "$ca_pid" || { echo "devicetrust-ca exited with $?" >&2; exit 1; }
    ca_pid=
}

echo "## devicetrust-ca benchmark"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || uname -m), $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB RAM"}'), $(uname -sr)"
echo "- $(rustc --version)"
echo "- load: $DEVICES devices, $CONCURRENCY requests in flight, load generator on the same machine, RUST_LOG=$RUST_LOG"
echo

# Run 1: enrollment over kept-alive connections (issuance cost), then every device renews
# over mutual TLS on its own new connection.
start_ca keepalive
target/release/ca-loadgen --header --devices "$DEVICES" --concurrency "$CONCURRENCY" \
    --connections keep-alive --ca-pid "$ca_pid" <"$work/ready-keepalive.json"
stop_ca

# Run 2: enrollment with a new TLS connection per request (a fleet of distinct agents).
start_ca fresh
target/release/ca-loadgen --devices "$DEVICES" --concurrency "$CONCURRENCY" \
    --connections fresh --no-renew --ca-pid "$ca_pid" <"$work/ready-fresh.json"
stop_ca
