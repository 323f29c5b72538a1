#!/usr/bin/env bash
# A vendor's .msi on Wine: install it (the service starts), see the service RUNNING and
# the agent fetch a release from an origin on loopback and deliver it byte for byte,
# uninstall it, and see the service and the program gone (the config stays: it is
# permanent). Everything runs in a network namespace of its own (only `lo`), so Wine and
# the agent's mDNS never touch the machine's network. Where root, Wine, the Windows
# target, mingw or wixl are missing, it says so plainly and exits 0 (skipped).
#   bash packaging/wine-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
skip() {
  echo "wine check SKIPPED: $*"
  echo "  to run it (as root): rustup target add x86_64-pc-windows-gnu;"
  echo "  apt install wine64 gcc-mingw-w64-x86-64 wixl msitools; bash packaging/wine-check.sh"
  exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (it makes a network namespace)"
wine=/usr/lib/wine/wine64
wineserver=/usr/lib/wine/wineserver64
[ -x "$wine" ] && [ -x "$wineserver" ] || skip "no wine64"
source packaging/windows-build.sh

work=$(mktemp -d)
ns="shoalwine$$"
export WINEPREFIX="$work/prefix" WINEDEBUG=-all
in_ns() { ip netns exec "$ns" env WINEPREFIX="$WINEPREFIX" WINEDEBUG=-all HOME="$work" "$@"; }
origin_pid=
cleanup() {
  in_ns "$wineserver" -k 2>/dev/null || true
  [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  [ -n "${SHOAL_KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "wine check FAILED: $*" >&2; exit 1; }
ip netns add "$ns"
ip -n "$ns" link set lo up

# A Wine prefix, and the one DLL Wine 8 lacks for Rust programs (ProcessPrng). Wine's
# services live as long as its server: one runs for the whole check.
in_ns "$wine" wineboot -i > "$work/wineboot.log" 2>&1 || fail "wineboot: $(tail -3 "$work/wineboot.log")"
in_ns "$wineserver" -w
in_ns "$wineserver" -p
cat > "$work/bcp.c" <<'C'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) { return SystemFunction036(data, (ULONG)len); }
C
printf 'LIBRARY bcryptprimitives\nEXPORTS\n  ProcessPrng\n' > "$work/bcp.def"
x86_64-w64-mingw32-gcc -shared -O2 -o "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" \
  "$work/bcp.c" "$work/bcp.def" -ladvapi32

# The vendor: keys, a release, an origin on the namespace's loopback, the package.
"$P" keygen --keys "$work/keys" --product acme > /dev/null
head -c 3000000 /dev/urandom > "$work/driver.bin"
"$P" release --keys "$work/keys" --repo "$work/repo" --channel stable --version 1.0 --quiet "$work/driver.bin"
in_ns "$P" serve --repo "$work/repo" --listen 127.0.0.1:8443 --self-signed --tls-dir "$work/tls" \
  > "$work/origin.log" 2>&1 &
origin_pid=$!
for _ in $(seq 100); do grep -q '^serving' "$work/origin.log" && break; sleep 0.1; done
"$P" agent-package --format msi --name acme-updates --version 1.0.0 \
  --maintainer 'Acme Ops <ops@acme.example>' --summary 'Acme driver updates' \
  --trust "$work/keys/trust/1.json" --origin https://127.0.0.1:8443 \
  --origin-ca "$work/tls/cert.pem" --agent "$exe" --out "$work" > /dev/null
msi="$work/acme-updates-1.0.0-x64.msi"

# Install.
in_ns "$wine" msiexec /i "$msi" /qn /l*v "$work/install.log" || fail "msiexec /i failed: $(iconv -f utf-16 -t utf-8 "$work/install.log" 2>/dev/null | grep -i "error\|return value 3" | head -5)"
dir="$WINEPREFIX/drive_c/Program Files/acme-updates"
for _ in $(seq 120); do [ -f "$dir/releases/1.0/driver.bin" ] && break; sleep 0.5; done
[ -f "$dir/releases/1.0/driver.bin" ] || fail "no release delivered; log: $(tail -5 "$dir/logs/agent.log" 2>/dev/null)"
cmp -s "$dir/releases/1.0/driver.bin" "$work/driver.bin" || fail "the delivered release differs"
in_ns "$wine" sc query acme-updates | grep -q 'RUNNING' || fail "the service is not running"
# The package's [api] listen (the last 127.0.0.1 address in its config).
api=$(grep -o '127\.0\.0\.1:[0-9]*' "$dir/agent.toml" | tail -1)
status=$(in_ns curl -s "http://$api/api/v1/status" || true)
grep -q '"complete":true' <<<"$status" || fail "the status API does not say complete: $status"

# Uninstall: the service and the program go; the config stays (permanent).
in_ns "$wine" msiexec /x "$msi" /qn || fail "msiexec /x failed"
# The service stops first; the program goes once it has (up to 30 s).
for _ in $(seq 60); do
  in_ns "$wine" sc query acme-updates 2>/dev/null | grep -q 'STATE' || [ -e "$dir/shoal-agent.exe" ] || break
  sleep 0.5
done
if in_ns "$wine" sc query acme-updates 2>/dev/null | grep -q 'STATE'; then fail "the service is still registered"; fi
[ ! -e "$dir/shoal-agent.exe" ] || fail "the program is still there"
pgrep -f 'acme-updates.shoal-agent.exe service' >/dev/null && fail "the agent still runs"
[ -e "$dir/agent.toml" ] || fail "the config went with the uninstall"
echo "wine check passed: installed, service RUNNING, release fetched and delivered byte for byte, uninstalled, service gone, config kept"
