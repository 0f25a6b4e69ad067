#!/usr/bin/env bash
# Quick start: the whole job on this machine, in one command.
#
#   scripts/quickstart.sh            # debug build (compiles fastest)
#   scripts/quickstart.sh --release  # optimised build
#
# It builds devicetrust-ca and devicetrust-agent, starts the reference CA in dev mode on
# 127.0.0.1 (a free port, a temporary data directory, every device counted as managed),
# enrolls an agent, shows `status`, renews, shows the CA's event log, and stops the CA.
#
# Nothing of yours is touched: the agent runs with HOME and XDG_* pointing into a
# temporary directory, so its identity store, its NSS database (~/.pki/nssdb) and its
# configuration live there, and everything is deleted on exit (KEEP=1 keeps it). The
# enrollment and admin tokens reach the programs on stdin, never on a command line.
#
# Needs cargo (https://rustup.rs) and python3 (to read the CA's JSON line and format the
# events); certutil/pk12util (Debian: libnss3-tools) for the NSS import step. As root with
# apt-get, missing Debian packages are installed; otherwise the script names them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

profile=debug
cargo_profile=()
case "${1:-}" in
  "") ;;
  --release) profile=release; cargo_profile=(--release) ;;
  -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }

# --- tools ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust from https://rustup.rs and run again" >&2
  exit 1
fi
# shellcheck source=scripts/lib/require-tools.sh
source scripts/lib/require-tools.sh
require_tools python3:python3 certutil:libnss3-tools pk12util:libnss3-tools

# --- build ---------------------------------------------------------------------------
say "building devicetrust-ca and devicetrust-agent ($profile profile)"
cargo build --locked "${cargo_profile[@]}" -p agent -p ca-server --bins
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=$target_dir/$profile

# --- a scratch area, and the CA stopped whatever happens -------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/devicetrust-quickstart.XXXXXX")
ca_pid=""
cleanup() {
  local status=$?
  if [ -n "$ca_pid" ] && kill -0 "$ca_pid" 2>/dev/null; then
    kill -TERM "$ca_pid" 2>/dev/null || true
    wait "$ca_pid" 2>/dev/null || true
    echo "stopped the CA (pid $ca_pid)"
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $work (CA data, agent home, logs)"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the CA ----------------------------------------------------------------------------
say "starting the CA: devicetrust-ca dev on 127.0.0.1 (data in $work/ca)"
"$bin/devicetrust-ca" dev --listen 127.0.0.1:0 --data-dir "$work/ca" >"$work/ca.json" 2>"$work/ca.log" &
ca_pid=$!
# It prints one JSON line once it accepts connections.
for _ in $(seq 600); do
  [ -s "$work/ca.json" ] && break
  if ! kill -0 "$ca_pid" 2>/dev/null; then
    echo "error: the CA exited; its log:" >&2
    cat "$work/ca.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ ! -s "$work/ca.json" ]; then
  echo "error: the CA did not become ready in 60 s; its log:" >&2
  cat "$work/ca.log" >&2
  exit 1
fi

# ca_field NAME: one field of the CA's JSON line (secrets are printed only into pipes).
ca_field() {
  python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1" <"$work/ca.json"
}
ca_url=$(ca_field url)
echo "CA at $ca_url, cert-auth domain $(ca_field certAuthDomain)"

# --- the agent, in a home of its own -----------------------------------------------------
home=$work/home
mkdir -p "$home"
cat >"$work/agent.toml" <<EOF
# The quick start's agent configuration (see docs/agent.md).
ca_url = "$ca_url"
# Trust only the dev CA's TLS root for the connection to the CA.
ca_bundle = "$(ca_field caBundle)"
# A demo device identity, so that this also works in containers without DMI data.
device_udid = "QUICKSTART-$(hostname | tr -c 'A-Za-z0-9-\n' '-')"
device_serial = "QUICKSTART0001"
EOF

agent() {
  HOME=$home XDG_DATA_HOME=$home/.local/share XDG_CONFIG_HOME=$home/.config \
    XDG_RUNTIME_DIR=$work/run "$bin/devicetrust-agent" --config "$work/agent.toml" "$@"
}

say "enrolling (HOME=$home; the token goes in on stdin)"
ca_field enrollmentToken | agent enroll --token-stdin

say "devicetrust-agent status"
agent status

say "devicetrust-agent renew --force"
agent renew --force

say "devicetrust-agent status --jamf-ea"
agent status --jamf-ea

say "the CA's event log (GET /api/v1/admin/events, admin token in a header)"
# shellcheck disable=SC2016 # the Python program is single-quoted on purpose
ca_field adminToken | python3 -c '
import json, ssl, sys, urllib.request
url, bundle = sys.argv[1], sys.argv[2]
token = sys.stdin.readline().strip()
request = urllib.request.Request(url + "/api/v1/admin/events?limit=100",
                                 headers={"Authorization": "Bearer " + token})
context = ssl.create_default_context(cafile=bundle)
with urllib.request.urlopen(request, context=context) as response:
    events = json.load(response)["events"]
row = "{:>3}  {:<24}  {:<34}  {:<7}  {:<10}  {}"
print(row.format("id", "published", "eventType", "outcome", "user", "serialNumber / reason"))
for e in events:
    detail = e.get("serialNumber") or ""
    if e.get("reason"):
        detail = (detail + " " + e["reason"]).strip()
    print(row.format(e["id"], e["published"][:23], e["eventType"], e["outcome"],
                     e.get("user") or "-", detail))
' "$ca_url" "$(ca_field caBundle)"

say "done: the CA stops now; $work is removed (KEEP=1 keeps it). Your own files were not touched."
