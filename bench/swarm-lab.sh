#!/usr/bin/env bash
# The swarm lab (docs/BENCHMARKS.md): builds release binaries, runs shoal-lab with the
# given flags (default: the issue's grid), appends JSON lines to docs/lab/results.jsonl,
# writes docs/lab/table.md and plots docs/lab/cdf-N<agents>.png.
# Needs root (network namespaces), curl, aria2c, iproute2 and python3-matplotlib.
#   bench/swarm-lab.sh [shoal-lab flags…]      e.g. --agents 16 --size-mib 64
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p shoal-agent -p shoal-publisher -p shoal-tests --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
mkdir -p docs/lab
"$bin/shoal-lab" --jsonl docs/lab/results.jsonl --markdown docs/lab/table.md "$@"
for n in $(/usr/bin/python3 -c 'import json,sys; print(*sorted({json.loads(l)["agents"] for l in open(sys.argv[1]) if l.strip()}))' docs/lab/results.jsonl); do
  /usr/bin/python3 bench/plot-lab.py docs/lab/results.jsonl "docs/lab/cdf-n$n.png" "$n"
done
