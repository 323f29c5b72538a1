//! A verified release: the trust chain walked from the anchor, the channel's manifest,
//! and every artifact's piece index, all checked before a single piece is fetched.

use std::path::Path;

use shoal_protocol::index::{PieceIndex, verify_index};
use shoal_protocol::limits::{MAX_MANIFEST_LEN, MAX_TRUST_LEN};
use shoal_protocol::manifest::Artifact;
use shoal_protocol::swarm::PieceSpec;
use shoal_protocol::{
    ChannelRef, Digest, DocumentError, Name, VerifiedManifest, VerifiedTrust, layout,
};

use crate::error::{Error, Result, exit};
use crate::origin::OriginClient;
use crate::trustchain::TrustChain;

/// Where one release-global piece lies.
#[derive(Debug, Clone, Copy)]
pub struct PieceLocation {
    /// Index of the artifact in the manifest.
    pub artifact: usize,
    /// Byte offset in the artifact.
    pub offset: u64,
}

/// A release whose every document verified.
pub struct Release {
    /// The trust it was verified under (verifies manifests peers offer later).
    pub trust: VerifiedTrust,
    /// The manifest.
    pub manifest: VerifiedManifest,
    /// One index per artifact, in manifest order.
    pub indexes: Vec<PieceIndex>,
    /// The exact bytes of each index (handed to peers that learn the release from us).
    pub index_bytes: Vec<Vec<u8>>,
    /// Every piece, numbered release-wide.
    pub pieces: Vec<PieceSpec>,
    /// Where each piece lies.
    pub locations: Vec<PieceLocation>,
    /// The exact bytes of the trust documents `trust` was reached through, the anchor
    /// first (handed to peers before a manifest, so they can follow the vendor's key
    /// rotations without the origin).
    pub trust_chain: Vec<Vec<u8>>,
}

impl Release {
    /// The release id (SHA-256 of the manifest's bytes).
    pub fn id(&self) -> Digest {
        self.manifest.digest()
    }

    /// The artifacts.
    pub fn artifacts(&self) -> &[Artifact] {
        &self.manifest.body().artifacts
    }

    /// Total bytes.
    pub fn total_len(&self) -> u64 {
        self.artifacts().iter().map(|a| a.length).sum()
    }
}

fn untrusted(file: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        exit::UNTRUSTED,
        format!("{file}: {e}"),
        "the origin or a mirror serves a document the vendor's keys do not vouch for; \
         nothing was installed",
    )
}

/// Reads the trust anchor at `trust` (and the successors kept under `state`), walks the
/// trust chain on the origin, then fetches and verifies `channel`'s manifest and its
/// piece indexes.
pub async fn load(
    origin: &OriginClient,
    trust: &Path,
    state: Option<&Path>,
    channel: &str,
) -> Result<Release> {
    let (chain, manifest) = load_current(origin, trust, state, channel).await?;
    load_indexes(origin, chain, manifest).await
}

/// Reads the trust anchor at `trust` and loads `channel`'s current manifest (see
/// [`load_manifest`]) as of now.
pub async fn load_current(
    origin: &OriginClient,
    trust: &Path,
    state: Option<&Path>,
    channel: &str,
) -> Result<(TrustChain, VerifiedManifest)> {
    let channel = Name::new(channel)
        .map_err(|e| Error::new(exit::USAGE, format!("channel {channel:?}: {e}"), ""))?;
    let anchor = std::fs::read(trust).map_err(|e| Error::io(trust.display(), e))?;
    load_manifest(origin, &anchor, state, &channel, shoal_cli::unix_now()).await
}

/// The product named by the trust anchor at `trust` (checked as an anchor): agents of one
/// product recognise each other in discovery.
pub fn anchor_product(trust: &Path) -> Result<String> {
    let anchor = std::fs::read(trust).map_err(|e| Error::io(trust.display(), e))?;
    let trust = VerifiedTrust::anchor(&anchor).map_err(|e| {
        Error::new(
            exit::UNTRUSTED,
            format!("the trust document given with --trust (or `trust`) is not valid: {e}"),
            "use the trust document the vendor ships with the agent package",
        )
    })?;
    Ok(trust.body().product.to_string())
}

/// Walks the trust chain from `anchor` (and the successors kept under `state`, which
/// are updated) on the origin and fetches and verifies the channel's current manifest:
/// the cheap part of a poll (a few KiB), enough to decide whether anything changed
/// before any index is fetched.
pub async fn load_manifest(
    origin: &OriginClient,
    anchor: &[u8],
    state: Option<&Path>,
    channel: &Name,
    now: u64,
) -> Result<(TrustChain, VerifiedManifest)> {
    let kept = {
        let (anchor, state) = (anchor.to_vec(), state.map(Path::to_path_buf));
        tokio::task::spawn_blocking(move || TrustChain::load(&anchor, state.as_deref()))
            .await
            .map_err(|e| Error::new(exit::IO, format!("loading the trust chain: {e}"), ""))??
    };
    let kept_chain = kept.clone();
    let (loaded, replaced) = match walk(origin, kept, channel, now).await {
        // The kept chain and the origin's disagree: the origin's, walked from the
        // anchor, replaces it only if it reaches at least the kept version and differs
        // from it there (a version the vendor issued again). An origin that serves an
        // older chain (a lagging CDN, or a hostile origin hiding a key rotation) must
        // not roll the agent back to keys the vendor retired.
        Err(e) if !kept_chain.successors.is_empty() && e.code == exit::UNTRUSTED => {
            let fresh = TrustChain::load(anchor, None)?;
            match walk(origin, fresh, channel, now).await {
                Ok(l) if kept_chain.is_replaced_by(&l.0) => (l, true),
                _ => return Err(e),
            }
        }
        other => (other?, false),
    };
    if let Some(state) = state {
        let (chain, state) = (loaded.0.clone(), state.to_path_buf());
        let _ = tokio::task::spawn_blocking(move || {
            if replaced {
                tracing::warn!(
                    version = chain.trust.version(),
                    "the origin's trust chain differs from the kept one; keeping the origin's"
                );
                chain.replace(&state);
            } else {
                chain.save(&state);
            }
        })
        .await;
    }
    Ok(loaded)
}

/// Extends `chain` by the origin's next trust documents, then fetches and verifies the
/// channel's manifest under it.
async fn walk(
    origin: &OriginClient,
    mut chain: TrustChain,
    channel: &Name,
    now: u64,
) -> Result<(TrustChain, VerifiedManifest)> {
    loop {
        let rel = layout::trust(chain.trust.version() + 1);
        match origin.get(&rel, MAX_TRUST_LEN).await? {
            None => break,
            Some(bytes) => chain.extend(&bytes).map_err(|e| untrusted(&rel, e))?,
        }
    }
    let trust = &chain.trust;
    let rel = layout::channel_current(channel);
    let bytes = origin.get(&rel, MAX_MANIFEST_LEN).await?.ok_or_else(|| {
        Error::new(
            exit::UNAVAILABLE,
            format!("{rel} is not on the origin"),
            "check --channel and the origin URL",
        )
    })?;
    let want = ChannelRef {
        product: trust.body().product.clone(),
        channel: channel.clone(),
    };
    let manifest = VerifiedManifest::verify(&bytes, trust, &want, now)
        .map_err(|e| untrusted_at(&rel, e, now))?;
    for_this_platform(&manifest)?;
    Ok((chain, manifest))
}

/// This agent's platform as manifests name it: Rust's OS and architecture names
/// (`linux`, `windows`, `macos`; `x86_64`, `aarch64`, …), those of the build (a 32-bit
/// agent on a 64-bit machine is `x86`).
pub const THIS_OS: &str = std::env::consts::OS;

/// See [`THIS_OS`].
pub const THIS_ARCH: &str = std::env::consts::ARCH;

/// Refuses a release none of whose artifacts is for this machine (an OS and
/// architecture each equal to this agent's, or `any`): a Windows-only release must
/// never reach a Linux host's install command. A release with artifacts for several
/// platforms, one of them this one, is delivered whole (its install command picks);
/// a vendor may as well publish one channel per platform.
pub fn for_this_platform(manifest: &VerifiedManifest) -> Result<()> {
    let body = manifest.body();
    let fits = |want: &str, here: &str| want == "any" || want == here;
    let ours = body.artifacts.iter().any(|a| {
        fits(a.platform.os.as_str(), THIS_OS) && fits(a.platform.arch.as_str(), THIS_ARCH)
    });
    if ours {
        return Ok(());
    }
    let theirs: Vec<String> = body
        .artifacts
        .iter()
        .map(|a| format!("{}/{}", a.platform.os, a.platform.arch))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Err(Error::new(
        exit::UNTRUSTED,
        format!(
            "release {} of channel {} is for {}; this agent runs on {THIS_OS}/{THIS_ARCH}: \
             nothing was fetched or installed",
            body.release,
            body.channel,
            theirs.join(", ")
        ),
        "the agent is following another platform's channel: set `channel` (or --channel) \
         to this platform's",
    ))
}

/// [`untrusted`], except that a document from the future (or expired) may mean this
/// machine's clock is wrong: the error then says so.
fn untrusted_at(file: &str, e: DocumentError, now: u64) -> Error {
    match e {
        DocumentError::FromTheFuture { .. } | DocumentError::Expired { .. } => Error::new(
            exit::UNTRUSTED,
            format!("{file}: {e}"),
            format!(
                "check this machine's clock (it reads {} UTC): a clock that is wrong makes \
                 every current document look expired or not yet valid; if the clock is \
                 right, the origin serves a stale or mis-dated document",
                shoal_cli::utc(now)
            ),
        ),
        e => untrusted(file, e),
    }
}

/// Fetches a verified manifest's piece indexes from the origin and builds the release.
pub async fn load_indexes(
    origin: &OriginClient,
    chain: TrustChain,
    manifest: VerifiedManifest,
) -> Result<Release> {
    let mut index_bytes = Vec::new();
    for a in &manifest.body().artifacts {
        let rel = layout::index(&a.index.sha256);
        let bytes = origin
            .get(&rel, a.index.length as usize)
            .await?
            .ok_or_else(|| {
                Error::new(exit::UNAVAILABLE, format!("{rel} is not on the origin"), "")
            })?;
        index_bytes.push(bytes);
    }
    let offer = chain.offer();
    let mut release = from_parts(chain.trust, manifest, index_bytes)?;
    release.trust_chain = offer;
    Ok(release)
}

/// Builds a release from a verified manifest and its index files, whoever supplied
/// them: each index must match the manifest's length and SHA-256 before it is parsed.
pub fn from_parts(
    trust: VerifiedTrust,
    manifest: VerifiedManifest,
    index_bytes: Vec<Vec<u8>>,
) -> Result<Release> {
    if index_bytes.len() != manifest.body().artifacts.len() {
        return Err(untrusted("indexes", "one index per artifact is needed"));
    }
    let mut indexes = Vec::new();
    let mut pieces = Vec::new();
    let mut locations = Vec::new();
    for (i, (a, bytes)) in manifest
        .body()
        .artifacts
        .iter()
        .zip(&index_bytes)
        .enumerate()
    {
        let index =
            verify_index(a, bytes).map_err(|e| untrusted(&layout::index(&a.index.sha256), e))?;
        for p in index.pieces() {
            pieces.push(PieceSpec {
                length: p.length,
                digest: p.digest,
            });
            locations.push(PieceLocation {
                artifact: i,
                offset: p.offset,
            });
        }
        indexes.push(index);
    }
    Ok(Release {
        trust,
        manifest,
        indexes,
        index_bytes,
        pieces,
        locations,
        trust_chain: Vec::new(),
    })
}
