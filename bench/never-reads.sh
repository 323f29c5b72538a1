#!/usr/bin/env bash
# Peers that never read (docs/BENCHMARKS.md; the agent-core issue, #8), release build,
# loopback, no root: agent A holds a 64 MiB release and seeds; PEERS peers (shoal-stall)
# join it, flood it with requests (blocks, requests it must reject, index ranges) and
# never read; meanwhile agent B fetches the release from A only. Reports A's resident
# memory before and at its peak, what happened to the peers, and B's time.
#   bench/never-reads.sh [PEERS=1000] [SECS=20]
set -euo pipefail
peers=${1:-1000}
secs=${2:-20}
ulimit -n 8192 || true
SIZE_MIB=64 EXTRA_BINS="-p shoal-tests" . "$(dirname "$0")/loopback-origin.sh"
port=$(free_port)
"$A" fetch "$url" "${common[@]}" --out "$work/a" --listen "127.0.0.1:$port" --seed-secs 3600 \
  --quiet > "$work/a.out" 2> "$work/a.log" &
apid=$!
pids+=($apid)
until [ -f "$work/a/image.bin" ]; do sleep 0.1; done
sleep 1
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$apid/status"; }
before=$(rss)
"$bin/shoal-stall" --repo "$work/repo" --peer "127.0.0.1:$port" --count "$peers" \
  --secs "$secs" > "$work/stall.json" &
spid=$!
pids+=($spid)
sleep 2
start=$(date +%s.%N)
"$A" fetch "$url" "${common[@]}" --out "$work/b" --listen 127.0.0.1:0 \
  --peer "127.0.0.1:$port" --origin-grace 600 --quiet > "$work/b.out" 2> "$work/b.log" &
bpid=$!
pids+=($bpid)
peak=$before
bdone=""
while kill -0 "$spid" 2>/dev/null; do
  r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
  if [ -z "$bdone" ] && ! kill -0 "$bpid" 2>/dev/null; then
    bdone=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  fi
  sleep 0.2
done
wait "$bpid" || { echo "B failed: $(cat "$work/b.log")"; exit 1; }
[ -n "$bdone" ] || bdone=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
cmp -s "$work/image.bin" "$work/b/image.bin" || { echo "B's copy differs"; exit 1; }
echo "A's RSS: $((before / 1024)) MiB before, peak $((peak / 1024)) MiB (+$(((peak - before) / 1024)) MiB) under $peers peers that never read"
echo "peers: $(cat "$work/stall.json")"
echo "honest B, 64 MiB from A: ${bdone} s after it started, $((secs - 2)) s before the attack ended; $(head -1 "$work/b.out")"
echo "(A's RSS before the attack follows its own download: the growth is a lower bound)"
