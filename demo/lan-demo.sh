#!/usr/bin/env bash
# Shoal's main job end to end on one machine, no root, no config file:
# a vendor signs and serves a sample update over HTTPS, and AGENTS agents confined to
# loopback fetch it through each other. Prints how much came from peers and from the
# origin, and checks every copy against the published file.
#   demo/lan-demo.sh [AGENTS=4] [SIZE_MIB=64]
set -euo pipefail
agents=${1:-4}
size_mib=${2:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "building (release profile; the first build takes a few minutes)…"
cargo build --release -q -p shoal-publisher -p shoal-agent
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

echo "== vendor: keys, a ${size_mib} MiB sample update, a signed release"
"$P" keygen --keys "$work/keys" --product demo-driver > /dev/null
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/sample-update.bin"
"$P" release --keys "$work/keys" --repo "$work/repo" --channel stable --version 1.0.0 \
  --quiet "$work/sample-update.bin"

echo "== origin: shoal-publisher serve on loopback"
"$P" serve --repo "$work/repo" --listen 127.0.0.1:0 --self-signed --tls-dir "$work/tls" \
  > "$work/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^serving' "$work/origin.log" && break; sleep 0.1; done
url=$(sed -n 's/^serving .* on \(https:.*\)$/\1/p' "$work/origin.log")
[ -n "$url" ] || { cat "$work/origin.log"; exit 1; }
echo "   $url"

# Free loopback ports for the agents, so each can be told where the others are.
mapfile -t ports < <(python3 - "$agents" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks: print(s.getsockname()[1])
PY
)

# mDNS stays off here: this runs in the machine's own network namespace, and the mDNS
# library joins the multicast group on every interface it sees. The namespace test
# (agent/tests/netns_mdns.rs) exercises discovery.
echo "== ${agents} agents on 127.0.0.1 (static peers; nothing leaves loopback)"
for i in $(seq 0 $((agents - 1))); do
  peers=()
  for j in $(seq 0 $((agents - 1))); do
    [ "$i" = "$j" ] || peers+=(--peer "127.0.0.1:${ports[$j]}")
  done
  "$A" fetch "$url" --trust "$work/keys/trust/1.json" --channel stable \
    --out "$work/agent$i" --listen "127.0.0.1:${ports[$i]}" "${peers[@]}" \
    --ca "$work/tls/cert.pem" --seed-secs 600 --origin-grace 1 --no-mdns \
    > "$work/agent$i.out" 2> "$work/agent$i.log" &
  pids+=($!)
done

deadline=$(( $(date +%s) + 600 ))
for i in $(seq 0 $((agents - 1))); do
  until [ -f "$work/agent$i/sample-update.bin" ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "agent $i did not finish in time:"; cat "$work/agent$i.log"; exit 1
    fi
    sleep 0.2
  done
done
origin_bytes=$(curl -s --cacert "$work/tls/cert.pem" "$url/metrics" \
  | awk '/^shoal_origin_sent_bytes_total /{print $2}')
# Stop the agents (they were seeding for the others) and collect their summaries.
for pid in "${pids[@]:1}"; do kill -TERM "$pid"; done
for pid in "${pids[@]:1}"; do wait "$pid" || true; done
pids=("${pids[0]}")

echo "== results"
ok=1
for i in $(seq 0 $((agents - 1))); do
  printf 'agent %d: %s\n' "$i" "$(head -1 "$work/agent$i.out")"
  cmp -s "$work/agent$i/sample-update.bin" "$work/sample-update.bin" || { echo "agent $i: WRONG BYTES"; ok=0; }
done
release_bytes=$((size_mib * 1024 * 1024))
python3 - "$origin_bytes" "$release_bytes" "$agents" <<'PY'
import sys
origin, size, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"origin sent {origin / 2**20:.1f} MiB = {origin / size:.2f} copies of the release "
      f"for {n} agents (plain downloads would be {n:.0f} copies); "
      f"saved {100 * (1 - origin / (n * size)):.0f}% of the vendor's traffic")
PY
echo "== the vendor's view: shoal-publisher stats (from the origin's /metrics)"
"$P" stats "$url" --ca "$work/tls/cert.pem" --endpoints "$agents"
[ "$ok" = 1 ] && echo "every agent holds a byte-identical, verified copy"
