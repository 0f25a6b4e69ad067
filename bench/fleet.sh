#!/usr/bin/env bash
# The fleet renewal simulator (tests/src/bin/devicetrust-fleet-sim.rs): a fleet enrolled in
# one day, renewing by the agent's own decision core over simulated days.
#
#   bench/fleet.sh NAME [simulator arguments...]
#
# builds the simulator (release), runs it with `--plot bench/fleet/NAME.svg` and the given
# arguments, and writes its report to bench/fleet/NAME.txt (also printed), after the
# machine's description. With REV=<commit>, it builds and runs that commit's simulator (and
# so that commit's rules) from a temporary git worktree, removed on exit: how the figures
# for the rules before a change are re-made. Run it from the repository root.
#
#   bench/fleet.sh new                                   # the rules of the work tree
#   REV=ff05760 bench/fleet.sh today-launchd --scheduler launchd
#   REV=ff05760 bench/fleet.sh today-systemd --scheduler systemd
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: bench/fleet.sh NAME [simulator arguments...]" >&2; exit 2; }
name=$1
shift
root=$(pwd)
out=bench/fleet
mkdir -p "$out"
# shellcheck source=bench/machine.sh
source bench/machine.sh

src=$root
worktree=
cleanup() {
    if [[ -n "$worktree" ]]; then
        git -C "$root" worktree remove --force "$worktree"
    fi
}
trap cleanup EXIT
if [[ -n "${REV:-}" ]]; then
    worktree=$(mktemp -d)
    git -C "$root" worktree add --quiet --detach "$worktree" "$REV"
    src=$worktree
fi

# A target directory per revision: cargo tells a path dependency's builds apart by their
# files' times, not by where they are, so two trees sharing one would mix their crates.
target="$root/target"
if [[ -n "$worktree" ]]; then
    target="$root/target/fleet-sim/$(git -C "$src" rev-parse --short HEAD)"
fi
CARGO_TARGET_DIR="$target" cargo build --release --quiet --locked \
    --manifest-path "$src/Cargo.toml" -p tests --bin devicetrust-fleet-sim

{
    if [[ -n "$worktree" ]]; then
        describe_machine | sed "s/commit [0-9a-f]*/commit $(git -C "$src" rev-parse --short HEAD) (REV)/"
    else
        describe_machine
    fi
    echo "- command: ${REV:+REV=$REV }bench/fleet.sh $name $*"
    echo
    "$target/release/devicetrust-fleet-sim" --plot "$out/$name.svg" "$@"
} | tee "$out/$name.txt"
