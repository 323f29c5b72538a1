#!/usr/bin/env bash
# The swarm lab (docs/BENCHMARKS.md): builds release binaries, runs shoal-lab with the
# given flags (default: the issue's grid), appends JSON lines to docs/lab/results.jsonl,
# writes docs/lab/table.md (the latest run of each scenario and system) and plots
# docs/lab/cdf-n<agents>-<size>mib.png.
# Needs root (network namespaces), curl, aria2c, iproute2 and python3-matplotlib.
#   bench/swarm-lab.sh [shoal-lab flags…]      e.g. --agents 16 --size-mib 64
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p shoal-agent -p shoal-publisher -p shoal-tests --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
mkdir -p docs/lab
"$bin/shoal-lab" --jsonl docs/lab/results.jsonl "$@"
/usr/bin/python3 bench/plot-lab.py --table docs/lab/results.jsonl > docs/lab/table.md
# One plot per (agents, size) of plain runs (no late joiners, no update).
/usr/bin/python3 - docs/lab/results.jsonl <<'PY' | while read -r n mib; do
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for n, mib in sorted({(r["agents"], r["size_bytes"] >> 20) for r in runs
                      if not r.get("late") and not r.get("delta_pct") and not r.get("loss_pct")
                      and not r.get("slow")}):
    print(n, mib)
PY
  /usr/bin/python3 bench/plot-lab.py docs/lab/results.jsonl "docs/lab/cdf-n$n-${mib}mib.png" "$n" "$mib"
done
