# Sourced by the loopback benchmarks (p2p-loopback.sh, never-reads.sh): builds the
# release binaries, makes a scratch directory removed on exit with every process listed
# in `pids`, publishes SIZE_MIB of random bytes as release 1.0.0 on `stable` and serves
# it on a loopback port. Leaves: root, bin, P, A, work, pids, url, common (agent flags),
# and a function free_port.
#   SIZE_MIB=64 EXTRA_BINS="-p shoal-tests" . bench/loopback-origin.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2086 # EXTRA_BINS is a list of cargo flags
cargo build --release -q -p shoal-publisher -p shoal-agent ${EXTRA_BINS:-} --bins \
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

"$P" keygen --keys "$work/keys" --product bench > /dev/null
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$work/image.bin"
"$P" release --keys "$work/keys" --repo "$work/repo" --channel stable --version 1.0.0 \
  --quiet "$work/image.bin"
"$P" serve --repo "$work/repo" --listen 127.0.0.1:0 --self-signed --tls-dir "$work/tls" \
  > "$work/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^serving' "$work/origin.log" && break; sleep 0.1; done
url=$(sed -n 's/^serving .* on \(https:.*\)$/\1/p' "$work/origin.log")
common=(--trust "$work/keys/trust/1.json" --channel stable --ca "$work/tls/cert.pem" --no-mdns)
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
