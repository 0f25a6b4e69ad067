#!/bin/bash
# Builds the DeviceTrust agent installer package on a Mac: a universal (arm64 + x86_64)
# `devicetrust-agent` installed to /Library/DeviceTrust/bin (a root-only directory, because
# Jamf Pro runs the agent as root; the postinstall adds /usr/local/bin/devicetrust-agent as a
# symbolic link for people), optionally signed, notarized and stapled.
# See packaging/macos/README.md. Needs macOS with Xcode or its Command Line Tools, and both
# Rust targets (`rustup target add aarch64-apple-darwin x86_64-apple-darwin`).
#
# Written for the bash 3.2 that macOS ships.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: packaging/macos/build-pkg.sh [options]

  --version VERSION        package version (default: the workspace version in Cargo.toml)
  --sign IDENTITY          sign the binary, e.g. "Developer ID Application: Example Corp (TEAMID)",
                           with the hardened runtime and a secure timestamp
  --installer-sign IDENTITY
                           sign the package, e.g. "Developer ID Installer: Example Corp (TEAMID)"
  --notarize PROFILE       notarize with `xcrun notarytool submit --keychain-profile PROFILE --wait`
                           and staple the ticket; needs --sign and --installer-sign. Create the
                           profile once with `xcrun notarytool store-credentials PROFILE`: the
                           password stays in the keychain and never reaches a command line.
  --out DIR                where the package goes (default: target/macos-pkg)
  -h, --help               this help
EOF
}

die() {
  echo "error: $*" >&2
  exit 1
}

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then
    die "$1 needs a value"
  fi
}

version=""
sign_identity=""
installer_identity=""
notary_profile=""
out_dir=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --version) need_value "$@"; version=$2; shift 2 ;;
    --sign) need_value "$@"; sign_identity=$2; shift 2 ;;
    --installer-sign) need_value "$@"; installer_identity=$2; shift 2 ;;
    --notarize) need_value "$@"; notary_profile=$2; shift 2 ;;
    --out) need_value "$@"; out_dir=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ "$(uname -s)" = Darwin ] || die "build-pkg.sh runs on macOS only (it needs lipo, codesign, pkgbuild and productbuild)"
if [ -n "$notary_profile" ]; then
  # Apple notarizes only signed packages whose code uses the hardened runtime.
  [ -n "$sign_identity" ] || die "--notarize needs --sign"
  [ -n "$installer_identity" ] || die "--notarize needs --installer-sign"
fi
for tool in cargo lipo pkgbuild productbuild; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

if [ -z "$version" ]; then
  # The first `version = "..."` in the root manifest is [workspace.package]'s.
  version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' Cargo.toml | head -n 1)
  [ -n "$version" ] || die "cannot read the version from Cargo.toml; pass --version"
fi
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out_dir=${out_dir:-$target_dir/macos-pkg}
identifier=com.devicetrust.agent
binary_name=devicetrust-agent

install_dir=/Library/DeviceTrust

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The payload is /Library/DeviceTrust itself, with bin/ inside, so that both directories get
# the payload's modes (0755) and, with --ownership recommended, root:wheel; mktemp's 0700
# would make them unreadable for everyone but root. /usr/local/bin is not in the payload:
# Installer would make it root's, and on an Intel Mac with Homebrew it belongs to a user.
mkdir -m 755 "$work/root" "$work/root/bin" "$work/scripts"

echo "==> building $binary_name $version for arm64 and x86_64"
for target in aarch64-apple-darwin x86_64-apple-darwin; do
  cargo build --release --locked -p agent --bin "$binary_name" --target "$target"
done

binary="$work/root/bin/$binary_name"
lipo -create -output "$binary" \
  "$target_dir/aarch64-apple-darwin/release/$binary_name" \
  "$target_dir/x86_64-apple-darwin/release/$binary_name"
lipo "$binary" -verify_arch arm64 x86_64
chmod 755 "$binary"

if [ -n "$sign_identity" ]; then
  echo "==> signing the binary as $sign_identity"
  codesign --force --sign "$sign_identity" --identifier "$identifier" --options runtime --timestamp "$binary"
  codesign --verify --strict --verbose=2 "$binary"
fi

install -m 755 packaging/macos/postinstall.sh "$work/scripts/postinstall"

component="$work/$binary_name-component.pkg"
echo "==> pkgbuild"
pkgbuild \
  --root "$work/root" \
  --install-location "$install_dir" \
  --scripts "$work/scripts" \
  --identifier "$identifier" \
  --version "$version" \
  --ownership recommended \
  "$component"

mkdir -p "$out_dir"
product="$out_dir/$binary_name-$version.pkg"
echo "==> productbuild"
productbuild_args=(--package "$component")
if [ -n "$installer_identity" ]; then
  productbuild_args+=(--sign "$installer_identity" --timestamp)
fi
productbuild "${productbuild_args[@]}" "$product"
if [ -n "$installer_identity" ]; then
  pkgutil --check-signature "$product"
fi

if [ -n "$notary_profile" ]; then
  echo "==> notarizing with keychain profile $notary_profile"
  xcrun notarytool submit "$product" --keychain-profile "$notary_profile" --wait
  # Stapling fails unless Apple accepted the submission, so it doubles as the check.
  xcrun stapler staple "$product"
  xcrun stapler validate "$product"
fi

echo "==> $product"
