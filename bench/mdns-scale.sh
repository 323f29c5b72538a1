#!/usr/bin/env bash
# Discovery at scale (docs/BENCHMARKS.md, "Large LANs"): 250 mDNS announcers on one
# bridged link in network namespaces (50 hosts, 5 each), 20 s. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q --release -p shoal-agent --test mdns_scale -- --ignored --nocapture 2>&1 \
  | grep -vE "^(running|test |$)"
