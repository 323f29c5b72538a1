//! `shoal-publisher release`: chunk, hash, lay out and sign one release of a channel.
//!
//! Order of writes (so a static host never serves a manifest whose files are missing):
//! artifacts, piece indexes and trust documents first, then the manifest's history copy
//! `channels/<channel>/<V>.json`, and last the atomic replacement of
//! `channels/<channel>.json`. Re-running a release with the same version string and the
//! same files changes nothing; the same version string with other files is refused.

use std::fs;
use std::path::{Path, PathBuf};

use shoal_protocol::envelope::{DocumentKind, sign};
use shoal_protocol::manifest::{
    Artifact, IndexRef, ManifestBody, Platform, read_body_unverified, validate_release_label,
};
use shoal_protocol::{Name, SecretKey, VerifiedTrust};

use crate::error::{Error, Result};
use crate::fsutil::{temp_path, write_atomic, write_new};
use crate::hashing::{hash_file, sha256_file};
use crate::keystore::{KeyRole, KeyStore};
use crate::progress::{human_bytes, track};
use shoal_protocol::layout;

/// Everything `release` needs.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// Key directory.
    pub keys: PathBuf,
    /// Release (origin) directory.
    pub repo: PathBuf,
    /// Channel name.
    pub channel: String,
    /// Human version string.
    pub version: String,
    /// Artifact files.
    pub files: Vec<PathBuf>,
    /// Operating system the artifacts are for.
    pub os: String,
    /// CPU architecture the artifacts are for.
    pub arch: String,
    /// Manifest lifetime in seconds.
    pub expires_in: u64,
    /// No progress output.
    pub quiet: bool,
    /// Unix seconds to stamp as `created`.
    pub now: u64,
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// A new manifest version was signed and published.
    Published {
        /// The manifest version.
        version: u64,
    },
    /// The same release was already published as this manifest version.
    AlreadyPublished {
        /// The manifest version.
        version: u64,
    },
}

fn name_arg(what: &str, s: &str) -> Result<Name> {
    Name::new(s).map_err(|e| {
        Error::usage(
            format!("{what} {s:?} is not a valid name: {e}"),
            "names are 1-128 characters of A-Z a-z 0-9 . _ - and do not start with a dot",
        )
    })
}

/// Other spellings of operating systems, and the name agents use (Rust's): an agent
/// refuses a release for a platform that is not its own, so `amd64` would reach no one.
const OS_ALIASES: &[(&str, &str)] = &[
    ("win", "windows"),
    ("win32", "windows"),
    ("win64", "windows"),
    ("darwin", "macos"),
    ("osx", "macos"),
    ("mac", "macos"),
    ("Linux", "linux"),
    ("Windows", "windows"),
];

/// Other spellings of CPU architectures, and the name agents use (Rust's).
const ARCH_ALIASES: &[(&str, &str)] = &[
    ("amd64", "x86_64"),
    ("x64", "x86_64"),
    ("x86-64", "x86_64"),
    ("arm64", "aarch64"),
    ("i386", "x86"),
    ("i686", "x86"),
    ("armhf", "arm"),
];

/// Refuses a known other spelling of a platform name, naming the one agents use.
fn platform_name(flag: &str, s: &str, aliases: &[(&str, &str)]) -> Result<()> {
    match aliases.iter().find(|(alias, _)| *alias == s) {
        Some((_, canonical)) => Err(Error::usage(
            format!("{flag} {s:?}: agents name this platform {canonical:?}"),
            format!(
                "use {flag} {canonical} (agents use Rust's names: linux, windows, macos; \
                 x86_64, aarch64, x86, arm; or any)"
            ),
        )),
        None => Ok(()),
    }
}

/// Runs `release`.
pub fn run(o: &ReleaseOptions) -> Result<ReleaseOutcome> {
    let channel = name_arg("channel", &o.channel)?;
    validate_release_label(&o.version).map_err(|e| Error::usage(e, ""))?;
    platform_name("--os", &o.os, OS_ALIASES)?;
    platform_name("--arch", &o.arch, ARCH_ALIASES)?;
    let platform = Platform {
        os: name_arg("--os", &o.os)?,
        arch: name_arg("--arch", &o.arch)?,
    };
    if o.files.is_empty() {
        return Err(Error::usage(
            "no artifact files given",
            "list the files to release",
        ));
    }
    let mut names = Vec::new();
    for f in &o.files {
        let base = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = name_arg("artifact file name", base)?;
        if names.contains(&name) {
            return Err(Error::usage(
                format!("two artifacts are named {name}"),
                "artifact names must be unique within a release",
            ));
        }
        names.push(name);
    }

    let (trust_docs, trust, keys) = signing_keys(&o.keys, o.now)?;

    // Lay out artifacts: copy each into the release directory, then hash the copy, so
    // what is published is exactly what was hashed.
    let incoming = o.repo.join("artifacts").join(".incoming");
    fs::create_dir_all(&incoming).map_err(Error::io("creating", &incoming))?;
    let mut staged: Vec<(PathBuf, Artifact, Vec<u8>)> = Vec::new();
    let discard = |staged: &[(PathBuf, Artifact, Vec<u8>)]| {
        for (tmp, ..) in staged {
            let _ = fs::remove_file(tmp);
        }
        let _ = fs::remove_dir(&incoming);
    };
    for (src, name) in o.files.iter().zip(&names) {
        let tmp = temp_path(&incoming.join(name.as_str()));
        match stage_artifact(src, &tmp, name, &platform, o.quiet) {
            Ok((artifact, index)) => staged.push((tmp, artifact, index)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                discard(&staged);
                return Err(e);
            }
        }
    }
    let artifacts: Vec<Artifact> = staged.iter().map(|(_, a, _)| a.clone()).collect();

    // Same release version already published? Decide before anything is placed.
    let history = match read_history(&o.repo, &channel) {
        Ok(h) => h,
        Err(e) => {
            discard(&staged);
            return Err(e);
        }
    };
    if let Some((v, body)) = history.iter().find(|(_, b)| b.release == o.version) {
        discard(&staged);
        if body.artifacts == artifacts {
            return Ok(ReleaseOutcome::AlreadyPublished { version: *v });
        }
        return Err(Error::refused(
            format!(
                "release version {} of channel {channel} was already published (manifest \
                 version {v}) with other files",
                o.version
            ),
            "a published version is immutable: give this build a new version string",
        ));
    }
    let mut indexes = Vec::new();
    for (i, (tmp, artifact, index)) in staged.iter().enumerate() {
        let dest = o.repo.join(layout::artifact(artifact));
        if let Err(e) = place_artifact(tmp, &dest, artifact) {
            discard(&staged[i..]);
            return Err(e);
        }
        indexes.push(index);
    }
    let _ = fs::remove_dir(&incoming);

    for (a, bytes) in artifacts.iter().zip(&indexes) {
        write_new(&o.repo.join(layout::index(&a.index.sha256)), bytes)?;
    }
    for (i, bytes) in trust_docs.iter().enumerate() {
        write_new(&o.repo.join(layout::trust(i as u64 + 1)), bytes)?;
    }
    let version = history.iter().map(|(v, _)| *v).max().unwrap_or(0) + 1;
    let body = ManifestBody {
        product: trust.body().product.clone(),
        channel: channel.clone(),
        version,
        release: o.version.clone(),
        created: o.now,
        expires: o.now.saturating_add(o.expires_in),
        artifacts,
    };
    publish_manifest(&o.repo, &body, &keys)?;
    Ok(ReleaseOutcome::Published { version })
}

/// Opens the key directory and returns the trust chain's documents, the current trust and
/// a threshold of its release keys, refusing an expired trust or missing keys.
pub fn signing_keys(
    keys_dir: &Path,
    now: u64,
) -> Result<(Vec<Vec<u8>>, VerifiedTrust, Vec<SecretKey>)> {
    let store = KeyStore::open(keys_dir)?;
    let (trust_docs, trust) = store.trust_chain()?;
    trust.check_fresh(now).map_err(|e| {
        Error::refused(
            e.to_string(),
            "publish a new trust document with `shoal-publisher rotate-key`",
        )
    })?;
    let role = &trust.body().release;
    let mut keys = store.load_keys(KeyRole::Release, &role.keys)?;
    if keys.len() < role.threshold as usize {
        return Err(Error::other(
            format!(
                "the key directory holds {} of the release keys, {} needed to sign",
                keys.len(),
                role.threshold
            ),
            "check that --keys names the directory keygen made, or restore the release key \
             files into it",
        ));
    }
    keys.truncate(role.threshold as usize);
    Ok((trust_docs, trust, keys))
}

/// The next manifest of each channel in `repo` (every channel, or those in `only`): the
/// newest published body at the next manifest version, stamped `now`, expiring after
/// `expires_in` seconds. Used to re-sign without changing content.
pub fn next_manifests(
    repo: &Path,
    only: &[Name],
    now: u64,
    expires_in: u64,
) -> Result<Vec<ManifestBody>> {
    let channels: Vec<Name> = if only.is_empty() {
        let src = crate::source::Source::Dir(repo.to_owned());
        src.list_channels()
            .unwrap_or_default()
            .iter()
            .filter_map(|c| Name::new(c).ok())
            .collect()
    } else {
        only.to_vec()
    };
    let mut out = Vec::new();
    for channel in channels {
        let history = read_history(repo, &channel)?;
        let Some((v, mut body)) = history.into_iter().max_by_key(|(v, _)| *v) else {
            return Err(Error::usage(
                format!(
                    "channel {channel} has no published release in {}",
                    repo.display()
                ),
                "publish one with `shoal-publisher release`",
            ));
        };
        body.version = v + 1;
        body.created = now;
        body.expires = now.saturating_add(expires_in);
        out.push(body);
    }
    Ok(out)
}

/// Signs `body` with `keys` and publishes it: history copy first, then the channel's
/// current manifest, replaced atomically.
pub fn publish_manifest(repo: &Path, body: &ManifestBody, keys: &[SecretKey]) -> Result<()> {
    let signers: Vec<&SecretKey> = keys.iter().collect();
    let signed = sign(DocumentKind::Manifest, &body.to_payload(), &signers);
    write_new(
        &repo.join(layout::channel_version(&body.channel, body.version)),
        &signed,
    )?;
    write_atomic(&repo.join(layout::channel_current(&body.channel)), &signed)
}

/// Copies `src` to `tmp` and hashes the copy.
fn stage_artifact(
    src: &Path,
    tmp: &Path,
    name: &Name,
    platform: &Platform,
    quiet: bool,
) -> Result<(Artifact, Vec<u8>)> {
    let meta = fs::metadata(src).map_err(Error::io("reading", src))?;
    if !meta.is_file() {
        return Err(Error::usage(
            format!("{} is not a regular file", src.display()),
            "release takes files; archive a directory first",
        ));
    }
    fs::copy(src, tmp).map_err(Error::io("copying artifact to", tmp))?;
    let (hashed, took) = track(name.as_str(), meta.len(), quiet, |p| hash_file(tmp, p));
    let hashed = hashed?;
    if !quiet {
        let rate = hashed.length as f64 / took.as_secs_f64().max(1e-9) / (1 << 20) as f64;
        eprintln!(
            "hashed {name}: {}, {} pieces, {rate:.0} MiB/s",
            human_bytes(hashed.length),
            hashed.index.pieces().len()
        );
    }
    let index_bytes = hashed.index.encode();
    let artifact = Artifact {
        name: name.clone(),
        platform: platform.clone(),
        length: hashed.length,
        sha256: hashed.sha256,
        index: IndexRef {
            sha256: shoal_protocol::Digest::of(&index_bytes),
            length: index_bytes.len() as u64,
        },
    };
    Ok((artifact, index_bytes))
}

/// Moves a hashed copy to its content-addressed place. An existing file there is kept
/// only if its bytes really hash to the address (an unchanged file published before);
/// a damaged one is replaced.
fn place_artifact(tmp: &Path, dest: &Path, artifact: &Artifact) -> Result<()> {
    if fs::metadata(dest).is_ok_and(|m| m.len() == artifact.length)
        && sha256_file(dest)? == artifact.sha256
    {
        fs::remove_file(tmp).map_err(Error::io("removing", tmp))?;
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    }
    fs::rename(tmp, dest).map_err(Error::io("moving artifact to", dest))
}

/// Every manifest version of `channel` published in `repo`, with its body.
pub fn read_history(repo: &Path, channel: &Name) -> Result<Vec<(u64, ManifestBody)>> {
    let dir = repo.join("channels").join(channel.as_str());
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(Error::io("reading", &dir))?.path();
        let Some(v) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = fs::read(&path).map_err(Error::io("reading", &path))?;
        let body = read_body_unverified(&bytes).map_err(|e| {
            Error::other(
                format!("{}: {e}", path.display()),
                "the release directory's history is damaged; run `shoal-publisher verify`",
            )
        })?;
        out.push((v, body));
    }
    Ok(out)
}
