# shellcheck shell=bash
# What the benchmark scripts share: release builds, a 0700 scratch directory removed on
# exit (with the CA stopped), limits that lift the per-address budgets (every request of a
# benchmark comes from 127.0.0.1, while a fleet has many addresses), starting and stopping
# `devicetrust-ca dev`, and the machine's description. Source it from the repository root.

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

# The connection caps stay above the concurrency.
cat >"$work/limits.toml" <<'LIMITS'
requests_per_minute_per_address = 100000000
auth_failures_per_minute_per_address = 100000000
max_connections_per_address = 1024
LIMITS

# start_ca NAME [dev args...]: a CA with data in $work/data-NAME, its JSON line in
# $work/ready-NAME.json and its log in $work/ca-NAME.log; sets ca_pid.
start_ca() {
    local name=$1
    shift
    target/release/devicetrust-ca dev --listen 127.0.0.1:0 --data-dir "$work/data-$name" \
        --limits "$work/limits.toml" "$@" >"$work/ready-$name.json" 2>"$work/ca-$name.log" &
    ca_pid=$!
    for _ in $(seq 1 100); do
        [[ -s "$work/ready-$name.json" ]] && return 0
        kill -0 "$ca_pid" 2>/dev/null || { cat "$work/ca-$name.log" >&2; exit 1; }
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

# shellcheck source=bench/machine.sh
source bench/machine.sh
