//! Release manifests and the rules for accepting one.
//!
//! A manifest is signed by a threshold of the trust document's release keys and binds a
//! product, a channel, a strictly increasing manifest version, creation and expiry times,
//! a human version string and, per artifact, its name, platform, exact length, whole-file
//! SHA-256 and the SHA-256 and length of its piece index.
//!
//! [`VerifiedManifest::verify`] checks everything that needs only the manifest, the trust
//! document and the clock. [`accept`] then compares it with the [`VersionFloor`] the
//! caller persisted from the last accepted manifest: lower versions (rollback) and the
//! same version with other bytes (equivocation) are refused. The floor is bound to the
//! release key set that signed it, so after the vendor rotates a stolen release key the
//! floor an attacker pushed up with that key is dropped.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::envelope::{DocumentKind, Envelope};
use crate::error::DocumentError;
use crate::index::{INDEX_ENTRY_LEN, INDEX_HEADER_LEN};
use crate::limits::{
    MAX_ARTIFACT_LEN, MAX_ARTIFACTS, MAX_CLOCK_SKEW_SECS, MAX_INDEX_LEN, MAX_PIECES_PER_RELEASE,
    MAX_RELEASE_LABEL_LEN,
};
use crate::name::Name;
use crate::trust::VerifiedTrust;

/// Where an artifact runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// Operating system, e.g. `linux`, `windows`, or `any`.
    pub os: Name,
    /// CPU architecture, e.g. `x86_64`, `aarch64`, or `any`.
    pub arch: Name,
}

/// The piece index of an artifact, pinned by hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRef {
    /// SHA-256 of the piece index file.
    pub sha256: Digest,
    /// Exact length of the piece index file.
    pub length: u64,
}

impl IndexRef {
    /// The number of pieces an index of this length holds, if the length is well formed.
    pub fn piece_count(&self) -> Option<u32> {
        let body = self.length.checked_sub(INDEX_HEADER_LEN as u64)?;
        if self.length > MAX_INDEX_LEN || body % INDEX_ENTRY_LEN as u64 != 0 {
            return None;
        }
        u32::try_from(body / INDEX_ENTRY_LEN as u64).ok()
    }
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name, unique within the release.
    pub name: Name,
    /// Where it runs.
    pub platform: Platform,
    /// Exact length in bytes.
    pub length: u64,
    /// SHA-256 of the whole file.
    pub sha256: Digest,
    /// Its piece index.
    pub index: IndexRef,
}

/// The signed body of a release manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// Product, as in the trust document.
    pub product: Name,
    /// Channel, e.g. `stable`.
    pub channel: Name,
    /// Manifest version: strictly increasing within a channel.
    pub version: u64,
    /// Human version string of the release, e.g. `2.4.1`.
    pub release: String,
    /// Unix seconds when signed.
    pub created: u64,
    /// Unix seconds after which the manifest is refused.
    pub expires: u64,
    /// The files, at least one.
    pub artifacts: Vec<Artifact>,
}

impl ManifestBody {
    /// What the release *is*, independent of how it was signed: SHA-256 over a tag, the
    /// release label and every artifact (name, platform, length, whole-file and index
    /// digests). A `refresh` re-signs the same release under a new manifest version (a
    /// new release id) with the same content id, so an agent that delivered it does not
    /// deliver or install it again.
    pub fn content_id(&self) -> Digest {
        let artifacts = serde_json::to_vec(&self.artifacts).unwrap_or_default();
        let label_len = (self.release.len() as u64).to_be_bytes();
        Digest::of_parts(&[
            b"SHOAL-CONTENT-V1\0",
            &label_len,
            self.release.as_bytes(),
            &artifacts,
        ])
    }

    /// Serialises the body as the exact bytes to sign.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks the structural rules that need no clock and no keys.
    pub fn validate(&self) -> Result<(), String> {
        validate_release_label(&self.release)?;
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        if self.expires <= self.created {
            return Err("expires must be after created".into());
        }
        if self.artifacts.is_empty() || self.artifacts.len() > MAX_ARTIFACTS {
            return Err(format!("a release holds 1 to {MAX_ARTIFACTS} artifacts"));
        }
        let mut names = BTreeSet::new();
        let mut pieces: u64 = 0;
        for a in &self.artifacts {
            if !names.insert(&a.name) {
                return Err(format!("artifact {} is listed twice", a.name));
            }
            if a.length > MAX_ARTIFACT_LEN {
                return Err(format!(
                    "artifact {} is over {MAX_ARTIFACT_LEN} bytes",
                    a.name
                ));
            }
            let n = a.index.piece_count().ok_or_else(|| {
                format!(
                    "artifact {}: index length {} is not a valid piece index length",
                    a.name, a.index.length
                )
            })?;
            if (n == 0) != (a.length == 0) {
                return Err(format!(
                    "artifact {}: piece count does not fit its length",
                    a.name
                ));
            }
            pieces += u64::from(n);
        }
        if pieces > u64::from(MAX_PIECES_PER_RELEASE) {
            return Err(format!("release has over {MAX_PIECES_PER_RELEASE} pieces"));
        }
        Ok(())
    }
}

/// Checks a human release version string: 1 to 128 bytes of `[A-Za-z0-9._+~-]`, not
/// starting with a dot (so it is also safe in a file name or URL path).
pub fn validate_release_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_RELEASE_LABEL_LEN {
        return Err(format!(
            "release version must be 1 to {MAX_RELEASE_LABEL_LEN} bytes"
        ));
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'~' | b'-');
    if s.starts_with('.') || !s.bytes().all(allowed) {
        return Err(format!(
            "release version {s:?} may hold only A-Z a-z 0-9 . _ + ~ - and must not start with a dot"
        ));
    }
    Ok(())
}

/// Reads the body of a manifest without checking signatures, times or floors.
///
/// Only for a publisher reading back the history it signed itself (to refuse reusing a
/// release version with other content). Never base a trust decision on it: use
/// [`VerifiedManifest::verify`].
pub fn read_body_unverified(bytes: &[u8]) -> Result<ManifestBody, DocumentError> {
    let kind = DocumentKind::Manifest;
    let env = Envelope::parse(kind, bytes)?;
    serde_json::from_slice(env.payload()).map_err(|e| DocumentError::Malformed {
        kind,
        reason: e.to_string(),
    })
}

/// What a manifest is expected to be for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    /// The product.
    pub product: Name,
    /// The channel.
    pub channel: Name,
}

/// A manifest whose signatures and time rules were checked. Only [`VerifiedManifest::verify`]
/// builds one.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    body: ManifestBody,
    bytes: Vec<u8>,
    digest: Digest,
    release_keys: Digest,
}

impl VerifiedManifest {
    /// Verifies `bytes` as a manifest for `want`, signed under `trust`, at time `now`
    /// (Unix seconds).
    pub fn verify(
        bytes: &[u8],
        trust: &VerifiedTrust,
        want: &ChannelRef,
        now: u64,
    ) -> Result<Self, DocumentError> {
        let kind = DocumentKind::Manifest;
        let env = Envelope::parse(kind, bytes)?;
        let role = &trust.body().release;
        env.require(&role.keys, role.threshold as usize, "release")?;
        trust.check_fresh(now)?;
        let bad = |reason: String| DocumentError::Malformed { kind, reason };
        let body: ManifestBody =
            serde_json::from_slice(env.payload()).map_err(|e| bad(e.to_string()))?;
        body.validate().map_err(bad)?;
        for (want, got) in [
            (&want.product, &body.product),
            (&trust.body().product, &body.product),
        ] {
            if want != got {
                return Err(DocumentError::WrongProduct {
                    kind,
                    want: want.to_string(),
                    got: got.to_string(),
                });
            }
        }
        if body.channel != want.channel {
            return Err(DocumentError::WrongChannel {
                want: want.channel.to_string(),
                got: body.channel.to_string(),
            });
        }
        if body.created > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(DocumentError::FromTheFuture {
                created: body.created,
                now,
                skew: MAX_CLOCK_SKEW_SECS,
            });
        }
        if now >= body.expires {
            return Err(DocumentError::Expired {
                kind,
                expires: body.expires,
                now,
            });
        }
        Ok(VerifiedManifest {
            body,
            bytes: bytes.to_vec(),
            digest: Digest::of(bytes),
            release_keys: role.fingerprint(),
        })
    }

    /// The verified body.
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// The exact signed bytes, as received (what a peer is handed in a manifest offer).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the exact bytes: the release id.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The floor to persist once this manifest is accepted.
    pub fn floor(&self) -> VersionFloor {
        VersionFloor {
            version: self.body.version,
            digest: self.digest,
            release_keys: self.release_keys,
        }
    }
}

/// What an agent persists about the newest manifest it accepted on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFloor {
    /// Highest manifest version accepted.
    pub version: u64,
    /// SHA-256 of that manifest's bytes.
    pub digest: Digest,
    /// Fingerprint of the release key set that signed it.
    pub release_keys: Digest,
}

/// The outcome of [`accept`] for a manifest that is not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Newer than the floor (or the floor was dropped): switch to it.
    Newer,
    /// Exactly the manifest already accepted: nothing to do.
    Current,
}

/// Compares a verified manifest with the persisted floor (see the module docs).
pub fn accept(
    floor: Option<&VersionFloor>,
    m: &VerifiedManifest,
) -> Result<Acceptance, DocumentError> {
    let Some(floor) = floor else {
        return Ok(Acceptance::Newer);
    };
    if floor.release_keys != m.release_keys {
        // The release keys rotated since the floor was recorded: a floor raised with a
        // stolen key must not lock the channel forever.
        return Ok(Acceptance::Newer);
    }
    let v = m.body.version;
    if v < floor.version {
        Err(DocumentError::Rollback {
            floor: floor.version,
            got: v,
        })
    } else if v == floor.version && m.digest != floor.digest {
        Err(DocumentError::Equivocation { version: v })
    } else if v == floor.version {
        Ok(Acceptance::Current)
    } else {
        Ok(Acceptance::Newer)
    }
}
