//! The vendor's key directory: secret keys and the trust documents they signed.
//!
//! ```text
//! <keys>/root-<id>.key       root secret key (mode 0600)
//! <keys>/release-<id>.key    release secret key (mode 0600)
//! <keys>/retired/            keys rotated out (kept, never used again)
//! <keys>/trust/<N>.json      every trust document version, 1..=N
//! ```
//!
//! `<id>` is the first 16 hex digits of the public key. A key file holds one line,
//! `shoal-ed25519-secret-v1 <64 hex digits of the seed>`. Secret material is never
//! printed or logged. The directory is created mode 0700.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use shoal_protocol::digest::{hex_decode_into, hex_encode};
use shoal_protocol::{PublicKey, SecretKey, VerifiedTrust};

use crate::error::{Error, Result};

const KEY_HEADER: &str = "shoal-ed25519-secret-v1";

/// Which role a key plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs trust documents.
    Root,
    /// Signs release manifests.
    Release,
}

impl KeyRole {
    fn prefix(self) -> &'static str {
        match self {
            KeyRole::Root => "root",
            KeyRole::Release => "release",
        }
    }
}

/// An opened key directory.
pub struct KeyStore {
    dir: PathBuf,
}

/// Draws a fresh secret key from the operating system's RNG.
pub fn generate_key() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| {
        Error::other(
            format!("the operating system's random number generator failed: {e}"),
            "",
        )
    })?;
    Ok(SecretKey::from_seed(seed))
}

impl KeyStore {
    /// Opens an existing key directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("trust").is_dir() {
            return Err(Error::other(
                format!(
                    "{} is not a Shoal key directory (no trust/ inside)",
                    dir.display()
                ),
                "create one with `shoal-publisher keygen --keys DIR --product NAME`",
            ));
        }
        Ok(KeyStore {
            dir: dir.to_owned(),
        })
    }

    /// Creates a new, empty key directory; refuses one that already holds keys.
    pub fn create(dir: &Path) -> Result<Self> {
        if dir.join("trust").exists() {
            return Err(Error::refused(
                format!("{} already holds Shoal keys", dir.display()),
                "keygen never overwrites keys; use another directory, or \
                 `shoal-publisher rotate-key` to replace keys",
            ));
        }
        fs::create_dir_all(dir.join("trust")).map_err(Error::io("creating", dir))?;
        set_mode(dir, 0o700)?;
        Ok(KeyStore {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a secret key file (mode 0600, created exclusively).
    pub fn write_key(&self, role: KeyRole, key: &SecretKey) -> Result<PathBuf> {
        let id = &key.public().to_hex()[..16];
        let path = self.dir.join(format!("{}-{id}.key", role.prefix()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .map_err(Error::io("creating key file", &path))?;
        writeln!(f, "{KEY_HEADER} {}", hex_encode(&key.seed()))
            .and_then(|_| f.sync_all())
            .map_err(Error::io("writing key file", &path))?;
        Ok(path)
    }

    /// Loads every key of `role` in the directory whose public key is in `wanted`.
    pub fn load_keys(&self, role: KeyRole, wanted: &[PublicKey]) -> Result<Vec<SecretKey>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(Error::io("reading", &self.dir))?;
        for e in entries {
            let path = e.map_err(Error::io("reading", &self.dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !(name.starts_with(role.prefix()) && name.ends_with(".key")) {
                continue;
            }
            let key = read_key(&path)?;
            if wanted.contains(&key.public()) {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// Moves the key files of `keys` into `retired/`.
    pub fn retire(&self, role: KeyRole, keys: &[PublicKey]) -> Result<()> {
        let retired = self.dir.join("retired");
        fs::create_dir_all(&retired).map_err(Error::io("creating", &retired))?;
        for k in keys {
            let name = format!("{}-{}.key", role.prefix(), &k.to_hex()[..16]);
            let from = self.dir.join(&name);
            if from.exists() {
                fs::rename(&from, retired.join(&name)).map_err(Error::io("retiring", &from))?;
            }
        }
        Ok(())
    }

    /// Path of trust document version `n`.
    pub fn trust_path(&self, n: u64) -> PathBuf {
        self.dir.join("trust").join(format!("{n}.json"))
    }

    /// Stores trust document version `n` (refuses to overwrite).
    pub fn write_trust(&self, n: u64, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.trust_path(n);
        crate::fsutil::write_new(&path, bytes)?;
        Ok(path)
    }

    /// Reads and verifies the whole trust chain, 1..=N, and returns every version's
    /// bytes and the latest verified trust.
    pub fn trust_chain(&self) -> Result<(Vec<Vec<u8>>, VerifiedTrust)> {
        let mut docs = Vec::new();
        let mut current: Option<VerifiedTrust> = None;
        for n in 1.. {
            let path = self.trust_path(n);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io("reading", &path)(e)),
            };
            let next = match &current {
                None => VerifiedTrust::anchor(&bytes),
                Some(t) => t.successor(&bytes),
            }
            .map_err(|e| {
                Error::other(
                    format!("{}: {e}", path.display()),
                    "the key directory's trust chain is broken; restore it from backup",
                )
            })?;
            docs.push(bytes);
            current = Some(next);
        }
        let current = current.ok_or_else(|| {
            Error::other(
                format!("{} holds no trust/1.json", self.dir.display()),
                "create keys with `shoal-publisher keygen`",
            )
        })?;
        Ok((docs, current))
    }
}

fn read_key(path: &Path) -> Result<SecretKey> {
    let text = fs::read_to_string(path).map_err(Error::io("reading key file", path))?;
    let bad = || {
        Error::other(
            format!("{} is not a Shoal secret key file", path.display()),
            "restore the key file from backup",
        )
    };
    let hex = text
        .trim_end()
        .strip_prefix(KEY_HEADER)
        .and_then(|s| s.strip_prefix(' '))
        .ok_or_else(bad)?;
    let mut seed = [0u8; 32];
    hex_decode_into(hex, &mut seed).ok_or_else(bad)?;
    Ok(SecretKey::from_seed(seed))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(Error::io("setting permissions of", path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
