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
# removes nothing the second time and still succeeds. The exit code is the first failure's.
set -eu

agent=${DEVICETRUST_AGENT:-/usr/local/bin/devicetrust-agent}
package_id=com.devicetrust.agent
remove_binary=${4:-no}

if [ ! -x "$agent" ]; then
  echo "INFO: $agent is not installed: nothing to uninstall"
  exit 0
fi

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
    /usr/sbin/pkgutil --forget "$package_id" >/dev/null 2>&1 || true
    echo "INFO: removed $agent and the $package_id package receipt"
    ;;
esac
exit "$status"
