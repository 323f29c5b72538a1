#!/usr/bin/env bash
# Large-LAN and mixed-speed figures from the deterministic swarm simulator
# (docs/BENCHMARKS.md, "Large LANs"). Release build; prints one line per scenario.
#   bench/swarm-sim.sh                 the grid (4-40 agents), 64, 100, 250, mixed speeds
#   bench/swarm-sim.sh lan_1000        one scenario (see protocol/tests/swarm_scale.rs)
# Overrides for experiments: SHOAL_SIM_SLOTS, SHOAL_SIM_FETCHERS, SHOAL_SIM_ROTATE_MS,
# SHOAL_SIM_INFLIGHT, SHOAL_SIM_ORIGIN_PARALLEL, SHOAL_SIM_DIAL.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  set -- lan_grid lan_64 lan_100 lan_250 mixed_speeds
fi
for scenario in "$@"; do
  cargo test -q --release -p shoal-protocol --test swarm_scale -- \
    --ignored --nocapture --exact "$scenario" 2>&1 | grep -E "bound|simulated|panicked|starved|mean"
done
