#!/usr/bin/env bash
# Quick start: the whole job on this machine, in one command.
#
#   scripts/quickstart.sh            # debug build (compiles fastest)
#   scripts/quickstart.sh --release  # optimised build
#
# It builds devicetrust-ca and devicetrust-agent, starts the reference CA in dev mode on
# 127.0.0.1 (a free port, a temporary data directory, every device counted as managed),
# enrolls an agent, shows `status`, renews; then shows the point of it all: nginx in front of
# a small demo app (devicetrust-demo-app, tests/src/bin/) asks the CA about every request's client
# certificate (auth_request, docs/relying-parties.md), so the app opens with the device's
# identity; an OpenID Connect sign-in (curl and python3 playing the identity provider) gets
# an ID token with the device claim (docs/identity-providers.md); and once an administrator
# has revoked the device (devicetrust-ca admin), the app refuses the same request and the
# sign-in is denied. Last, it shows the CA's event log and stops everything it started.
#
# Nothing of yours is touched: the agent runs with HOME and XDG_* pointing into a
# temporary directory, so its identity store, its NSS database (~/.pki/nssdb) and its
# configuration live there, and everything is deleted on exit (KEEP=1 keeps it). The
# enrollment and admin tokens and the relying-party secret reach the programs on stdin or in
# 0600 files, never on a command line; the device's key is used where the agent keeps it.
#
# Needs cargo (https://rustup.rs), python3 (the CA's JSON line, the sign-in),
# certutil/pk12util (Debian: libnss3-tools) for the NSS import step, nginx and curl. As root
# with apt-get, missing Debian packages are installed (Debian's nginx package also starts its
# own service on port 80); otherwise the script names them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

profile=debug
cargo_profile=()
case "${1:-}" in
  "") ;;
  --release) profile=release; cargo_profile=(--release) ;;
  -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
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
# nginx lives in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin
require_tools python3:python3 certutil:libnss3-tools pk12util:libnss3-tools nginx:nginx curl:curl

# --- build ---------------------------------------------------------------------------
say "building devicetrust-ca and devicetrust-agent ($profile profile)"
cargo build --locked "${cargo_profile[@]}" -p agent -p ca-server --bins
cargo build --locked "${cargo_profile[@]}" -p tests --bin devicetrust-demo-app
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=$target_dir/$profile

# --- a scratch area, and the CA stopped whatever happens -------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/devicetrust-quickstart.XXXXXX")
ca_pid="" app_pid="" nginx_pid=""
# stop NAME PID: SIGTERM to one process this script started, then wait for it.
stop() {
  if [ -n "$2" ] && kill -0 "$2" 2>/dev/null; then
    kill -TERM "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
    echo "stopped $1 (pid $2)"
  fi
}
cleanup() {
  local status=$?
  stop nginx "$nginx_pid"
  stop "the demo app" "$app_pid"
  stop "the CA" "$ca_pid"
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $work (CA data, agent home, logs)"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: a TCP port free on 127.0.0.1 just now (for nginx, which cannot bind port 0).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
nginx_port=$(free_port)

# --- the CA ----------------------------------------------------------------------------
# One relying party: the nginx in front of the demo app, with its own secret (0600 file).
(umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$work/rp.secret")
cat >"$work/rp.toml" <<EOF
# The quick start's relying parties (the keys of [relying_party]; docs/relying-parties.md).
protected_origins = ["https://127.0.0.1:$nginx_port"]
decision_cache_secs = 5

[[clients]]
name = "quickstart-nginx"
secret = { file = "rp.secret" }
proxy = "nginx"
allowed_sources = ["127.0.0.1"]
EOF

say "starting the CA: devicetrust-ca dev on 127.0.0.1 (data in $work/ca)"
"$bin/devicetrust-ca" dev --listen 127.0.0.1:0 --data-dir "$work/ca" \
  --relying-parties "$work/rp.toml" --http-listen 127.0.0.1:0 \
  --oidc-redirect-uri http://127.0.0.1:9/callback >"$work/ca.json" 2>"$work/ca.log" &
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
ca_bundle=$(ca_field caBundle)
echo "CA at $ca_url, cert-auth domain $(ca_field certAuthDomain); OCSP, CRL and JWKS also at $(ca_field httpUrl)"

# --- the agent, in a home of its own -----------------------------------------------------
home=$work/home
mkdir -p "$home"
cat >"$work/agent.toml" <<EOF
# The quick start's agent configuration (see docs/agent.md).
ca_url = "$ca_url"
# Trust only the dev CA's TLS root for the connection to the CA.
ca_bundle = "$ca_bundle"
# A demo device identity, so that this also works in containers without DMI data.
device_udid = "QUICKSTART-$(hostname | tr -c 'A-Za-z0-9-\n' '-')"
device_serial = "QUICKSTART0001"
EOF

# No session bus either: `enroll` installs the scheduled run, and its systemctl --user must
# not reach your own user manager (it finds none under $work/run and leaves the timer's
# files in the demo home).
agent() {
  env -u DBUS_SESSION_BUS_ADDRESS HOME="$home" XDG_DATA_HOME="$home/.local/share" \
    XDG_CONFIG_HOME="$home/.config" XDG_RUNTIME_DIR="$work/run" \
    "$bin/devicetrust-agent" --config "$work/agent.toml" "$@"
}

say "enrolling (HOME=$home; the token goes in on stdin)"
ca_field enrollmentToken | agent enroll --token-stdin

say "devicetrust-agent status"
agent status

say "devicetrust-agent renew --force"
agent renew --force

say "devicetrust-agent status --jamf-ea"
agent status --jamf-ea

# --- an app behind nginx, gated by the CA ------------------------------------------------
say "starting the demo app (devicetrust-demo-app: it verifies the device assertion) and nginx in front of it"
"$bin/devicetrust-demo-app" --listen 127.0.0.1:0 --jwks-url "$ca_url/.well-known/jwks.json" \
  --ca-bundle "$ca_bundle" --issuer "$(ca_field certAuthDomain)" --audience quickstart-nginx \
  >"$work/app.json" 2>"$work/app.log" &
app_pid=$!
for _ in $(seq 100); do
  [ -s "$work/app.json" ] && break
  kill -0 "$app_pid" 2>/dev/null || { cat "$work/app.log" >&2; exit 1; }
  sleep 0.1
done
app_url=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["url"])' <"$work/app.json")
ca_port=${ca_url##*:}

mkdir -p "$work/nginx"
# The secret goes into a 0600 include, as in docs/relying-parties.md: nginx's configuration
# holds it, so that file must be readable by its owner only.
(umask 077 && printf 'proxy_set_header Authorization "Bearer %s";\n' "$(cat "$work/rp.secret")" \
  >"$work/nginx/rp-secret.conf")
if [ "$(id -u)" = 0 ]; then nginx_user="user nobody nogroup;"; else nginx_user=""; fi

# write_nginx_conf PORT: the configuration of docs/relying-parties.md on 127.0.0.1:PORT, with
# the dev CA's TLS certificate for nginx too (it names 127.0.0.1 and localhost).
write_nginx_conf() {
  cat >"$work/nginx/nginx.conf" <<NGINX
$nginx_user
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
    access_log $work/nginx/access.log;
    client_body_temp_path $work/nginx/tmp-body;
    proxy_temp_path $work/nginx/tmp-proxy;
    fastcgi_temp_path $work/nginx/tmp-fastcgi;
    uwsgi_temp_path $work/nginx/tmp-uwsgi;
    scgi_temp_path $work/nginx/tmp-scgi;

    upstream devicetrust_ca { server 127.0.0.1:$ca_port; keepalive 4; }

    server {
        listen 127.0.0.1:$1 ssl;
        server_name localhost;
        ssl_certificate     $work/ca/tls.pem;
        ssl_certificate_key $work/ca/tls.key;
        ssl_verify_client optional_no_ca;

        location / {
            auth_request /_devicetrust/check;
            auth_request_set \$dt_udid        \$upstream_http_x_devicetrust_device_udid;
            auth_request_set \$dt_serial      \$upstream_http_x_devicetrust_device_serial;
            auth_request_set \$dt_cert_serial \$upstream_http_x_devicetrust_certificate_serial;
            auth_request_set \$dt_user        \$upstream_http_x_devicetrust_user;
            auth_request_set \$dt_assertion   \$upstream_http_x_devicetrust_assertion;
            auth_request_set \$dt_error       \$upstream_http_x_devicetrust_error;
            error_page 401 403 /_devicetrust/denied;
            proxy_set_header X-DeviceTrust-Device-Udid        \$dt_udid;
            proxy_set_header X-DeviceTrust-Device-Serial      \$dt_serial;
            proxy_set_header X-DeviceTrust-Certificate-Serial \$dt_cert_serial;
            proxy_set_header X-DeviceTrust-User               \$dt_user;
            proxy_set_header X-DeviceTrust-Assertion          \$dt_assertion;
            proxy_set_header X-DeviceTrust-Client-Cert        "";
            proxy_set_header X-DeviceTrust-Error              "";
            proxy_set_header X-DeviceTrust-Learn-More         "";
            proxy_pass $app_url;
        }

        location = /_devicetrust/check {
            internal;
            proxy_pass https://devicetrust_ca/api/v1/relying-party/check;
            proxy_method GET;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host localhost;
            include $work/nginx/rp-secret.conf;
            proxy_set_header X-DeviceTrust-Client-Cert \$ssl_client_escaped_cert;
            proxy_set_header X-DeviceTrust-User "";
            proxy_set_header Cookie "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $ca_bundle;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
        }

        location = /_devicetrust/denied {
            internal;
            default_type text/html;
            add_header X-DeviceTrust-Error \$dt_error always;
            add_header Cache-Control no-store always;
            return 403 '<!doctype html><title>Security requirements</title><h1>Security requirements</h1><p>This app opens only on a managed device with a valid device certificate (<code>\$dt_error</code>).</p>\n';
        }
    }
}
NGINX
}

# nginx cannot bind port 0: it gets the port picked before the CA started (the CA's protected
# origin), or a few other free ones should another program take it meanwhile. nginx writes
# its pid file once it listens.
for attempt in 1 2 3 4 5; do
  write_nginx_conf "$nginx_port"
  rm -f "$work/nginx/error.log"
  nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
    2>>"$work/nginx/stderr.log" &
  nginx_pid=$!
  for _ in $(seq 100); do
    [ -s "$work/nginx/nginx.pid" ] && break
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -s "$work/nginx/nginx.pid" ] && break
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=""
  if [ "$attempt" -lt 5 ] && grep -qs "Address already in use" "$work/nginx/error.log"; then
    nginx_port=$(free_port)
    echo "(port taken; nginx tries $nginx_port, which is not the CA's protected origin: curl does not mind)"
    continue
  fi
  echo "error: nginx did not start; its log:" >&2
  cat "$work/nginx/error.log" "$work/nginx/stderr.log" >&2 2>/dev/null || true
  exit 1
done
app=https://127.0.0.1:$nginx_port/
echo "the demo app at $app_url, behind nginx at $app (relying party \"quickstart-nginx\")"

# The device's identity where the agent keeps it: status --json names the key file, and the
# certificate lies beside it. Nothing is copied; curl reads both in place.
key=$(agent status --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["store"]["keyFile"])')
cert=$(dirname "$key")/cert.pem

# show_response HEADERS BODY: the status line, X-DeviceTrust-Error when there is one, the body.
show_response() {
  head -n 1 "$1" | tr -d '\r'
  grep -i '^x-devicetrust-error:' "$1" | tr -d '\r' || true
  cat "$2"
}
status_of() { head -n 1 "$1" | cut -d' ' -f2; }

say "opening the app through nginx with the device's certificate (curl --cert/--key, read in place)"
curl -sS --cacert "$ca_bundle" --cert "$cert" --key "$key" -H 'Accept: application/json' \
  -D "$work/admitted.h" -o "$work/admitted.b" "$app"
show_response "$work/admitted.h" "$work/admitted.b"
if [ "$(status_of "$work/admitted.h")" != 200 ]; then
  echo "error: the app did not admit the device; nginx's and the CA's logs:" >&2
  cat "$work/nginx/error.log" "$work/ca.log" >&2
  exit 1
fi
udid=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["udid"])' <"$work/admitted.b")

say "the same app without a certificate, but with the certificate forged into X-DeviceTrust-Client-Cert"
forged=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(open(sys.argv[1]).read(), safe=""))' "$cert")
curl -sS --cacert "$ca_bundle" -H "X-DeviceTrust-Client-Cert: $forged" -D "$work/forged.h" -o "$work/forged.b" "$app"
show_response "$work/forged.h" "$work/forged.b"

# --- an OpenID Connect sign-in: this script plays the identity provider ------------------
# authorize: the browser's step (curl with the device's certificate, which
# follows no redirect); prints the Location the CA sends the browser back to.
oidc_issuer=$(ca_field oidcIssuer)
python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$work/pkce.verifier"
authorize() {
  # shellcheck disable=SC2016 # the Python program is single-quoted on purpose
  url=$(python3 -c '
import base64, hashlib, sys, urllib.parse
issuer, verifier = sys.argv[1], open(sys.argv[2]).read().strip()
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
print(issuer + "/oidc/authorize?" + urllib.parse.urlencode({
    "response_type": "code", "client_id": "dev", "redirect_uri": "http://127.0.0.1:9/callback",
    "scope": "openid", "state": "quickstart", "nonce": "n-quickstart",
    "code_challenge": challenge, "code_challenge_method": "S256"}))' "$oidc_issuer" "$work/pkce.verifier")
  curl -sS --cacert "$ca_bundle" --cert "$cert" --key "$key" -o /dev/null -w '%{redirect_url}' "$url"
}

say "signing in through OpenID Connect: the browser's step (GET /oidc/authorize, mutual TLS)"
location=$(authorize)
echo "the CA sends the browser back to: ${location%%code=*}code=…"
case $location in *"code="*) ;; *) echo "error: no code: $location" >&2; cat "$work/ca.log" >&2; exit 1 ;; esac

say "the identity provider's step (POST /oidc/token with its secret from the 0600 file, PKCE verifier)"
# shellcheck disable=SC2016 # the Python program is single-quoted on purpose
python3 -c '
import base64, json, ssl, sys, urllib.parse, urllib.request
issuer, bundle, location, secret_file, verifier_file = sys.argv[1:6]
code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
secret = open(secret_file).read().strip()
form = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code,
    "redirect_uri": "http://127.0.0.1:9/callback",
    "code_verifier": open(verifier_file).read().strip()}).encode()
basic = base64.b64encode(("dev:" + urllib.parse.quote(secret, safe="")).encode()).decode()
request = urllib.request.Request(issuer + "/oidc/token", data=form,
    headers={"Authorization": "Basic " + basic, "Content-Type": "application/x-www-form-urlencoded"})
with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=bundle)) as response:
    tokens = json.load(response)
payload = tokens["id_token"].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print("ID token (ES256; a client verifies it with " + issuer + "/oidc/jwks.json):")
for name in ("iss", "aud", "sub", "acr", "amr", "device"):
    print("  {:<7} {}".format(name, json.dumps(claims[name])))
' "$oidc_issuer" "$ca_bundle" "$location" "$(ca_field oidcClientSecretFile)" "$work/pkce.verifier"

# The administrator's side: devicetrust-ca admin, with the admin token from its 0600 file.
admin() {
  "$bin/devicetrust-ca" admin --url "$ca_url" --ca-bundle "$ca_bundle" --token-file "$(ca_field adminTokenFile)" "$@"
}

say "what the CA knows of the device: devicetrust-ca admin devices show $udid"
admin devices show "$udid"

say "revoking the device: devicetrust-ca admin devices revoke $udid"
admin devices revoke "$udid"

say "the same request with the device's certificate, after the revocation"
curl -sS --cacert "$ca_bundle" --cert "$cert" --key "$key" -D "$work/refused.h" -o "$work/refused.b" "$app"
show_response "$work/refused.h" "$work/refused.b"
if [ "$(status_of "$work/refused.h")" != 403 ]; then
  echo "error: the revoked device was not refused" >&2
  exit 1
fi

say "the same OpenID Connect sign-in, after the revocation"
location=$(authorize)
python3 -c 'import sys, urllib.parse
q = urllib.parse.parse_qs(urllib.parse.urlsplit(sys.argv[1]).query)
print("back to the identity provider with error=" + q["error"][0] + ": " + q["error_description"][0])' "$location"
case $location in *"error=access_denied"*) ;; *) echo "error: the sign-in was not denied: $location" >&2; exit 1 ;; esac

say "the CA's event log: devicetrust-ca admin events --since 1h"
admin events --since 1h

say "done: nginx, the demo app and the CA stop now; $work is removed (KEEP=1 keeps it). Your own files were not touched."
