//! `shoal-publisher keygen` and `shoal-publisher rotate-key`: key sets and the trust
//! documents that publish them.
//!
//! Rotation writes trust version N+1, signed by a threshold of version N's root keys
//! and a threshold of its own, and checks it with the same code an agent runs
//! ([`VerifiedTrust::successor`]) before anything is written. After a release-key
//! rotation every channel's current manifest is signed again, with the new key and the
//! next manifest version, so agents that fetch trust N+1 keep a valid manifest.

use std::path::PathBuf;

use shoal_protocol::envelope::{DocumentKind, sign};
use shoal_protocol::trust::{Role, TrustBody};
use shoal_protocol::{Name, PublicKey, SecretKey, VerifiedTrust};

use crate::error::{Error, Result};
use crate::fsutil::write_new;
use crate::keystore::{KeyRole, KeyStore, generate_key};
use crate::release::{next_manifests, publish_manifest};
use shoal_protocol::layout;

/// Options of `keygen`.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// Key directory to create.
    pub keys: PathBuf,
    /// Product name.
    pub product: String,
    /// Number of root keys.
    pub root_keys: u32,
    /// Root threshold.
    pub root_threshold: u32,
    /// Trust lifetime in seconds.
    pub expires_in: u64,
    /// Unix seconds.
    pub now: u64,
}

/// What `keygen` made.
pub struct KeygenReport {
    /// Root public keys.
    pub root: Vec<PublicKey>,
    /// Release public keys.
    pub release: Vec<PublicKey>,
    /// The trust document written.
    pub trust_path: PathBuf,
}

fn check_threshold(count: u32, threshold: u32, flag: &str) -> Result<()> {
    if count == 0 || count > shoal_protocol::limits::MAX_ROLE_KEYS as u32 {
        return Err(Error::usage(
            format!("{flag}: key count {count} is out of range"),
            "use 1 to 32 keys",
        ));
    }
    if threshold == 0 || threshold > count {
        return Err(Error::usage(
            format!("{flag}: threshold {threshold} must be between 1 and the key count {count}"),
            "",
        ));
    }
    Ok(())
}

fn new_keys(count: u32) -> Result<Vec<SecretKey>> {
    (0..count).map(|_| generate_key()).collect()
}

/// Runs `keygen`.
pub fn keygen(o: &KeygenOptions) -> Result<KeygenReport> {
    let product = Name::new(&o.product).map_err(|e| {
        Error::usage(
            format!("product {:?} is not a valid name: {e}", o.product),
            "use A-Z a-z 0-9 . _ -",
        )
    })?;
    check_threshold(
        o.root_keys,
        o.root_threshold,
        "--root-keys/--root-threshold",
    )?;
    let roots = new_keys(o.root_keys)?;
    let release = new_keys(1)?;
    let body = TrustBody {
        product,
        version: 1,
        expires: o.now.saturating_add(o.expires_in),
        root: Role {
            threshold: o.root_threshold,
            keys: roots.iter().map(SecretKey::public).collect(),
        },
        release: Role {
            threshold: 1,
            keys: release.iter().map(SecretKey::public).collect(),
        },
    };
    let signers: Vec<&SecretKey> = roots.iter().collect();
    let bytes = sign(DocumentKind::Trust, &body.to_payload(), &signers);
    VerifiedTrust::anchor(&bytes)
        .map_err(|e| Error::other(format!("self-check failed: {e}"), ""))?;
    let store = KeyStore::create(&o.keys)?;
    for k in &roots {
        store.write_key(KeyRole::Root, k)?;
    }
    for k in &release {
        store.write_key(KeyRole::Release, k)?;
    }
    let trust_path = store.write_trust(1, &bytes)?;
    Ok(KeygenReport {
        root: body.root.keys,
        release: body.release.keys,
        trust_path,
    })
}

/// Options of `rotate-key`.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Key directory.
    pub keys: PathBuf,
    /// Which role gets new keys.
    pub role: KeyRole,
    /// New key count.
    pub count: u32,
    /// New threshold.
    pub threshold: u32,
    /// Lifetime of the new trust document in seconds.
    pub expires_in: u64,
    /// Manifest lifetime when re-signing channels.
    pub manifest_expires_in: u64,
    /// Release directory to publish the new trust into (and re-sign channels in).
    pub repo: Option<PathBuf>,
    /// Unix seconds.
    pub now: u64,
}

/// What `rotate-key` did.
pub struct RotateReport {
    /// The new trust version.
    pub version: u64,
    /// The new keys of the rotated role.
    pub new_keys: Vec<PublicKey>,
    /// Channels re-signed: (channel, new manifest version).
    pub resigned: Vec<(String, u64)>,
}

/// Runs `rotate-key`.
pub fn rotate(o: &RotateOptions) -> Result<RotateReport> {
    check_threshold(o.count, o.threshold, "--count/--threshold")?;
    let store = KeyStore::open(&o.keys)?;
    let (_, current) = store.trust_chain()?;
    let old = current.body().clone();
    let old_roots = store.load_keys(KeyRole::Root, &old.root.keys)?;
    if old_roots.len() < old.root.threshold as usize {
        return Err(Error::other(
            format!(
                "the key directory holds {} of the root keys, {} needed to sign trust version {}",
                old_roots.len(),
                old.root.threshold,
                old.version + 1
            ),
            "bring the root key files (kept offline) into the key directory for the rotation",
        ));
    }
    let fresh = new_keys(o.count)?;
    let fresh_role = Role {
        threshold: o.threshold,
        keys: fresh.iter().map(SecretKey::public).collect(),
    };
    let mut body = TrustBody {
        version: old.version + 1,
        expires: o.now.saturating_add(o.expires_in),
        ..old.clone()
    };
    let mut signers: Vec<&SecretKey> = old_roots.iter().collect();
    match o.role {
        KeyRole::Root => {
            body.root = fresh_role;
            signers.extend(fresh.iter());
        }
        KeyRole::Release => body.release = fresh_role,
    }
    let bytes = sign(DocumentKind::Trust, &body.to_payload(), &signers);
    let next = current.successor(&bytes).map_err(|e| {
        Error::other(
            format!("self-check of the new trust document failed: {e}"),
            "",
        )
    })?;

    // Prepare the re-signed manifests before anything is written, so a failure leaves no
    // half rotation.
    let resign = match (o.role, &o.repo) {
        (KeyRole::Release, Some(repo)) => next_manifests(repo, &[], o.now, o.manifest_expires_in)?,
        _ => Vec::new(),
    };
    for k in &fresh {
        store.write_key(o.role, k)?;
    }
    store.write_trust(next.version(), &bytes)?;
    let replaced = match o.role {
        KeyRole::Root => &old.root.keys,
        KeyRole::Release => &old.release.keys,
    };
    store.retire(o.role, replaced)?;
    let mut resigned = Vec::new();
    if let Some(repo) = &o.repo {
        write_new(&repo.join(layout::trust(next.version())), &bytes)?;
        let signing: Vec<SecretKey> = fresh
            .iter()
            .take(o.threshold as usize)
            .map(|k| SecretKey::from_seed(k.seed()))
            .collect();
        for m in resign {
            publish_manifest(repo, &m, &signing)?;
            resigned.push((m.channel.to_string(), m.version));
        }
    }
    Ok(RotateReport {
        version: next.version(),
        new_keys: fresh.iter().map(SecretKey::public).collect(),
        resigned,
    })
}
