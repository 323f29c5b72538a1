//! Swarm key files: the keys an agent holds (the one it uses first, every one accepted),
//! read with a permission check, and `shoal-agent swarm-key new`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use shoal_protocol::discovery::SwarmKey;

use crate::error::{Error, Result, exit};

/// Keys one agent accepts at most (a key and the other key of a rotation, with room).
pub const MAX_KEYS: usize = 4;

/// The swarm keys an agent holds: the first is the one it announces and dials with; all
/// are accepted (PROTOCOL.md §6.8, key rotation).
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKeys(Arc<Vec<SwarmKey>>);

impl fmt::Debug for SwarmKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl SwarmKeys {
    /// Keys in order of preference; at least one, at most [`MAX_KEYS`], none twice.
    pub fn new(keys: Vec<SwarmKey>) -> Option<SwarmKeys> {
        let distinct = keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
        (!keys.is_empty() && keys.len() <= MAX_KEYS && distinct).then(|| SwarmKeys(Arc::new(keys)))
    }

    /// Every key, the preferred one first.
    pub fn all(&self) -> &[SwarmKey] {
        &self.0
    }

    /// The key to announce and dial with.
    pub fn primary(&self) -> &SwarmKey {
        &self.0[0]
    }

    /// The keys' fingerprints, for logs and status.
    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(SwarmKey::fingerprint).collect()
    }

    /// Reads a key file: one key per line (`shoal-swarm-key-1:` and 64 hex digits), the
    /// preferred first; blank lines and lines starting with `#` are ignored. On Unix the
    /// file must not be readable by other users.
    pub fn load(path: &Path) -> Result<SwarmKeys> {
        let fix = "create one with `shoal-agent swarm-key new --out FILE` and set \
                   `[private] key_file` (or pass --swarm-key FILE)";
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                exit::USAGE,
                format!("cannot read the swarm key file {}: {e}", path.display()),
                fix,
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o007 != 0 {
                return Err(Error::new(
                    exit::USAGE,
                    format!(
                        "the swarm key file {} gives other users access (mode {:o})",
                        path.display(),
                        mode & 0o777
                    ),
                    format!("restrict it: chmod 600 {}", path.display()),
                ));
            }
        }
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = SwarmKey::parse(line).ok_or_else(|| {
                Error::new(
                    exit::USAGE,
                    format!(
                        "line {} of the swarm key file {} is not a swarm key",
                        n + 1,
                        path.display()
                    ),
                    "each line holds one key as `shoal-swarm-key-1:` and 64 lower-case hex \
                     digits, as `shoal-agent swarm-key new` writes it",
                )
            })?;
            keys.push(key);
        }
        SwarmKeys::new(keys).ok_or_else(|| {
            Error::new(
                exit::USAGE,
                format!(
                    "the swarm key file {} must hold 1 to {MAX_KEYS} distinct keys",
                    path.display()
                ),
                fix,
            )
        })
    }
}

/// `shoal-agent swarm-key new`: a fresh random key, written to `out` (created, never
/// overwritten, readable by its owner only) or printed.
pub fn new_key_file(out: Option<&Path>) -> Result<()> {
    let key = SwarmKey::from_bytes(crate::transfer::random_bytes()?);
    let text = format!(
        "# A Shoal swarm key (fingerprint {}). Secret: every agent of the swarm holds it.\n{}\n",
        key.fingerprint(),
        key.to_text()
    );
    let Some(path) = out else {
        print!("{text}");
        return Ok(());
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(|e| {
        Error::new(
            exit::IO,
            format!("cannot create {}: {e}", path.display()),
            "pick a path that does not exist yet (a key file is never overwritten)",
        )
    })?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path.display(), e))?;
    eprintln!(
        "wrote a new swarm key (fingerprint {}) to {}",
        key.fingerprint(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SwarmKey {
        SwarmKey::from_bytes([b; 32])
    }

    #[test]
    fn key_sets_are_bounded_and_distinct() {
        assert!(SwarmKeys::new(vec![]).is_none());
        assert!(SwarmKeys::new(vec![key(1), key(1)]).is_none());
        assert!(SwarmKeys::new((0..=MAX_KEYS as u8).map(key).collect()).is_none());
        assert!(!format!("{:?}", SwarmKeys::new(vec![key(1)]).unwrap()).contains("0101"));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_checked_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shoal-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("swarm.key");
        new_key_file(Some(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_to_string(&path).unwrap();
        let e = new_key_file(Some(&path)).unwrap_err();
        assert!(e.to_string().contains("never overwritten"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // Comments and blank lines are fine; the key is the file's one key.
        let keys = SwarmKeys::load(&path).unwrap();
        assert_eq!(keys.all().len(), 1);
        assert!(first.contains(&keys.primary().to_text()));
        // Readable by others: refused, saying how to fix it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SwarmKeys::load(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // A line that is not a key names its line.
        std::fs::write(&path, format!("{first}\nnot a key\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SwarmKeys::load(&path).unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
