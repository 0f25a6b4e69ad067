# shellcheck shell=bash
# describe_machine: the lines every result section of BENCHMARKS.md starts with. Source it
# from the repository root.

describe_machine() {
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || uname -m), $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB RAM"}'), $(uname -sr)"
    echo "- $(rustc --version)"
}
