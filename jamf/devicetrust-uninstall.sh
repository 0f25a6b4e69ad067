#!/bin/sh
# DeviceTrust removal, for a Jamf Pro policy (Scripts payload). Jamf Pro runs it as root.
#
# Jamf Pro passes $1 mount point, $2 computer name, $3 user name, then:
#   $4  "yes" to also delete the agent binary and forget its package receipt (default: keep
#       it, so that the enrollment policy can enroll the Mac again later).
#
# It removes the console user's DeviceTrust artifacts (keychain, password item, identity
# preferences, browser entries, LaunchAgent) through `devicetrust-agent jamf ... uninstall`,
# then the system-wide ones through `devicetrust-agent uninstall --system`. Running it twice
# removes nothing the second time and still succeeds. The exit code is the first failure's;
# 2 before the agent runs: its binary, or a directory above it, could be replaced by someone
# other than root.
set -eu

agent=${DEVICETRUST_AGENT:-/Library/DeviceTrust/bin/devicetrust-agent}
link=/usr/local/bin/devicetrust-agent
package_id=com.devicetrust.agent
remove_binary=${4:-no}

if [ ! -x "$agent" ]; then
  echo "INFO: $agent is not installed: nothing to uninstall"
  exit 0
fi

# The agent runs as root here, so it must be a file only root can change: the same rule as
# the agent's own check (agent/src/trust.rs, docs/agent.md "Running as root"). Every symbolic
# link is resolved first and the resolved path is what runs, so a link in a directory others
# can write (/usr/local/bin on an Intel Mac with Homebrew) cannot be repointed between the
# check and the run. The file must be a regular file owned by root and not writable by its
# group or by others; so must every directory above it up to /, except that a root-owned
# directory with the sticky bit (like /tmp) may be writable by others. The same block is in
# devicetrust-policy.sh and devicetrust-uninstall.sh, because Jamf Pro uploads each script
# on its own.
refuse_agent() {
  echo "ERROR: refusing to run $agent as root: $1 ($(ls -ldn -- "$1")) $2; install the agent where only root can write (the package puts it in /Library/DeviceTrust/bin)"
  exit 2
}

# Fails unless $1 is owned by root and not writable by its group or by others; a directory
# ($2 = dir) may be writable by others when it has the sticky bit.
check_owner_and_mode() {
  if [ -z "$(find "$1" -prune -user 0 -print)" ]; then
    refuse_agent "$1" "is not owned by root"
  fi
  if [ -n "$(find "$1" -prune \( -perm -0020 -o -perm -0002 \) -print)" ]; then
    if [ "$2" != dir ] || [ -z "$(find "$1" -prune -perm -1000 -print)" ]; then
      refuse_agent "$1" "is writable by its group or by others"
    fi
  fi
}

# Resolves every symbolic link of $agent, checks the file and each directory up to /, and
# sets agent to the resolved path.
check_agent() {
  path=$agent
  hops=0
  while [ -L "$path" ]; do
    hops=$((hops + 1))
    [ "$hops" -le 40 ] || refuse_agent "$path" "is a chain of too many symbolic links"
    target=$(readlink "$path") || refuse_agent "$path" "cannot be resolved"
    case $target in
      /*) path=$target ;;
      *) path=$(dirname "$path")/$target ;;
    esac
  done
  dir=$(cd -P "$(dirname "$path")" && pwd -P) || refuse_agent "$path" "cannot be resolved"
  path=${dir%/}/$(basename "$path")
  [ -f "$path" ] || refuse_agent "$path" "is not a regular file"
  check_owner_and_mode "$path" file
  while :; do
    check_owner_and_mode "$dir" dir
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
  agent=$path
}

check_agent

console_user=$(/usr/bin/stat -f%Su /dev/console 2>/dev/null || true)
case "$console_user" in
  "" | root | loginwindow | _mbsetupuser) console_user="" ;;
esac

status=0
"$agent" jamf "${1:-/}" "${2:-}" "${3:-}" uninstall || status=$?

system_status=0
"$agent" uninstall --system || system_status=$?
if [ "$status" -eq 0 ]; then
  status=$system_status
fi

case "$remove_binary" in
  yes | YES | Yes | true | 1)
    if [ -z "$console_user" ]; then
      # Without the binary, the user's keychain and LaunchAgent could never be cleaned up.
      echo "ERROR: nobody is logged in, so the user's DeviceTrust items remain; keeping $agent: run this policy again while a user is logged in"
      exit 1
    fi
    if [ "$status" -ne 0 ]; then
      echo "WARN: uninstall failed (exit $status); keeping $agent so that it can be run again"
      exit "$status"
    fi
    rm -f "$agent"
    echo "INFO: removed $agent"
    # The link for people, only when it is ours (it points at the binary just removed).
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$agent" ]; then
      rm -f "$link"
      echo "INFO: removed the link $link"
    fi
    /usr/sbin/pkgutil --forget "$package_id" >/dev/null 2>&1 || true
    echo "INFO: forgot the $package_id package receipt"
    ;;
esac
exit "$status"
