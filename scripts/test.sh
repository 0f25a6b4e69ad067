#!/usr/bin/env bash
# The test command: installs what the tests need on a Debian machine, then runs every test.
#
# The end-to-end tests drive real programs: headless Chromium (Debian `chromium`), the NSS
# tools (`certutil`, `pk12util` from `libnss3-tools`), `openssl` and `python3`. When one is
# missing and this runs as root with apt-get, it is installed (idempotently); otherwise the
# script stops and names what is missing. It never skips a test silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package that provides it
declare -A needed=(
  [chromium]=chromium
  [certutil]=libnss3-tools
  [pk12util]=libnss3-tools
  [openssl]=openssl
  [python3]=python3
)

missing_packages=()
for tool in "${!needed[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing_packages+=("${needed[$tool]}")
done

if [ "${#missing_packages[@]}" -gt 0 ]; then
  mapfile -t missing_packages < <(printf '%s\n' "${missing_packages[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing_packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
  else
    echo "error: the tests need these Debian packages: ${missing_packages[*]}" >&2
    echo "install them (sudo apt-get install ${missing_packages[*]}) and run again" >&2
    exit 1
  fi
fi

# `test-hooks` compiles the crash hook into the agent so that its crash tests run too.
exec cargo test --workspace --locked --features agent/test-hooks "$@"
