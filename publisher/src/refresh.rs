//! `shoal-publisher refresh`: re-sign channels' current manifests before they expire.
//!
//! Agents refuse an expired manifest (that is what stops a freeze attack), so a channel
//! that sees no new release must still be re-signed from time to time. Refresh publishes
//! the same artifacts under the next manifest version with a new `created` and
//! `expires`; agents that hold the release see nothing to download.

use std::path::PathBuf;

use shoal_protocol::Name;

use crate::error::{Error, Result};
use crate::release::{next_manifests, publish_manifest, signing_keys};

/// Options of `refresh`.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Key directory.
    pub keys: PathBuf,
    /// Release directory.
    pub repo: PathBuf,
    /// Channels to refresh; empty means all.
    pub channels: Vec<String>,
    /// New manifest lifetime in seconds.
    pub expires_in: u64,
    /// Unix seconds.
    pub now: u64,
}

/// Runs `refresh`; returns each channel with its new manifest version and expiry.
pub fn run(o: &RefreshOptions) -> Result<Vec<(Name, u64, u64)>> {
    let only = o
        .channels
        .iter()
        .map(|c| {
            Name::new(c)
                .map_err(|e| Error::usage(format!("channel {c:?} is not a valid name: {e}"), ""))
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, _, keys) = signing_keys(&o.keys, o.now)?;
    let bodies = next_manifests(&o.repo, &only, o.now, o.expires_in)?;
    if bodies.is_empty() {
        return Err(Error::usage(
            format!("{} holds no channel", o.repo.display()),
            "--repo takes the directory that `shoal-publisher release` wrote",
        ));
    }
    let mut out = Vec::new();
    for body in bodies {
        publish_manifest(&o.repo, &body, &keys)?;
        out.push((body.channel.clone(), body.version, body.expires));
    }
    Ok(out)
}
