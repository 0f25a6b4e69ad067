#!/bin/sh
# DeviceTrust status, as a Jamf Pro computer Extension Attribute (Data Type: String, Input
# Type: Script). Jamf Pro runs it as root at every inventory update and stores the text
# between <result> and </result>.
#
# Results:
#   <result>enrolled, expires 2027-11-23, origins 3/3</result>   from `devicetrust-agent status --jamf-ea`
#   (also renewal_due, expired, revoked, not_enrolled, error), run as the console user
#   because the certificate lives in that user's keychain;
#   <result>not installed</result>   the agent binary is missing;
#   <result>no user</result>         nobody is logged in, so there is no keychain to look at.
# It always exits 0 (no `set -e`): a failing Extension Attribute would only blank the value
# in Jamf Pro.
set -u

# The agent runs as the console user here, not as root, so its path needs no root-only check.
agent=${DEVICETRUST_AGENT:-/Library/DeviceTrust/bin/devicetrust-agent}

if [ ! -x "$agent" ]; then
  echo "<result>not installed</result>"
  exit 0
fi

console_user=$(/usr/bin/stat -f%Su /dev/console 2>/dev/null || true)
case "$console_user" in
  "" | root | loginwindow | _mbsetupuser)
    echo "<result>no user</result>"
    exit 0
    ;;
esac

if ! console_uid=$(/usr/bin/id -u "$console_user" 2>/dev/null); then
  echo "<result>no user</result>"
  exit 0
fi

# status exits non-zero for states such as not_enrolled; its output still says which.
output=$(/bin/launchctl asuser "$console_uid" /usr/bin/sudo -H -u "$console_user" "$agent" status --jamf-ea 2>/dev/null || true)

case "$output" in
  *"<result>"*"</result>"*)
    result=${output#*<result>}
    result=${result%%</result>*}
    ;;
  "")
    result="error: no status"
    ;;
  *)
    result="error: $(printf '%s\n' "$output" | /usr/bin/head -n 1)"
    ;;
esac
echo "<result>$result</result>"
exit 0
