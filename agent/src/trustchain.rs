//! The product's trust chain as this agent knows it: the anchor it was installed with
//! (`trust`), then every successor document it verified since, whether the origin
//! served it or a peer handed it over (`TrustOffer`, PROTOCOL.md §6.3). Successors are
//! kept in `<state>/trust/<version>.json`, so a restart, or an agent that meets only
//! peers, starts from the newest trust it verified: a vendor that rotated a stolen
//! release key reaches agents that cannot reach the origin.
//!
//! Nothing kept here is trusted for being on disk: every load verifies each document
//! again as the successor of the one before (signed by a threshold of that one's root
//! keys), from the anchor on, and stops at the first that does not verify. When the
//! kept chain and the origin's disagree, `release::load_manifest` walks the origin's
//! from the anchor and keeps it instead only if it reaches at least the kept version
//! and differs there (a version the vendor issued again): an origin serving an older
//! chain (a lagging CDN, or one hiding a key rotation) cannot roll the agent back to
//! retired keys.
//!
//! [`TrustChain::load`], [`TrustChain::save`] and [`TrustChain::replace`] touch the
//! disk: async callers run them on blocking threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_protocol::{DocumentError, VerifiedTrust};

use crate::error::{Error, Result, exit};

/// Successors kept at most (a vendor rotates keys a few times in a product's life).
pub const MAX_SUCCESSORS: usize = 64;

/// Numbers temporary files, so writers never share one.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A verified chain: the anchor's bytes, the newest trust, and the exact bytes of every
/// successor of the anchor, in order (what a peer needs to follow the same rotations).
#[derive(Debug, Clone)]
pub struct TrustChain {
    /// The anchor document's bytes.
    pub anchor: Vec<u8>,
    /// The newest verified trust.
    pub trust: VerifiedTrust,
    /// Each successor document after the anchor, oldest first.
    pub successors: Vec<Vec<u8>>,
}

fn dir(state: &Path) -> PathBuf {
    state.join("trust")
}

impl TrustChain {
    /// The anchor (`anchor`'s bytes) and, with `state`, the successors kept there, each
    /// verified again in version order. Blocks on the disk.
    pub fn load(anchor: &[u8], state: Option<&Path>) -> Result<TrustChain> {
        let trust = VerifiedTrust::anchor(anchor).map_err(|e| {
            Error::new(
                exit::UNTRUSTED,
                format!("the trust document given with --trust (or `trust`) is not valid: {e}"),
                "use the trust document the vendor ships with the agent package",
            )
        })?;
        let mut chain = TrustChain {
            anchor: anchor.to_vec(),
            trust,
            successors: Vec::new(),
        };
        let Some(state) = state else {
            return Ok(chain);
        };
        while chain.successors.len() < MAX_SUCCESSORS {
            let path = dir(state).join(format!("{}.json", chain.trust.version() + 1));
            let Ok(bytes) = std::fs::read(&path) else {
                break;
            };
            if let Err(e) = chain.extend(&bytes) {
                tracing::warn!(file = %path.display(), error = %e, "a kept trust document does not verify; ignoring it and what follows");
                break;
            }
        }
        Ok(chain)
    }

    /// Adopts `bytes` if it is the signed successor of the newest trust (the next
    /// version, signed by a threshold of the newest one's root keys). An error says why
    /// not: an older document, one further on (the ones between come first), a bad
    /// signature, a malformed document, or a full chain. Nothing is written: see
    /// [`TrustChain::save`].
    pub fn extend(&mut self, bytes: &[u8]) -> std::result::Result<(), DocumentError> {
        if self.successors.len() >= MAX_SUCCESSORS {
            return Err(DocumentError::Malformed {
                kind: shoal_protocol::envelope::DocumentKind::Trust,
                reason: format!("more than {MAX_SUCCESSORS} trust documents"),
            });
        }
        self.trust = self.trust.successor(bytes)?;
        self.successors.push(bytes.to_vec());
        Ok(())
    }

    /// What to hand a peer on an older release: the anchor and every successor, oldest
    /// first (the peer takes only the next version of its own chain).
    pub fn offer(&self) -> Vec<Vec<u8>> {
        std::iter::once(self.anchor.clone())
            .chain(self.successors.iter().cloned())
            .collect()
    }

    /// Whether `other` (the origin's chain, walked from the same anchor) should replace
    /// this kept one: it reaches at least this version, and differs from it at or below
    /// it (the vendor issued a version again). An older or equal chain never does.
    pub fn is_replaced_by(&self, other: &TrustChain) -> bool {
        other.trust.version() >= self.trust.version()
            && other.successors.get(..self.successors.len()) != Some(&self.successors[..])
    }

    /// Keeps the successors under `state` that are not kept yet; kept files are never
    /// overwritten or removed here (another process may have learned more). A failure
    /// is logged: the documents are fetched or learned again later. Blocks on the disk.
    pub fn save(&self, state: &Path) {
        self.write(state, false);
    }

    /// Keeps this chain under `state` in place of the kept one: differing files are
    /// overwritten, and kept versions past its newest removed (they followed a version
    /// the vendor issued again). Blocks on the disk.
    pub fn replace(&self, state: &Path) {
        self.write(state, true);
        let mut v = self.trust.version() + 1;
        while std::fs::remove_file(dir(state).join(format!("{v}.json"))).is_ok() {
            v += 1;
        }
    }

    fn write(&self, state: &Path, overwrite: bool) {
        let first = self.trust.version() + 1 - self.successors.len() as u64;
        for (i, bytes) in self.successors.iter().enumerate() {
            let path = dir(state).join(format!("{}.json", first + i as u64));
            match std::fs::read(&path) {
                Ok(kept) if kept == *bytes || !overwrite => continue,
                _ => {}
            }
            if let Err(e) = write_atomic(&path, bytes) {
                tracing::warn!(file = %path.display(), error = %e, "could not keep a trust document; it is fetched or learned again later");
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
