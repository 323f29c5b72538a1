//! Free disk space, checked before a download starts: a full disk mid-download would
//! waste the origin's and the LAN's bandwidth, so the agent refuses up front and says
//! how much it needs.

use std::path::Path;

use crate::error::{Error, Result, exit};
use crate::release::Release;

/// Bytes free for unprivileged users on the file system holding `path`.
#[cfg(unix)]
pub fn available(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Unknown on this platform.
#[cfg(not(unix))]
pub fn available(_path: &Path) -> Option<u64> {
    None
}

/// Refuses to start when `state` cannot hold the missing pieces plus the assembled
/// artifacts (twice the release, a conservative bound).
pub fn check(state: &Path, release: &Release) -> Result<()> {
    std::fs::create_dir_all(state).map_err(|e| Error::io(state.display(), e))?;
    let need = release.total_len().saturating_mul(2);
    match available(state) {
        Some(free) if free < need => Err(Error::new(
            exit::IO,
            format!(
                "{} has {} free, the release needs up to {}",
                state.display(),
                shoal_cli::human_bytes(free),
                shoal_cli::human_bytes(need)
            ),
            "free disk space or point the state directory elsewhere; nothing was downloaded",
        )),
        _ => Ok(()),
    }
}
