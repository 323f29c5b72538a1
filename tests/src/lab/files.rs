//! File chores of a lab session: the payload's hash, an update's overwritten regions,
//! the aria2 hook's permissions, a log's last lines.

use std::path::Path;

/// Makes `p` executable (the aria2 completion hook).
pub(super) fn set_executable(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// The SHA-256 of a file, hex.
pub(super) fn sha256_hex(p: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut h = shoal_protocol::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().to_hex())
}

/// Overwrites `fraction` of the file's bytes with new random bytes, in 8 regions spread
/// over it (a patched disk image, not a shifted one).
pub(super) fn overwrite_spread(p: &Path, fraction: f64, seed: u64) -> Result<(), String> {
    let mut data = std::fs::read(p).map_err(|e| e.to_string())?;
    let regions = 8;
    let len = ((data.len() as f64 * fraction) / regions as f64) as usize;
    let stride = data.len() / regions;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for r in 0..regions {
        let start = r * stride + stride / 3;
        let end = (start + len).min(data.len());
        for b in &mut data[start..end] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    std::fs::write(p, data).map_err(|e| e.to_string())
}

/// The last `lines` lines of `text`.
pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
