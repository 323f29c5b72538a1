# Sourced by msi-check.sh and wine-check.sh (which define `skip`): makes sure the
# Windows target, mingw and the MSI tools are there (or skips), then builds the Windows
# agent and the publisher. Sets `exe` (shoal-agent.exe) and `P` (shoal-publisher).
rustup target list --installed 2>/dev/null | grep -q '^x86_64-pc-windows-gnu$' \
  || rustup target add x86_64-pc-windows-gnu \
  || skip "the Windows target (x86_64-pc-windows-gnu) cannot be installed here"
command -v x86_64-w64-mingw32-gcc >/dev/null || skip "no mingw cross compiler (gcc-mingw-w64-x86-64)"
command -v wixl >/dev/null || skip "no wixl"
command -v msiinfo >/dev/null && command -v msibuild >/dev/null || skip "no msitools"
cargo build -q --target x86_64-pc-windows-gnu -p shoal-agent
cargo build -q -p shoal-publisher
target_dir="${CARGO_TARGET_DIR:-target}"
exe="$target_dir/x86_64-pc-windows-gnu/debug/shoal-agent.exe"
P="$target_dir/debug/shoal-publisher"
