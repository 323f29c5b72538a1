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
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p shoal-publisher -p shoal-agent -p shoal-tests --bins \
  --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
P="$bin/shoal-publisher"
A="$bin/shoal-agent"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 8192 || true

"$P" keygen --keys "$work/keys" --product bench > /dev/null
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/image.bin"
"$P" release --keys "$work/keys" --repo "$work/repo" --channel stable --version 1.0.0 \
  --quiet "$work/image.bin"
"$P" serve --repo "$work/repo" --listen 127.0.0.1:0 --self-signed --tls-dir "$work/tls" \
  > "$work/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^serving' "$work/origin.log" && break; sleep 0.1; done
url=$(sed -n 's/^serving .* on \(https:.*\)$/\1/p' "$work/origin.log")
common=(--trust "$work/keys/trust/1.json" --channel stable --ca "$work/tls/cert.pem" --no-mdns)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
