# shellcheck shell=bash
# require_tools TOOL:PACKAGE ...: makes sure each TOOL (a command name, or an absolute path)
# is there. Missing ones are installed from their Debian PACKAGE when running as root with
# apt-get (idempotent: nothing is installed when everything is present); otherwise the
# script stops and names the packages. Sourced by scripts/test.sh, scripts/quickstart.sh and
# bench/agent.sh, so that the three ask for their tools in one way.
require_tools() {
  local missing=() pair tool package
  for pair in "$@"; do
    tool=${pair%%:*}
    package=${pair#*:}
    if [[ $tool == /* ]]; then
      [ -x "$tool" ] && continue
    else
      command -v "$tool" >/dev/null 2>&1 && continue
    fi
    missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "error: these Debian packages are missing: ${missing[*]}" >&2
    echo "install them (sudo apt-get install ${missing[*]}) and run again" >&2
    exit 1
  fi
}
