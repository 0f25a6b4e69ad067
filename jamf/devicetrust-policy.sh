#!/bin/sh
# DeviceTrust enrollment, for a Jamf Pro policy (Scripts payload). Jamf Pro runs it as root.
#
# Jamf Pro passes:
#   $1  mount point of the target drive       $2  computer name
#   $3  user name (empty at a check-in with nobody logged in)
# and the policy's script parameters (label them in Settings > Computer Management > Scripts):
#   $4  CA URL; leave empty when the agent profile sets ca_url
#   $5  enrollment token; better left empty with the token in the agent profile
#       (`devicetrust-agent profile agent --token-file ...`). Jamf Pro passes script parameters
#       on this script's own command line, so while it runs a token given here is in its argv,
#       readable by root and by root-level tools (EDR, process auditing), and it is kept in
#       the policy's definition on the Jamf Pro server. This script hands it to the agent on
#       stdin, so it never reaches the agent's command line or its logs.
#   $6..$11  passed through unchanged to `devicetrust-agent jamf` (e.g. verbose)
#
# The agent finds the console user, installs its LaunchAgent and enrolls in that user's
# context. Its output is the policy log (INFO:/WARN:/ERROR: lines) and its exit code is this
# script's: 0 done, nothing to do, or deferred because nobody is logged in; 3 not managed;
# 4 enrollment limit reached; 5 CA unavailable; 7 no enrollment token; see docs/jamf.md.
# 127: the agent is not installed; 2 (before the agent runs): the agent's binary, or a
# directory above it, could be replaced by someone other than root.
set -eu

agent=${DEVICETRUST_AGENT:-/Library/DeviceTrust/bin/devicetrust-agent}

if [ ! -x "$agent" ]; then
  echo "ERROR: $agent is not installed: add the DeviceTrust package to this policy (Packages payload)"
  exit 127
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
