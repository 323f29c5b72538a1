#!/usr/bin/env bash
# Benchmark: `shoal-publisher release` of one large file (default 1 GiB).
#   bench/release-hashing.sh [SIZE_MIB] [RUNS]
# Reports wall time, throughput and peak RSS per run. The file is random bytes in the
# page cache (the second and later runs read it hot). Each run publishes a new version,
# so it copies, chunks, hashes and signs for real. Results go in docs/BENCHMARKS.md.
set -euo pipefail
size_mib=${1:-1024}
runs=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p shoal-publisher --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/shoal-publisher"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/image.bin"
"$bin" keygen --keys "$work/keys" --product bench > /dev/null
for i in $(seq 1 "$runs"); do
  rm -rf "$work/repo"
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$bin" release --keys "$work/keys" --repo "$work/repo" \
    --channel stable --version "$i" --quiet "$work/image.bin" > /dev/null
  end=$(date +%s.%N)
  python3 - "$start" "$end" "$size_mib" "$(cat "$work/rss")" "$i" <<'PY'
import sys
start, end, mib, rss, i = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t = end - start
print(f"run {i}: {mib} MiB in {t:.3f} s = {mib / 1024 / t:.2f} GiB/s, peak RSS {rss / 1024:.0f} MiB")
PY
done
