#!/usr/bin/env bash
# Runs every fuzz target of shoal-protocol for SECONDS each (default 60).
#   protocol/fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain the
# sanitizer flags need RUSTC_BOOTSTRAP=1, which this script sets. Findings land in
# protocol/fuzz/artifacts/<target>/; a crash makes the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  listed=$(cargo fuzz list) || { echo "cargo fuzz list failed: install cargo-fuzz" >&2; exit 1; }
  mapfile -t targets <<<"$listed"
fi
if [ ${#targets[@]} -eq 0 ] || [ -z "${targets[0]}" ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  mkdir -p "corpus/$t"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
