//! Trust documents: who may sign what, and how that changes (TUF-lite).
//!
//! A trust document lists the product's **root** keys (with a threshold) and its
//! **release** keys (with a threshold), a version and an expiry. An agent ships with one
//! trust document; [`VerifiedTrust::anchor`] accepts it if a threshold of its own root
//! keys signed it. Version N+1 replaces version N only through
//! [`VerifiedTrust::successor`]: it must carry version N+1 exactly and be signed by a
//! threshold of N's root keys *and* a threshold of its own, so neither a stolen old key
//! set nor a stolen new one alone can rewrite trust. Expiry is checked separately
//! ([`VerifiedTrust::check_fresh`]) so a chain of old, expired versions can still be
//! walked to the current one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::envelope::{DocumentKind, Envelope};
use crate::error::DocumentError;
use crate::keys::PublicKey;
use crate::limits::MAX_ROLE_KEYS;
use crate::name::Name;

/// A set of keys and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Distinct signatures required, 1 to `keys.len()`.
    pub threshold: u32,
    /// The keys, each listed once.
    pub keys: Vec<PublicKey>,
}

/// The signed body of a trust document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// The product these keys speak for.
    pub product: Name,
    /// Starts at 1 and grows by exactly 1 per rotation.
    pub version: u64,
    /// Unix seconds after which this document authorises nothing.
    pub expires: u64,
    /// Keys that sign trust documents.
    pub root: Role,
    /// Keys that sign release manifests.
    pub release: Role,
}

impl TrustBody {
    /// Serialises the body as the exact bytes to sign.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        self.root.validate("root")?;
        self.release.validate("release")?;
        if self.root.keys.iter().any(|k| self.release.keys.contains(k)) {
            return Err("a key holds both the root and the release role".into());
        }
        Ok(())
    }
}

impl Role {
    fn validate(&self, name: &str) -> Result<(), String> {
        if self.keys.is_empty() || self.keys.len() > MAX_ROLE_KEYS {
            return Err(format!("{name} role must list 1 to {MAX_ROLE_KEYS} keys"));
        }
        if self.threshold == 0 || self.threshold as usize > self.keys.len() {
            return Err(format!(
                "{name} threshold {} is not between 1 and its {} key(s)",
                self.threshold,
                self.keys.len()
            ));
        }
        let distinct: BTreeSet<_> = self.keys.iter().collect();
        if distinct.len() != self.keys.len() {
            return Err(format!("{name} role lists a key twice"));
        }
        Ok(())
    }

    /// A digest of the key set and threshold, independent of list order.
    pub fn fingerprint(&self) -> Digest {
        let keys: BTreeSet<_> = self.keys.iter().collect();
        let mut parts: Vec<&[u8]> = vec![b"SHOAL-ROLE-V1\0"];
        let t = self.threshold.to_be_bytes();
        parts.push(&t);
        for k in &keys {
            parts.push(k.as_bytes());
        }
        Digest::of_parts(&parts)
    }
}

/// A trust document whose signatures were checked. Only this module builds one.
#[derive(Debug, Clone)]
pub struct VerifiedTrust {
    body: TrustBody,
    digest: Digest,
}

impl VerifiedTrust {
    /// Accepts the trust document an agent or a publisher starts from: a threshold of its
    /// own root keys must have signed it. Expiry is not checked here.
    pub fn anchor(bytes: &[u8]) -> Result<Self, DocumentError> {
        let (env, body) = parse(bytes)?;
        env.require(&body.root.keys, body.root.threshold as usize, "root")?;
        Ok(VerifiedTrust {
            body,
            digest: Digest::of(bytes),
        })
    }

    /// Accepts `bytes` as the next version after `self` (see the module docs).
    pub fn successor(&self, bytes: &[u8]) -> Result<Self, DocumentError> {
        let (env, body) = parse(bytes)?;
        if body.product != self.body.product {
            return Err(DocumentError::WrongProduct {
                kind: DocumentKind::Trust,
                want: self.body.product.to_string(),
                got: body.product.to_string(),
            });
        }
        if Some(body.version) != self.body.version.checked_add(1) {
            return Err(DocumentError::TrustVersion {
                current: self.body.version,
                got: body.version,
            });
        }
        let old = &self.body.root;
        env.require(&old.keys, old.threshold as usize, "previous root")?;
        env.require(&body.root.keys, body.root.threshold as usize, "root")?;
        Ok(VerifiedTrust {
            body,
            digest: Digest::of(bytes),
        })
    }

    /// Refuses a trust document whose expiry has passed at `now` (Unix seconds).
    pub fn check_fresh(&self, now: u64) -> Result<(), DocumentError> {
        if now >= self.body.expires {
            return Err(DocumentError::Expired {
                kind: DocumentKind::Trust,
                expires: self.body.expires,
                now,
            });
        }
        Ok(())
    }

    /// The verified body.
    pub fn body(&self) -> &TrustBody {
        &self.body
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// SHA-256 of the exact document bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

fn parse(bytes: &[u8]) -> Result<(Envelope, TrustBody), DocumentError> {
    let env = Envelope::parse(DocumentKind::Trust, bytes)?;
    let bad = |reason: String| DocumentError::Malformed {
        kind: DocumentKind::Trust,
        reason,
    };
    let body: TrustBody = serde_json::from_slice(env.payload()).map_err(|e| bad(e.to_string()))?;
    body.validate().map_err(bad)?;
    Ok((env, body))
}
