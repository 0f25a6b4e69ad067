#!/usr/bin/env bash
# Benchmark of devicetrust-ca on its stores: SQLite, PostgreSQL with one replica, and
# PostgreSQL with two replicas, each `devicetrust-ca serve` with the same shared files.
#
# Builds release binaries, makes the shared files (issuing CA, TLS, tokens, assertion key)
# with `devicetrust-ca dev`, starts a PostgreSQL cluster of its own in a temporary directory
# (Debian's initdb and pg_ctl; on a Unix socket only; default durability: fsync and
# synchronous_commit on), and for each setup runs the load generator
# (tests/src/bin/ca-loadgen.rs) twice against a fresh database:
#
#   1. closed loop: DEVICES enrollments over kept-alive connections, CONCURRENCY in flight,
#      then every device renews over mutual TLS on a new connection;
#   2. open loop: DEVICES enrollments at RATE per second (each request has a scheduled time
#      and its latency counts from then), spread over the replicas.
#
# It prints Markdown tables with the CPU time each CA process, PostgreSQL (the postmaster
# and its backends) and the load generator spent per request.
#
#   bench/replicas.sh
#   DEVICES=20000 RATE=1500 bench/replicas.sh
#   SETUPS="postgres:2" MODES=open bench/replicas.sh      # one setup, one run
set -euo pipefail

DEVICES=${DEVICES:-10000}
CONCURRENCY=${CONCURRENCY:-16}
RATE=${RATE:-1000}
SETUPS=${SETUPS:-sqlite:1 postgres:1 postgres:2}
MODES=${MODES:-closed open}
POOL=${POOL:-8}
export RUST_LOG=${RUST_LOG:-info}

cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)
if [[ -z "$pgbin" || ! -x "$pgbin/initdb" ]]; then
    echo "error: PostgreSQL's server programs are missing (Debian package postgresql)" >&2
    exit 1
fi
# PostgreSQL refuses to run as root: as root the cluster belongs to Debian's `postgres`.
pgdir=$(mktemp -d)
as_pg=()
if [[ $(id -u) == 0 ]]; then
    chown postgres "$pgdir"
    as_pg=(runuser -u postgres --)
fi
replica_pids=()
stop_all() {
    for pid in "${replica_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
    cleanup
}
trap stop_all EXIT

"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust --no-instructions -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-k $pgdir -c listen_addresses= -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
postmaster=$(head -n1 "$pgdir/data/postmaster.pid")
psql() { PGOPTIONS="-c client_min_messages=warning" "${as_pg[@]}" "$pgbin/psql" -h "$pgdir" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

# The shared files, made once.
start_ca shared
stop_ca
shared="$work/data-shared"

# config NAME STORE-TABLE: a serve configuration on the shared files.
config() {
    cat >"$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:0"
cert_auth_domain = "https://127.0.0.1:8443"
data_dir = "$work/data-$1"
tls = { certificate = "$shared/tls.pem", private_key = "$shared/tls.key" }

[ca]
certificate = "$shared/ca.pem"
private_key = "$shared/ca.key"

[tokens]
enrollment = { file = "$shared/enrollment-token" }
admin = { file = "$shared/admin-token" }

[limits]
enrollments_per_minute = 100000000
$(cat "$work/limits.toml")

[store]
$2

[mdm]
kind = "allow_all"

[relying_party]
assertion_keys = ["$shared/assertion-key.pem"]

[ops]
listen = "127.0.0.1:0"
EOF
}

# serve NAME: starts `serve` on $work/NAME.toml; sets pid and url.
serve() {
    target/release/devicetrust-ca --log-format json serve --config "$work/$1.toml" 2>"$work/$1.log" &
    pid=$!
    replica_pids+=("$pid")
    url=
    for _ in $(seq 1 200); do
        url=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("fields", {}).get("message") == "serving":
        print("https://" + v["fields"]["addr"])
        break
' "$work/$1.log")
        ops=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("fields", {}).get("message", "").startswith("serving /healthz"):
        print("http://" + v["fields"]["addr"])
        break
' "$work/$1.log")
        [[ -n "$url" && -n "$ops" ]] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "devicetrust-ca serve did not start" >&2
    exit 1
}

stop_replicas() {
    for pid in "${replica_pids[@]}"; do
        kill -TERM "$pid"
        wait "$pid" || { echo "devicetrust-ca exited with $?" >&2; exit 1; }
    done
    replica_pids=()
}

ready_line() {
    python3 -c 'import json, sys; print(json.dumps({"url": sys.argv[1], "caBundle": sys.argv[2], "enrollmentToken": open(sys.argv[3]).read().strip()}))' \
        "$1" "$shared/tls-ca.pem" "$shared/enrollment-token"
}

# run SETUP REPLICAS: both load runs against REPLICAS fresh replicas of SETUP (sqlite or
# postgres).
run() {
    local setup=$1 replicas=$2 mode
    for mode in $MODES; do
        local store urls=() opss=() pids=() extra=() n
        if [[ $setup == sqlite ]]; then
            store='kind = "sqlite"'
            rm -rf "$work/data-sqlite-$mode"
        else
            psql -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
            store="url = \"postgres://postgres@localhost/bench?host=$pgdir\"
max_connections = $POOL"
            extra=(--db-pid "$postmaster")
        fi
        for n in $(seq 1 "$replicas"); do
            config "$setup-$mode-$n" "$store"
            serve "$setup-$mode-$n"
            urls+=("$url")
            opss+=("$ops")
            pids+=(--ca-pid "$pid")
        done
        local replica_args=()
        for u in "${urls[@]:1}"; do replica_args+=(--replica-url "$u"); done
        echo
        echo "### $setup, $replicas replica(s), $mode loop"
        echo
        if [[ $mode == closed ]]; then
            ready_line "${urls[0]}" | target/release/ca-loadgen --header --devices "$DEVICES" \
                --concurrency "$CONCURRENCY" --connections keep-alive "${pids[@]}" "${extra[@]}" "${replica_args[@]}"
        else
            ready_line "${urls[0]}" | target/release/ca-loadgen --header --devices "$DEVICES" \
                --concurrency 64 --connections keep-alive --no-renew --rate "$RATE" \
                "${pids[@]}" "${extra[@]}" "${replica_args[@]}"
        fi
        # What each replica's store calls took, from its /metrics (bucket bounds: an upper
        # estimate of the percentile).
        for o in "${opss[@]}"; do store_latency "$o"; done
        stop_replicas
    done
}

# store_latency OPS-URL: p50 and p99 of the store's enroll and renew calls.
store_latency() {
    python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
for op in ("enroll", "renew"):
    buckets = []
    for m in re.finditer(r'devicetrust_store_operation_seconds_bucket\{le="([^"]+)",operation="%s"\} (\d+)' % op, text):
        buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        continue
    total = buckets[-1][1]
    def pct(p):
        return next(le for le, n in buckets if n >= p * total)
    print(f"- {sys.argv[1]}: store `{op}` p50 <= {pct(0.5) * 1000:.1f} ms, p99 <= {pct(0.99) * 1000:.1f} ms ({total} calls)")
PY
}

echo "## devicetrust-ca on SQLite and PostgreSQL"
echo
describe_machine
echo "- PostgreSQL: $("$pgbin/postgres" --version), a cluster of its own on a Unix socket, shared_buffers 256MB, fsync and synchronous_commit on"
echo "- load: $DEVICES devices; closed loop $CONCURRENCY in flight; open loop $RATE enrollments/s (64 workers); load generator on the same machine; RUST_LOG=$RUST_LOG"
for setup in $SETUPS; do
    run "${setup%%:*}" "${setup#*:}"
done
