//! # shoal-protocol
//!
//! Everything two Shoal programs must agree on, and nothing that does IO: this crate reads
//! no clock (time is passed in as Unix seconds), opens no socket or file, and draws no
//! random numbers (seeds and nonces are passed in). `docs/PROTOCOL.md` is the normative
//! specification; these modules implement it.
//!
//! | module | owns |
//! |---|---|
//! | [`limits`] | every hard limit, checked before allocation |
//! | [`digest`], [`keys`], [`name`] | SHA-256 digests, ed25519 keys, safe names |
//! | [`envelope`] | the signed-document envelope and domain-separated signatures |
//! | [`trust`] | trust documents and root rotation |
//! | [`manifest`] | release manifests and the acceptance rules (rollback, freeze, …) |
//! | [`chunk`], [`index`] | content-defined chunking and the piece index format |
//! | [`layout`] | where each file of a release lives on an origin |
//! | [`wire`] | frames, peer messages, the handshake state machine |
//! | [`discovery`] | discovery tags in announced names, swarm keys and what derives from them |
//!
//! Goals: an independent implementation can interoperate from `docs/PROTOCOL.md` alone;
//! nothing that arrives from a peer, a mirror or the origin can panic or over-allocate.
//! Private swarms' encrypted transport (Noise, §6.8) is carried out by the agent, which
//! draws the handshake's ephemeral keys; the keys it derives from come from [`discovery`].

pub mod chunk;
pub mod digest;
pub mod discovery;
pub mod envelope;
pub mod error;
pub mod index;
pub mod keys;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod name;
pub mod swarm;
pub mod trust;
pub mod wire;

pub use digest::Digest;
pub use error::DocumentError;
pub use keys::{PublicKey, SecretKey};
pub use manifest::{ChannelRef, VerifiedManifest, VersionFloor};
pub use name::Name;
pub use trust::VerifiedTrust;
