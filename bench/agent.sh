#!/usr/bin/env bash
# Benchmark of devicetrust-agent (release build), against a local `devicetrust-ca dev`.
#
#   bench/agent.sh               # 200 timed runs of `run`, 50 of `enroll`
#   RUNS=500 ENROLLS=100 bench/agent.sh
#
# Measures, and prints as Markdown for BENCHMARKS.md:
#   1. `run` when nothing is due (what the daily timer and every login do): median wall time
#      and peak RSS. `run` still asks the CA about the certificate (a mutual-TLS request to
#      127.0.0.1): that is how a revocation reaches the device.
#   2. `enroll` end to end (metadata, key, CSR, enrollment, store, NSS import): median wall
#      time, each run a fresh device (new UDID, empty home) so that the CA's limit of five
#      unbound certificates per device never interferes; and the same without the NSS
#      import (certutil/pk12util hidden from PATH) to show what the import costs.
# Targets: `run` <= 5 ms median and <= 10 MB peak RSS; `enroll` <= 50 ms median.
#
# Wall times come from hyperfine (installed with apt-get when missing and root), which
# runs each command without a shell (-N); peak RSS from GNU time (`/usr/bin/time -f %M`).
# The agent runs in a temporary HOME; the enrollment token reaches it through a 0600 file
# (--token-file), never a command line.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-200}
ENROLLS=${ENROLLS:-50}
RSS_RUNS=${RSS_RUNS:-50}

# --- tools (idempotent) -------------------------------------------------------------------
# shellcheck source=scripts/lib/require-tools.sh
source scripts/lib/require-tools.sh
require_tools hyperfine:hyperfine /usr/bin/time:time python3:python3 certutil:libnss3-tools

# --- build -----------------------------------------------------------------------------------
# Asked now: rustup finds its toolchain through HOME, which the agent's runs replace below.
rustc_version=$(rustc --version)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | wc -l)
cargo build --release --locked --quiet -p agent -p ca-server --bins
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
agent_bin=$bin/devicetrust-agent

work=$(mktemp -d "${TMPDIR:-/tmp}/devicetrust-bench.XXXXXX")
chmod 700 "$work"
ca_pid=""
cleanup() {
  if [ -n "$ca_pid" ] && kill -0 "$ca_pid" 2>/dev/null; then
    kill -TERM "$ca_pid" 2>/dev/null || true
    wait "$ca_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the CA ----------------------------------------------------------------------------------
"$bin/devicetrust-ca" dev --listen 127.0.0.1:0 --data-dir "$work/ca" >"$work/ca.json" 2>"$work/ca.log" &
ca_pid=$!
for _ in $(seq 600); do
  [ -s "$work/ca.json" ] && break
  kill -0 "$ca_pid" 2>/dev/null || { cat "$work/ca.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/ca.json" ] || { echo "error: the CA did not become ready" >&2; exit 1; }
ca_field() {
  python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1" <"$work/ca.json"
}
ca_url=$(ca_field url)
ca_bundle=$(ca_field caBundle)
(umask 077 && ca_field enrollmentToken >"$work/token")

# write_config FILE UDID: an agent configuration for the local CA.
write_config() {
  printf 'ca_url = "%s"\nca_bundle = "%s"\ndevice_udid = "%s"\ndevice_serial = "BENCH0001"\n' \
    "$ca_url" "$ca_bundle" "$2" >"$1"
}

# The agent's environment: a home of its own; stdout and the log are not what is measured.
export HOME=$work/home XDG_DATA_HOME=$work/home/.local/share XDG_CONFIG_HOME=$work/home/.config
export XDG_RUNTIME_DIR=$work/run DEVICETRUST_LOG=warn
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
write_config "$work/run.toml" BENCH-RUN-0001
"$agent_bin" --config "$work/run.toml" enroll --token-file "$work/token" >/dev/null
"$agent_bin" --config "$work/run.toml" run >/dev/null # nothing is due: exits 0

# median_ms JSON: hyperfine's median, in milliseconds, with its min and max.
median_ms() {
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print("%.2f ms (min %.2f, max %.2f, %d runs)" % (r["median"] * 1e3, r["min"] * 1e3, r["max"] * 1e3, len(r["times"])))
' "$1"
}

# 1. `run`, nothing due.
hyperfine -N --style none --warmup 10 --runs "$RUNS" --export-json "$work/run.json" \
  "$agent_bin --config $work/run.toml run" >/dev/null
rss=()
for _ in $(seq "$RSS_RUNS"); do
  rss+=("$(/usr/bin/time -f %M "$agent_bin" --config "$work/run.toml" run 2>&1 >/dev/null | tail -1)")
done
rss_summary=$(printf '%s\n' "${rss[@]}" | python3 -c '
import statistics, sys
kb = [int(line) for line in sys.stdin if line.strip()]
print("%.1f MB peak (median %.1f MB, %d runs)" % (max(kb) / 1024, statistics.median(kb) / 1024, len(kb)))')

# 2. `enroll`, each run a new device in an empty home.
cat >"$work/prepare.sh" <<EOF
#!/usr/bin/env bash
# Before each timed enroll: an empty home and a device the CA has not seen.
set -euo pipefail
rm -rf "$work/home/.local/share/devicetrust" "$work/home/.pki"
printf 'ca_url = "%s"\nca_bundle = "%s"\ndevice_udid = "BENCH-ENROLL-%s"\ndevice_serial = "BENCH0001"\n' \
  "$ca_url" "$ca_bundle" "\$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" >"$work/enroll.toml"
EOF
chmod +x "$work/prepare.sh"
hyperfine -N --style none --warmup 3 --runs "$ENROLLS" --prepare "$work/prepare.sh" \
  --export-json "$work/enroll.json" \
  "$agent_bin --config $work/enroll.toml enroll --token-file $work/token" >/dev/null

# 2b. The same with certutil and pk12util out of reach: the agent skips the NSS import
# (it warns), which shows what the import's subprocesses cost.
mkdir -p "$work/path-without-nss"
for tool in bash env od tr rm; do
  tool=$(command -v "$tool")
  ln -sf "$tool" "$work/path-without-nss/"
done
PATH=$work/path-without-nss "$(command -v hyperfine)" -N --style none --warmup 3 --runs "$ENROLLS" \
  --prepare "$work/prepare.sh" --export-json "$work/enroll-no-nss.json" \
  "$agent_bin --config $work/enroll.toml enroll --token-file $work/token" >/dev/null

cat <<EOF
## devicetrust-agent

- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit ($dirty files with uncommitted changes)
- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)
- $rustc_version, release profile; $(hyperfine --version)
- command: \`bench/agent.sh\` (RUNS=$RUNS ENROLLS=$ENROLLS RSS_RUNS=$RSS_RUNS)

| what | result | target |
|---|---|---|
| \`run\`, nothing due (includes the mutual-TLS status request) | $(median_ms "$work/run.json") | <= 5 ms median |
| \`run\`, nothing due: peak RSS | $rss_summary | <= 10 MB |
| \`enroll\` end to end, with the NSS import | $(median_ms "$work/enroll.json") | <= 50 ms median |
| \`enroll\` end to end, NSS import skipped | $(median_ms "$work/enroll-no-nss.json") | (for comparison) |
EOF
