//! The product's trust chain as this agent knows it: the anchor it was installed with
//! (`trust`), then every successor document it verified since, whether the origin
//! served it or a peer handed it over (`TrustOffer`, PROTOCOL.md §6.3). Successors are
//! kept in `<state>/trust/<version>.json`, so a restart, or an agent that meets only
//! peers, starts from the newest trust it verified: a vendor that rotated a stolen
//! release key reaches agents that cannot reach the origin.
//!
//! Nothing kept here is trusted for being on disk: every start verifies each document
//! again as the successor of the one before (signed by a threshold of that one's root
//! keys), from the anchor on, and stops at the first that does not verify.

use std::path::{Path, PathBuf};

use shoal_protocol::{DocumentError, VerifiedTrust};

use crate::error::{Error, Result, exit};

/// Successors kept at most (a vendor rotates keys a few times in a product's life).
pub const MAX_SUCCESSORS: usize = 64;

/// A verified chain: the newest trust and the exact bytes of every successor of the
/// anchor, in order (what a peer needs to follow the same rotations).
#[derive(Debug, Clone)]
pub struct TrustChain {
    /// The newest verified trust.
    pub trust: VerifiedTrust,
    /// Each successor document after the anchor, oldest first.
    pub successors: Vec<Vec<u8>>,
}

fn dir(state: &Path) -> PathBuf {
    state.join("trust")
}

impl TrustChain {
    /// The anchor (`anchor`'s bytes) and the successors kept under `state`, each
    /// verified again in version order.
    pub fn load(anchor: &[u8], state: Option<&Path>) -> Result<TrustChain> {
        let trust = VerifiedTrust::anchor(anchor).map_err(|e| {
            Error::new(
                exit::UNTRUSTED,
                format!("the trust document given with --trust (or `trust`) is not valid: {e}"),
                "use the trust document the vendor ships with the agent package",
            )
        })?;
        let mut chain = TrustChain {
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
            if let Err(e) = chain.push(bytes) {
                tracing::warn!(file = %path.display(), error = %e, "a kept trust document does not verify; ignoring it and what follows");
                break;
            }
        }
        Ok(chain)
    }

    /// Adopts `bytes` if it is the signed successor of the newest trust (the next
    /// version, signed by a threshold of the newest one's root keys), and keeps it under
    /// `state`. An error says why not: an older document, one further on (the ones
    /// between come first), a bad signature, a malformed document, or a full chain.
    pub fn extend(
        &mut self,
        bytes: &[u8],
        state: Option<&Path>,
    ) -> std::result::Result<(), DocumentError> {
        if self.successors.len() >= MAX_SUCCESSORS {
            return Err(DocumentError::Malformed {
                kind: shoal_protocol::envelope::DocumentKind::Trust,
                reason: format!("more than {MAX_SUCCESSORS} trust documents"),
            });
        }
        let next = self.trust.version() + 1;
        self.push(bytes.to_vec())?;
        if let Some(state) = state {
            let path = dir(state).join(format!("{next}.json"));
            if let Err(e) = write_atomic(&path, bytes) {
                tracing::warn!(file = %path.display(), error = %e, "could not keep a trust document; it is fetched or learned again after a restart");
            }
        }
        Ok(())
    }

    fn push(&mut self, bytes: Vec<u8>) -> std::result::Result<(), DocumentError> {
        self.trust = self.trust.successor(&bytes)?;
        self.successors.push(bytes);
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
