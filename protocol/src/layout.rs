//! The static origin layout: which file lives where under a release directory. The
//! publisher writes it, `verify` and the agent read it; this module is the one place
//! that names the paths.
//!
//! ```text
//! trust/<N>.json                       trust document version N (1, 2, …)
//! channels/<channel>.json              the channel's current signed manifest
//! channels/<channel>/<V>.json          every manifest version V ever published (history)
//! indexes/<sha256>.idx                 piece index, named by its own SHA-256
//! artifacts/<sha256>/<name>            artifact, under its whole-file SHA-256
//! ```
//!
//! Everything but `channels/<channel>.json` is immutable once written, so any static web
//! server, object store or CDN can serve and cache it. The same relative paths are used
//! for a directory on disk and for URLs under an origin base URL.

use crate::manifest::Artifact;
use crate::{Digest, Name};

/// Relative path of trust document version `n`.
pub fn trust(n: u64) -> String {
    format!("trust/{n}.json")
}

/// Relative path of a channel's current manifest.
pub fn channel_current(channel: &Name) -> String {
    format!("channels/{channel}.json")
}

/// Relative path of manifest version `v` of a channel.
pub fn channel_version(channel: &Name, v: u64) -> String {
    format!("channels/{channel}/{v}.json")
}

/// Relative path of a piece index.
pub fn index(sha256: &Digest) -> String {
    format!("indexes/{sha256}.idx")
}

/// Relative path of an artifact.
pub fn artifact(a: &Artifact) -> String {
    format!("artifacts/{}/{}", a.sha256, a.name)
}
