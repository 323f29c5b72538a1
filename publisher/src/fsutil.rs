//! Crash-safe file writes for the release directory and the key directory.
//!
//! A file is written to a temporary name beside its target, flushed, then renamed into
//! place, so a reader (or a static web server) sees the old file or the new one, never a
//! torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name used while writing `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Atomically replaces (or creates) `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Like [`write_atomic`], with the file created with Unix `mode` from the start (so a
/// private key is never readable by others, not even briefly).
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(Error::io("writing", path))
}

/// Writes `bytes` to `path` unless it exists; an existing file with the same bytes is
/// fine, one with other bytes is refused.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    match fs::read(path) {
        Ok(existing) if existing == bytes => Ok(()),
        Ok(_) => Err(Error::refused(
            format!("{} already exists with other content", path.display()),
            "published files are immutable; this directory was changed by hand or by \
             another key set. Restore it or publish to a new directory",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_atomic(path, bytes),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}
