#!/bin/sh
# The package's postinstall (build-pkg.sh copies it into the package as `postinstall`).
# Installer runs it as root after the payload is in place; $3 is the target volume.
#
# It makes sure the binary and its directories are root's and writable by root alone (Jamf
# Pro runs the agent as root, and the agent refuses to run as root from anywhere else), and
# puts a symbolic link for people at /usr/local/bin/devicetrust-agent. Enrollment, the
# LaunchAgent and settings belong to the Jamf policy and the profiles: installing the package,
# or reinstalling it to upgrade, never changes a user's state, and a package that a user opens
# by hand does nothing but put the binary in place.
set -eu

target_volume=${3:-/}
root=${target_volume%/}
install_dir=/Library/DeviceTrust
binary_path=$install_dir/bin/devicetrust-agent
link="$root/usr/local/bin/devicetrust-agent"

for path in "$root$install_dir" "$root$install_dir/bin" "$root$binary_path"; do
  if [ -e "$path" ]; then
    chown root:wheel "$path"
    chmod 755 "$path"
  fi
done

# The link points at the path as it is when that volume is the startup disk. /usr/local/bin
# may belong to a user (Homebrew on Intel Macs); only the link is ours there, and it is only
# for people: the Jamf scripts and the LaunchAgent use the binary's own path. An earlier
# package installed the binary itself there: the link replaces it.
mkdir -p "$(dirname "$link")"
if [ -d "$link" ] && [ ! -L "$link" ]; then
  echo "postinstall: $link is a directory; not adding the link" >&2
else
  # -h: if $link is a link to a directory, replace the link rather than write inside it.
  ln -sfh "$binary_path" "$link"
fi
exit 0
