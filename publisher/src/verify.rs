//! `shoal-publisher verify`: checks a release directory or a served origin end to end,
//! exactly as an agent would, and reports every problem with the file it is in.
//!
//! Checks: the trust chain from the anchor to the newest version (and that it has not
//! expired), each channel's current manifest (signatures, times, names), each piece
//! index (length, SHA-256, format, total) and each artifact (length, every piece's hash,
//! whole-file hash). In a directory also every file the layout defines beyond those:
//! the trust chain from the directory's own `trust/1.json` when another anchor is
//! given, and each channel's history copies (`channels/<channel>/<V>.json`: signed by
//! the release keys of some trust version, as of its own creation time, and holding
//! version `V`). Verification goes on after a problem so one run lists them all.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use shoal_protocol::digest::Hasher;
use shoal_protocol::index::{IndexCheckError, PieceIndex, verify_index};
use shoal_protocol::limits::{MAX_MANIFEST_LEN, MAX_TRUST_LEN};
use shoal_protocol::manifest::Artifact;
use shoal_protocol::{ChannelRef, Digest, Name, VerifiedManifest, VerifiedTrust};

use crate::source::Source;
use shoal_protocol::layout;

/// One thing wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the release root.
    pub file: String,
    /// What is wrong.
    pub what: String,
    /// What to do about it.
    pub note: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  {}: {}\n    note: {}", self.file, self.what, self.note)
    }
}

/// What `verify` checks against.
pub struct VerifyOptions {
    /// Where the release is.
    pub source: Source,
    /// The trust document to start from (what agents ship); default: `trust/1.json`.
    pub anchor: Option<PathBuf>,
    /// Channels to check; default: all (directory) — required for a URL.
    pub channels: Vec<String>,
    /// Unix seconds.
    pub now: u64,
}

/// A successful verification's summary.
#[derive(Debug, Default)]
pub struct Report {
    /// Newest trust version.
    pub trust_version: u64,
    /// Per channel: name, manifest version, release label, artifacts, bytes.
    pub channels: Vec<(String, u64, String, usize, u64)>,
    /// Whether the anchor was taken from the release itself.
    pub anchor_from_release: bool,
}

const REPUBLISH: &str = "the file was altered or damaged after release: restore it from the vendor's release \
     directory, or publish again with `shoal-publisher release`";

/// Runs every check; `Err` holds every problem found.
pub fn run(o: &VerifyOptions) -> Result<Report, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut report = Report::default();
    let Some(trust) = trust_chain(o, &mut problems, &mut report) else {
        return Err(problems);
    };
    let mut trusts = trust;
    let Some(trust) = trusts.last().cloned() else {
        return Err(problems);
    };
    report.trust_version = trust.version();
    if let (Some(_), Source::Dir(d)) = (&o.anchor, &o.source) {
        // The directory's own chain, from its trust/1.json: what it serves must be whole
        // too, whatever anchor this run started from; and history copies signed under
        // versions older than the anchor verify against it.
        let own = VerifyOptions {
            source: Source::Dir(d.clone()),
            anchor: None,
            channels: Vec::new(),
            now: o.now,
        };
        let mut ignored = Report::default();
        if let Some(own) = trust_chain(&own, &mut problems, &mut ignored) {
            let first = trusts.first().map(|t| t.version()).unwrap_or(0);
            let older: Vec<VerifiedTrust> =
                own.into_iter().filter(|t| t.version() < first).collect();
            trusts.splice(0..0, older);
        }
    }
    if let Err(e) = trust.check_fresh(o.now) {
        problems.push(Problem {
            file: layout::trust(trust.version()),
            what: e.to_string(),
            note: "publish a new trust document with `shoal-publisher rotate-key`".into(),
        });
    }
    let channels = if o.channels.is_empty() {
        o.source.list_channels().unwrap_or_default()
    } else {
        o.channels.clone()
    };
    if channels.is_empty() {
        problems.push(Problem {
            file: "channels/".into(),
            what: "no channel to verify".into(),
            note: "publish one with `shoal-publisher release`, or name it with --channel".into(),
        });
    }
    for ch in channels {
        check_channel(o, &trust, &ch, &mut problems, &mut report);
        check_history(o, &trusts, &ch, &mut problems);
    }
    // Two chains may report one broken trust file: once is enough.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert((p.file.clone(), p.what.clone())));
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems)
    }
}

/// Every trust version from the anchor to the newest, oldest first (`None`, with the
/// problem, when the anchor or a successor fails: checks against an older version would
/// only blame files that are fine).
fn trust_chain(
    o: &VerifyOptions,
    problems: &mut Vec<Problem>,
    report: &mut Report,
) -> Option<Vec<VerifiedTrust>> {
    let (first_file, bytes) = match &o.anchor {
        Some(path) => (
            path.display().to_string(),
            std::fs::read(path).map_err(|e| e.to_string()),
        ),
        None => {
            report.anchor_from_release = true;
            let rel = layout::trust(1);
            let r = o.source.read_small(&rel, MAX_TRUST_LEN);
            (rel, r.and_then(|b| b.ok_or_else(|| "missing".to_owned())))
        }
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            problems.push(Problem {
                file: first_file,
                what: format!("cannot read the trust anchor: {e}"),
                note: "publish with `shoal-publisher release`, which copies trust/ from the keys"
                    .into(),
            });
            return None;
        }
    };
    let mut chain = Vec::new();
    let mut trust = match VerifiedTrust::anchor(&bytes) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem {
                file: first_file,
                what: e.to_string(),
                note: REPUBLISH.into(),
            });
            return None;
        }
    };
    loop {
        let rel = layout::trust(trust.version() + 1);
        match o.source.read_small(&rel, MAX_TRUST_LEN) {
            Ok(None) => {
                chain.push(trust);
                return Some(chain);
            }
            Ok(Some(b)) => match trust.successor(&b) {
                Ok(t) => chain.push(std::mem::replace(&mut trust, t)),
                Err(e) => {
                    problems.push(Problem {
                        file: rel,
                        what: e.to_string(),
                        note: REPUBLISH.into(),
                    });
                    return None;
                }
            },
            Err(e) => {
                problems.push(Problem {
                    file: rel,
                    what: e,
                    note: "check that the origin is reachable".into(),
                });
                return None;
            }
        }
    }
}

fn check_channel(
    o: &VerifyOptions,
    trust: &VerifiedTrust,
    ch: &str,
    problems: &mut Vec<Problem>,
    report: &mut Report,
) {
    let Ok(channel) = Name::new(ch) else {
        problems.push(Problem {
            file: format!("channels/{ch}.json"),
            what: "not a valid channel name".into(),
            note: "channel names are A-Z a-z 0-9 . _ -".into(),
        });
        return;
    };
    let rel = layout::channel_current(&channel);
    let bytes = match o.source.read_small(&rel, MAX_MANIFEST_LEN) {
        Ok(Some(b)) => b,
        Ok(None) => {
            problems.push(Problem {
                file: rel,
                what: "missing".into(),
                note: "publish the channel with `shoal-publisher release --channel`".into(),
            });
            return;
        }
        Err(e) => {
            problems.push(Problem {
                file: rel,
                what: e,
                note: REPUBLISH.into(),
            });
            return;
        }
    };
    let want = ChannelRef {
        product: trust.body().product.clone(),
        channel,
    };
    let m = match VerifiedManifest::verify(&bytes, trust, &want, o.now) {
        Ok(m) => m,
        Err(e) => {
            problems.push(Problem {
                file: rel,
                what: e.to_string(),
                note: REPUBLISH.into(),
            });
            return;
        }
    };
    let mut total = 0;
    for a in &m.body().artifacts {
        total += a.length;
        if let Some(index) = check_index(o, a, problems) {
            check_artifact(o, a, &index, problems);
        }
    }
    let b = m.body();
    report.channels.push((
        ch.to_owned(),
        b.version,
        b.release.clone(),
        b.artifacts.len(),
        total,
    ));
}

/// A directory's history copies of channel `ch`: each must be a manifest of the channel
/// signed by the release keys of one of `trusts`, valid at its own creation time, and
/// hold the version its name says. (A served origin cannot list them: skipped.)
fn check_history(
    o: &VerifyOptions,
    trusts: &[VerifiedTrust],
    ch: &str,
    problems: &mut Vec<Problem>,
) {
    let (Source::Dir(root), Ok(channel)) = (&o.source, Name::new(ch)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(root.join("channels").join(ch)) else {
        return;
    };
    let mut files: Vec<u64> = Vec::new();
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue; // temporary files of an interrupted release
        };
        match stem.parse::<u64>() {
            Ok(v) if stem == v.to_string() => files.push(v),
            _ => problems.push(Problem {
                file: format!("channels/{ch}/{name}"),
                what: "not a history copy's name (<version>.json)".into(),
                note: "remove it: the release directory holds only files the layout defines".into(),
            }),
        }
    }
    files.sort_unstable();
    for v in files {
        let rel = layout::channel_version(&channel, v);
        let mut fail = |what: String| {
            problems.push(Problem {
                file: rel.clone(),
                what,
                note: REPUBLISH.into(),
            });
        };
        let bytes = match o.source.read_small(&rel, MAX_MANIFEST_LEN) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                fail(e);
                continue;
            }
        };
        let body = match shoal_protocol::manifest::read_body_unverified(&bytes) {
            Ok(b) => b,
            Err(e) => {
                fail(e.to_string());
                continue;
            }
        };
        if body.version != v {
            fail(format!("holds version {}, its name says {v}", body.version));
            continue;
        }
        // As of its creation: an old copy may have expired since, legitimately. The
        // newest trust version's verdict is the one reported if none accepts it.
        let mut verdicts = trusts.iter().rev().map(|t| {
            let want = ChannelRef {
                product: t.body().product.clone(),
                channel: channel.clone(),
            };
            VerifiedManifest::verify(&bytes, t, &want, body.created)
        });
        let newest = verdicts.next();
        if !(newest.as_ref().is_some_and(Result::is_ok) || verdicts.any(|v| v.is_ok())) {
            let why = match newest {
                Some(Err(e)) => e.to_string(),
                _ => "no trust version to check it against".into(),
            };
            fail(format!("{why} (under every trust version)"));
        }
    }
}

fn check_index(o: &VerifyOptions, a: &Artifact, problems: &mut Vec<Problem>) -> Option<PieceIndex> {
    let rel = layout::index(&a.index.sha256);
    let mut fail = |what: String| {
        problems.push(Problem {
            file: rel.clone(),
            what,
            note: REPUBLISH.into(),
        });
        None
    };
    let bytes = match o.source.read_small(&rel, a.index.length as usize) {
        Ok(Some(b)) => b,
        Ok(None) => return fail(format!("missing (piece index of {})", a.name)),
        Err(e) => return fail(e),
    };
    match verify_index(a, &bytes) {
        Ok(index) => Some(index),
        Err(IndexCheckError::Total {
            describes,
            artifact,
        }) => fail(format!(
            "describes {describes} bytes, the manifest says {} is {artifact}",
            a.name
        )),
        Err(e) => fail(e.to_string()),
    }
}

fn check_artifact(
    o: &VerifyOptions,
    a: &Artifact,
    index: &PieceIndex,
    problems: &mut Vec<Problem>,
) {
    let rel = layout::artifact(a);
    let mut fail = |what: String| {
        problems.push(Problem {
            file: rel.clone(),
            what,
            note: REPUBLISH.into(),
        });
    };
    let mut r = match o.source.open(&rel) {
        Ok(Some(r)) => r,
        Ok(None) => return fail("missing".into()),
        Err(e) => return fail(e),
    };
    let mut whole = Hasher::new();
    let mut buf = Vec::new();
    for (i, p) in index.pieces().iter().enumerate() {
        buf.resize(p.length as usize, 0);
        if let Err(e) = r.read_exact(&mut buf) {
            return fail(format!(
                "ends inside piece {i} (offset {}), the manifest says {} bytes: {e}",
                p.offset, a.length
            ));
        }
        if Digest::of(&buf) != p.digest {
            return fail(format!(
                "piece {i} (bytes {}..{}) does not match its hash in {}",
                p.offset,
                p.offset + u64::from(p.length),
                layout::index(&a.index.sha256)
            ));
        }
        whole.update(&buf);
    }
    let mut extra = [0u8; 1];
    if matches!(r.read(&mut extra), Ok(n) if n > 0) {
        return fail(format!(
            "is longer than the {} bytes the manifest says",
            a.length
        ));
    }
    if whole.finish() != a.sha256 {
        fail("whole-file SHA-256 does not match the manifest".into());
    }
}
