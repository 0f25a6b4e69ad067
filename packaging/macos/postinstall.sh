#!/bin/sh
# The package's postinstall (build-pkg.sh copies it into the package as `postinstall`).
# Installer runs it as root after the payload is in place; $3 is the target volume.
#
# It only makes sure the binary is root-owned and not writable by others. Enrollment, the
# LaunchAgent and settings belong to the Jamf policy and the profiles: installing the package,
# or reinstalling it to upgrade, never changes a user's state, and a package that a user opens
# by hand does nothing but put the binary in place.
set -eu

target_volume=${3:-/}
binary="${target_volume%/}/usr/local/bin/devicetrust-agent"

if [ -f "$binary" ]; then
  chown root:wheel "$binary"
  chmod 755 "$binary"
fi
exit 0
