//! Ed25519 keys as the protocol names them.
//!
//! A key's id is its 32-byte public key itself, written as 64 lower-case hex digits: no
//! separate key-id scheme to get wrong, and two spellings of one key cannot exist, so
//! "each key counts once" is a set membership test. Secret keys never leave
//! [`SecretKey`]; its `Debug` prints only the public half.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::digest::{hex_decode_into, hex_encode};

/// An ed25519 public key, accepted only if it is a valid, non-small-order curve point.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses 64 lower-case hex digits that encode a usable ed25519 public key.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex_decode_into(s, &mut b)?;
        Self::from_bytes(b)
    }

    /// Accepts 32 bytes that encode a usable ed25519 public key.
    pub fn from_bytes(b: [u8; 32]) -> Option<Self> {
        let vk = VerifyingKey::from_bytes(&b).ok()?;
        // A weak (small-order) key would let forged signatures verify for it.
        if vk.is_weak() {
            return None;
        }
        Some(PublicKey(b))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lower-case hex digits: the key id used in documents.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Checks `sig` over `msg` with `verify_strict` (no malleable or small-order forms).
    pub fn verify_strict(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        vk.verify_strict(msg, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom("not a valid ed25519 public key (64 hex digits)")
        })
    }
}

/// An ed25519 secret key. The caller supplies the 32-byte seed: this crate has no
/// randomness source of its own.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from a 32-byte seed that the caller drew from a secure RNG.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The seed, for writing the key to its (mode 0600) file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg` (the caller prepends the domain tag).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_strict() {
        let k = SecretKey::from_seed([7; 32]);
        let sig = k.sign(b"hello");
        assert!(k.public().verify_strict(b"hello", &sig));
        assert!(!k.public().verify_strict(b"hellp", &sig));
        let mut bad = sig;
        bad[3] ^= 1;
        assert!(!k.public().verify_strict(b"hello", &bad));
        assert!(!format!("{k:?}").contains(&hex_encode(&k.seed())));
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order) encodes as 1 followed by zeros.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(identity).is_none());
        let good = SecretKey::from_seed([1; 32]).public();
        assert_eq!(PublicKey::from_hex(&good.to_hex()), Some(good));
    }
}
