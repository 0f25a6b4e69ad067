#!/usr/bin/env bash
# The test command: installs what the tests need on a Debian machine, then runs every test.
#
# The end-to-end tests drive real programs: headless Chromium (Debian `chromium`), the NSS
# tools (`certutil`, `pk12util` from `libnss3-tools`), `openssl`, `python3`, and for the
# relying-party test the reverse proxies `nginx` and `caddy`, PostgreSQL (`initdb`,
# `postgres`) for the store and replica tests, and Node's `jose` (a JOSE
# library other than the CA's), for the OpenID Connect test Node's `openid-client`, and
# `systemd-analyze` (Debian `systemd`) for the systemd units. When one is missing and this runs as root with apt-get, it
# is installed (idempotently); otherwise the script stops and names what is missing. It
# never skips a test silently.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/require-tools.sh
source scripts/lib/require-tools.sh
require_tools chromium:chromium certutil:libnss3-tools pk12util:libnss3-tools openssl:openssl python3:python3 \
  nginx:nginx caddy:caddy node:nodejs npm:npm systemd-analyze:systemd

# PostgreSQL's server programs (initdb, postgres), for the store suite and the replica
# tests: each test starts a throwaway cluster of its own in a temporary directory, on a Unix
# socket only, and stops it (testkit/src/postgres.rs). Debian keeps them off PATH, under
# /usr/lib/postgresql/<version>/bin.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  require_tools /usr/lib/postgresql/initdb:postgresql
fi

# nginx must have auth_request and ssl_ocsp (1.19 or later); Debian's package has both.
nginx_version=$(nginx -v 2>&1 | sed -n 's|^nginx version: nginx/\([0-9.]*\).*|\1|p')
if ! nginx -V 2>&1 | grep -q -- --with-http_auth_request_module \
  || [ "$(printf '%s\n' 1.19 "$nginx_version" | sort -V | head -n1)" != 1.19 ]; then
  echo "error: nginx ${nginx_version:-?} lacks http_auth_request_module or ssl_ocsp (needs 1.19+)" >&2
  exit 1
fi

# `jose` and `openid-client` go into the repository's own folder (never global), from the
# committed lock file: again whenever the lock file changed since the last install.
if [ ! -f tests/js/node_modules/.package-lock.json ] \
  || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

# `test-hooks` compiles the crash hook into the agent so that its crash tests run too. That
# build goes into a target directory of its own, so that `target/debug/devicetrust-agent`
# (what `cargo build`, the quick start and `install` use) is never the hooked binary.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/test-hooks"
exec cargo test --workspace --locked --features agent/test-hooks "$@"
