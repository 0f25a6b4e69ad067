#!/bin/sh
# DeviceTrust enrollment, for a Jamf Pro policy (Scripts payload). Jamf Pro runs it as root.
#
# Jamf Pro passes:
#   $1  mount point of the target drive       $2  computer name
#   $3  user name (empty at a check-in with nobody logged in)
# and the policy's script parameters (label them in Settings > Computer Management > Scripts):
#   $4  CA URL; leave empty when the agent profile sets ca_url
#   $5  enrollment token; better left empty with the token in the agent profile. When given,
#       it reaches the agent on stdin and never on its command line.
#   $6..$11  passed through unchanged to `devicetrust-agent jamf` (e.g. verbose)
#
# The agent finds the console user, installs its LaunchAgent and enrolls in that user's
# context. Its output is the policy log (INFO:/WARN:/ERROR: lines) and its exit code is this
# script's: 0 done, nothing to do, or deferred because nobody is logged in; 3 not managed;
# 4 enrollment limit reached; 5 CA unavailable; 7 no enrollment token; see docs/jamf.md.
# 127: the agent is not installed.
set -eu

agent=${DEVICETRUST_AGENT:-/usr/local/bin/devicetrust-agent}

if [ ! -x "$agent" ]; then
  echo "ERROR: $agent is not installed: add the DeviceTrust package to this policy (Packages payload)"
  exit 127
fi

token=""
if [ "$#" -ge 5 ]; then
  token=$5
  mount_point=$1 computer=$2 user=$3 ca_url=$4
  shift 5
  # Parameter 5 stays in place, empty, so that $6.. keep their positions for the agent.
  set -- "$mount_point" "$computer" "$user" "$ca_url" "" "$@"
fi

status=0
if [ -n "$token" ]; then
  # printf is a shell builtin: the token is written to the pipe without ever being a
  # process argument.
  printf '%s\n' "$token" | "$agent" jamf --token-stdin "$@" || status=$?
  token=""
else
  "$agent" jamf "$@" || status=$?
fi
exit "$status"
