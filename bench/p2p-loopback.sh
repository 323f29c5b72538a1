#!/usr/bin/env bash
# Benchmarks on loopback, release build, no root (docs/BENCHMARKS.md):
#  1. one peer to one peer: agent A holds the release and seeds; agent B fetches it from
#     A only (B is told about A with --peer; the origin is reachable but every piece is
#     on the LAN, so B never asks it for piece data). Reports B's wall time and
#     throughput, CPU and peak RSS, and how many bytes came from the origin.
#  2. idle memory: a `shoal-agent run` daemon that has delivered the release and is
#     waiting for the next poll; its RSS after it settles.
#   bench/p2p-loopback.sh [SIZE_MIB=512] [RUNS=3]
#   SHOAL_PRIVATE=1 bench/p2p-loopback.sh …   the same in a private swarm (both agents
#                                             hold a swarm key: Noise and encrypted records)
set -euo pipefail
size_mib=${1:-512}
runs=${2:-3}
SIZE_MIB=$size_mib . "$(dirname "$0")/loopback-origin.sh"
if [ -n "${SHOAL_PRIVATE:-}" ]; then
  "$A" swarm-key new --out "$work/swarm.key" 2> /dev/null
  common+=(--swarm-key "$work/swarm.key")
  echo "private swarm"
fi

# A: fetches once from the origin, then seeds.
port=$(free_port)
"$A" fetch "$url" "${common[@]}" --out "$work/a" --listen "127.0.0.1:$port" --seed-secs 3600 \
  --quiet > "$work/a.out" 2> "$work/a.log" &
pids+=($!)
until [ -f "$work/a/image.bin" ]; do sleep 0.1; done
echo "seeder ready (127.0.0.1:$port)"

for i in $(seq 1 "$runs"); do
  rm -rf "$work/b"
  start=$(date +%s.%N)
  /usr/bin/time -f "%M %e %P" -o "$work/b.time" "$A" fetch "$url" "${common[@]}" \
    --out "$work/b" --listen 127.0.0.1:0 --peer "127.0.0.1:$port" --quiet > "$work/b.out" 2> "$work/b.log"
  end=$(date +%s.%N)
  cmp -s "$work/image.bin" "$work/b/image.bin" || { echo "run $i: B's copy differs"; exit 1; }
  # SHOAL_BENCH_LOGS=DIR keeps B's log of every run (with SHOAL_LOG=debug: per piece).
  [ -z "${SHOAL_BENCH_LOGS:-}" ] || cp "$work/b.log" "$SHOAL_BENCH_LOGS/b-run$i.log"
  read -r rss _ cpu < "$work/b.time"
  python3 - "$start" "$end" "$size_mib" "$rss" "$cpu" "$i" "$(head -1 "$work/b.out")" <<'PY'
import sys
start, end, mib, rss, cpu, i, summary = sys.argv[1:8]
t = float(end) - float(start)
print(f"run {i}: {mib} MiB peer to peer in {t:.2f} s = {int(mib) / t:.0f} MiB/s, "
      f"CPU {cpu}, peak RSS {int(rss) / 1024:.0f} MiB; {summary}")
PY
done

# Idle memory: a daemon that delivers the release (from A), then waits for its next poll.
cat > "$work/agent.toml" <<EOF
origin = "$url"
trust = "$work/keys/trust/1.json"
channel = "stable"
state_dir = "$work/d-state"
releases_dir = "$work/d-out"
origin_ca = "$work/tls/cert.pem"
listen = "127.0.0.1:0"
peers = ["127.0.0.1:$port"]
poll_interval_secs = 3600
[mdns]
enabled = false
EOF
if [ -n "${SHOAL_PRIVATE:-}" ]; then
  printf '[private]\nkey_file = "%s"\n' "$work/swarm.key" >> "$work/agent.toml"
fi
"$A" run --config "$work/agent.toml" > "$work/d.log" 2>&1 &
dpid=$!
pids+=($dpid)
for _ in $(seq 600); do
  compgen -G "$work/d-out/*/image.bin" > /dev/null && break
  sleep 0.1
done
compgen -G "$work/d-out/*/image.bin" > /dev/null || { echo "daemon did not deliver:"; cat "$work/d.log"; exit 1; }
sleep 5
echo "idle daemon after delivering ${size_mib} MiB: $(grep VmRSS /proc/$dpid/status | awk '{print $2/1024 " MiB RSS"}'), $(grep VmHWM /proc/$dpid/status | awk '{print $2/1024 " MiB peak"}')"
