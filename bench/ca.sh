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
# shellcheck source=bench/lib.sh
source bench/lib.sh
echo "## devicetrust-ca benchmark"
echo
describe_machine
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
