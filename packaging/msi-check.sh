#!/usr/bin/env bash
# Builds the agent for Windows and a vendor's .msi with it, and checks the package's
# tables with msiinfo: the service (name, automatic start, arguments), its control
# (started on install, stopped and removed on uninstall), the upgrade code, the files.
# Where the Windows target, the mingw cross compiler or wixl cannot be installed, it
# says so plainly and exits 0 (skipped). Installing the MSI under Wine is not done here.
#   bash packaging/msi-check.sh   (shares packaging/windows-build.sh with wine-check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
skip() {
  echo "msi check SKIPPED: $*"
  echo "  to run it: rustup target add x86_64-pc-windows-gnu;"
  echo "  apt install gcc-mingw-w64-x86-64 wixl msitools; bash packaging/msi-check.sh"
  exit 0
}
source packaging/windows-build.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$P" keygen --keys "$work/keys" --product acme > /dev/null
"$P" agent-package --format msi --name acme-updates --version 1.2.3 \
  --maintainer 'Acme Ops <ops@acme.example>' --summary 'Acme driver updates' \
  --trust "$work/keys/trust/1.json" --origin https://updates.acme.example \
  --agent "$exe" --out "$work" > /dev/null
msi="$work/acme-updates-1.2.3-x64.msi"
fail() { echo "msi check FAILED: $*" >&2; exit 1; }
table() { msiinfo export "$msi" "$1"; }
table ServiceInstall | grep -P '^AgentService\tacme-updates\t.*\t16\t2\t1\t.*service --name acme-updates --config "\[INSTALLDIR\]agent.toml"' >/dev/null \
  || fail "ServiceInstall: $(table ServiceInstall)"
# 163 = start on install (1) + stop on install (2) + stop on uninstall (32) + remove on uninstall (128)
table ServiceControl | grep -P '^AgentServiceControl\tacme-updates\t163\t' >/dev/null \
  || fail "ServiceControl: $(table ServiceControl)"
upgrade=$(table Upgrade | grep -c 'WIX_UPGRADE_DETECTED' || true)
[ "$upgrade" -ge 1 ] || fail "no MajorUpgrade row: $(table Upgrade)"
files=$(table File)
for f in shoal-agent.exe trust.json agent.toml; do
  grep -qP "\t$f\t" <<<"$files" || fail "$f is not in the File table: $files"
done
table Property | grep -P '^ProductVersion\t1\.2\.3' >/dev/null || fail "ProductVersion: $(table Property)"
# Config, trust and state live beside the program, in a folder only admins can write.
table Component | awk -F'\t' '$1 == "Config" || $1 == "Trust" {print $3}' | sort -u | grep -qx INSTALLDIR \
  || fail "the config and trust are not in the program's folder: $(table Component)"
# The config is permanent (attribute 16): an upgrade or uninstall keeps an admin's edits.
attrs=$(table Component | awk -F'\t' '$1 == "Config" {print $4}')
[ -n "$attrs" ] && [ $(( attrs & 16 )) -ne 0 ] || fail "the config component is not permanent: $(table Component)"
# One product code per version (derived): rebuilding a version installs nothing twice.
code1=$(table Property | awk -F'\t' '$1 == "ProductCode" {print $2}')
"$P" agent-package --format msi --name acme-updates --version 1.2.3 \
  --maintainer 'Acme Ops <ops@acme.example>' --summary 'Acme driver updates' \
  --trust "$work/keys/trust/1.json" --origin https://updates.acme.example \
  --agent "$exe" --out "$work/again" > /dev/null
code2=$(msiinfo export "$work/again/acme-updates-1.2.3-x64.msi" Property | awk -F'\t' '$1 == "ProductCode" {print $2}')
[ -n "$code1" ] && [ "$code1" = "$code2" ] || fail "product codes differ between builds: $code1 $code2"
echo "msi check passed: $(basename "$msi") ($(stat -c %s "$msi") bytes): service, control, upgrade, files, permanent config, stable product code"
