//! The signed envelope shared by trust documents and release manifests.
//!
//! On disk and on the wire a signed document is a small JSON object:
//!
//! ```json
//! {"payload":"<base64 of the signed body>","signatures":[{"key":"<hex>","sig":"<hex>"}]}
//! ```
//!
//! Each signature is ed25519 over `TAG || payload`, where `TAG` is the domain-separation
//! tag of the document kind ([`DocumentKind::tag`]) and `payload` the exact decoded
//! bytes. Verification never re-serialises anything: the body is parsed from the same
//! bytes that were verified. A key that appears in several signatures counts once.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::digest::{hex_decode_into, hex_encode};
use crate::error::DocumentError;
use crate::keys::{PublicKey, SecretKey};
use crate::limits::{MAX_MANIFEST_LEN, MAX_SIGNATURES, MAX_TRUST_LEN};

/// The kinds of signed document; each has its own signing tag and size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// A trust document (root and release keys).
    Trust,
    /// A release manifest.
    Manifest,
}

impl DocumentKind {
    /// The domain-separation tag prefixed to the payload before signing. A signature over
    /// a manifest can therefore never pass as a signature over a trust document.
    pub fn tag(self) -> &'static [u8] {
        match self {
            DocumentKind::Trust => b"SHOAL-TRUST-V1\0",
            DocumentKind::Manifest => b"SHOAL-MANIFEST-V1\0",
        }
    }

    /// The largest file of this kind accepted.
    pub fn max_len(self) -> usize {
        match self {
            DocumentKind::Trust => MAX_TRUST_LEN,
            DocumentKind::Manifest => MAX_MANIFEST_LEN,
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DocumentKind::Trust => "trust document",
            DocumentKind::Manifest => "manifest",
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope {
    payload: String,
    signatures: Vec<RawSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    key: String,
    sig: String,
}

/// A parsed envelope: the payload bytes and the signatures, not yet verified.
#[derive(Debug, Clone)]
pub struct Envelope {
    kind: DocumentKind,
    payload: Vec<u8>,
    signatures: Vec<(PublicKey, [u8; 64])>,
}

impl Envelope {
    /// Parses `bytes` as an envelope of `kind`; the size cap is checked first.
    pub fn parse(kind: DocumentKind, bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.len() > kind.max_len() {
            return Err(DocumentError::TooLarge {
                kind,
                len: bytes.len(),
                max: kind.max_len(),
            });
        }
        let bad = |reason: String| DocumentError::Malformed { kind, reason };
        let raw: RawEnvelope =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("envelope: {e}")))?;
        if raw.signatures.len() > MAX_SIGNATURES {
            return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let payload = STANDARD
            .decode(raw.payload.as_bytes())
            .map_err(|e| bad(format!("payload is not base64: {e}")))?;
        let mut signatures = Vec::with_capacity(raw.signatures.len());
        for s in &raw.signatures {
            let key = PublicKey::from_hex(&s.key)
                .ok_or_else(|| bad(format!("signature key {:?} is not a valid key", s.key)))?;
            let mut sig = [0u8; 64];
            hex_decode_into(&s.sig, &mut sig)
                .ok_or_else(|| bad("a signature is not 128 hex digits".into()))?;
            signatures.push((key, sig));
        }
        Ok(Envelope {
            kind,
            payload,
            signatures,
        })
    }

    /// The signed payload bytes (parse these, and only after verifying).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The distinct keys among `allowed` whose signature over this payload verifies.
    /// A key listed twice, or signing twice, is in the set once.
    pub fn valid_signers(&self, allowed: &[PublicKey]) -> BTreeSet<PublicKey> {
        let mut msg = Vec::with_capacity(self.kind.tag().len() + self.payload.len());
        msg.extend_from_slice(self.kind.tag());
        msg.extend_from_slice(&self.payload);
        let mut out = BTreeSet::new();
        for (key, sig) in &self.signatures {
            if allowed.contains(key) && !out.contains(key) && key.verify_strict(&msg, sig) {
                out.insert(*key);
            }
        }
        out
    }

    /// Requires at least `need` distinct signers from `allowed`.
    pub fn require(
        &self,
        allowed: &[PublicKey],
        need: usize,
        role: &'static str,
    ) -> Result<(), DocumentError> {
        let have = self.valid_signers(allowed).len();
        if have < need {
            return Err(DocumentError::Threshold {
                kind: self.kind,
                role,
                have,
                need,
            });
        }
        Ok(())
    }
}

/// Signs `payload` as a document of `kind` with every key in `keys` and returns the
/// envelope's bytes.
pub fn sign(kind: DocumentKind, payload: &[u8], keys: &[&SecretKey]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(kind.tag().len() + payload.len());
    msg.extend_from_slice(kind.tag());
    msg.extend_from_slice(payload);
    let raw = RawEnvelope {
        payload: STANDARD.encode(payload),
        signatures: keys
            .iter()
            .map(|k| RawSignature {
                key: k.public().to_hex(),
                sig: hex_encode(&k.sign(&msg)),
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&raw).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn signatures_are_domain_separated() {
        let k = key(1);
        let bytes = sign(DocumentKind::Manifest, b"{}", &[&k]);
        let env = Envelope::parse(DocumentKind::Manifest, &bytes).unwrap();
        assert_eq!(env.valid_signers(&[k.public()]).len(), 1);
        // The same bytes read as a trust document verify for nobody.
        let env = Envelope::parse(DocumentKind::Trust, &bytes).unwrap();
        assert!(env.valid_signers(&[k.public()]).is_empty());
    }

    #[test]
    fn duplicate_signatures_count_once() {
        let k = key(1);
        let bytes = sign(DocumentKind::Trust, b"body", &[&k, &k, &k]);
        let env = Envelope::parse(DocumentKind::Trust, &bytes).unwrap();
        assert_eq!(env.valid_signers(&[k.public(), k.public()]).len(), 1);
        assert!(matches!(
            env.require(&[k.public()], 2, "root"),
            Err(DocumentError::Threshold {
                have: 1,
                need: 2,
                ..
            })
        ));
    }

    #[test]
    fn unlisted_keys_do_not_count() {
        let (a, b) = (key(1), key(2));
        let bytes = sign(DocumentKind::Trust, b"body", &[&a, &b]);
        let env = Envelope::parse(DocumentKind::Trust, &bytes).unwrap();
        assert_eq!(env.valid_signers(&[a.public()]).len(), 1);
    }

    #[test]
    fn size_cap_is_checked_before_parsing() {
        let big = vec![b' '; MAX_TRUST_LEN + 1];
        assert!(matches!(
            Envelope::parse(DocumentKind::Trust, &big),
            Err(DocumentError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"payload":"!!","signatures":[]}"#,
            br#"{"payload":"","signatures":[],"extra":1}"#,
            br#"{"payload":"","signatures":[{"key":"00","sig":"00"}]}"#,
        ] {
            assert!(matches!(
                Envelope::parse(DocumentKind::Trust, bad),
                Err(DocumentError::Malformed { .. })
            ));
        }
    }
}
