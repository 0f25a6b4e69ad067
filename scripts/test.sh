#!/usr/bin/env bash
# The test command: installs what the tests need on a Debian machine, then runs every test.
#
# The end-to-end tests drive real programs: headless Chromium (Debian `chromium`), the NSS
# tools (`certutil`, `pk12util` from `libnss3-tools`), `openssl` and `python3`. When one is
# missing and this runs as root with apt-get, it is installed (idempotently); otherwise the
# script stops and names what is missing. It never skips a test silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/require-tools.sh
source scripts/lib/require-tools.sh
require_tools chromium:chromium certutil:libnss3-tools pk12util:libnss3-tools openssl:openssl python3:python3

# `test-hooks` compiles the crash hook into the agent so that its crash tests run too.
exec cargo test --workspace --locked --features agent/test-hooks "$@"
