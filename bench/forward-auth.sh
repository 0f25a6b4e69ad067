#!/usr/bin/env bash
# Benchmark of the relying-party check (GET /api/v1/relying-party/check): checks per second
# and latency, with the decision cache on (decision_cache_secs = 5) and off (0).
#
# Builds release binaries, and for each cache setting starts `devicetrust-ca dev` on
# 127.0.0.1 (a fresh data directory, every device managed) with one nginx relying party,
# then runs the load generator (tests/src/bin/ca-loadgen.rs) once per concurrency level: it
# enrolls DEVICES devices (not timed here), then sends CHECKS checks as nginx's auth_request
# would (bearer secret, URL-escaped PEM in X-DeviceTrust-Client-Cert), cycling over the
# enrolled certificates, each worker on one kept-alive TLS connection. Prints a Markdown
# table.
#
#   bench/forward-auth.sh                          # 1000 devices, 40000 checks, 1 4 16 64 in flight
#   DEVICES=5000 CHECKS=100000 CONCURRENCY="16 64" bench/forward-auth.sh
#
# The relying-party secret is generated into a 0600 file in a 0700 temporary directory and
# reaches the load generator as a file name; the CA's JSON line (with its tokens) reaches it
# on stdin. Nothing goes on a command line.
set -euo pipefail

DEVICES=${DEVICES:-1000}
CHECKS=${CHECKS:-40000}
CONCURRENCY=${CONCURRENCY:-"1 4 16 64"}
CACHE=${CACHE:-"5 0"}
export RUST_LOG=${RUST_LOG:-info}

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
(umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' >"$work/rp.secret")

# start_rp_ca CACHE_SECS: a CA with one nginx relying party and this decision cache.
start_rp_ca() {
    cat >"$work/rp-$1.toml" <<RP
decision_cache_secs = $1

[[clients]]
name = "bench-nginx"
secret = { file = "rp.secret" }
proxy = "nginx"
RP
    start_ca "$1" --relying-parties "$work/rp-$1.toml"
}

echo "## devicetrust-ca forward-auth check benchmark"
echo
describe_machine
echo "- load: $CHECKS checks over $DEVICES certificates per run, load generator on the same machine, RUST_LOG=$RUST_LOG"
echo
echo "| decision_cache_secs | in flight | checks | errors | checks/s | p50 ms | p99 ms | max ms | CA CPU ms/check | load generator CPU ms/check |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for cache in $CACHE; do
    start_rp_ca "$cache"
    for c in $CONCURRENCY; do
        target/release/ca-loadgen --devices "$DEVICES" --concurrency "$c" --no-renew \
            --checks "$CHECKS" --check-secret-file "$work/rp.secret" --ca-pid "$ca_pid" \
            <"$work/ready-$cache.json" 2>"$work/loadgen.log" >"$work/loadgen.out" ||
            { cat "$work/loadgen.log" "$work/loadgen.out" >&2; exit 1; }
        grep '^| forward-auth check' "$work/loadgen.out" | sed "s/^| forward-auth check ([^)]*)/| $cache | $c/"
    done
    stop_ca
done
