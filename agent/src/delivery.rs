//! Delivery of a complete release to the host, once per release content: assemble into
//! `releases_dir/.incoming-<label>` → (with an install command) hash every file there
//! against the signed manifest → rename to `releases_dir/<label>` → record "started"
//! (flushed to disk) → run the install command → record how it ended → raise the
//! version floor → prune old releases and the pieces no kept release needs.
//!
//! The record (`state_dir/delivered/<label>.toml`) holds the release's *content id*
//! (`ManifestBody::content_id`: label and artifacts, not the signature), so a restart,
//! or a publisher `refresh` that re-signs the same release under a new manifest version,
//! finds it delivered and neither copies nor installs it again. The record is written
//! before the install command starts, so the command runs at most once per release: a
//! crash while it runs leaves the record at "started", and the next start logs that the
//! install was interrupted instead of running it a second time. A crash before the
//! record (during assembly or the rename) delivers the release again from the start.
//!
//! The files the install command gets were hashed against the signed manifest in the
//! incoming directory, just before the rename that puts them in place: the assembly
//! copies pieces verified when they entered the store, and a piece file changed on disk
//! since stops the install. (Only the agent's own user can write there; a writer with
//! that right could still change a file between the check and the command.)
//!
//! An install command that restarts the agent (or the host) before it returns looks
//! cut off: it is not run again, and the status says so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_protocol::{Digest, VersionFloor};

use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::release::Release;
use crate::store::Store;

/// What `delivered/<label>.toml` records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The content id (hex) of the delivered release.
    content: String,
    /// How the install command ended: `none`, `succeeded`, or why it failed.
    install: String,
}

fn label(release: &Release) -> &str {
    &release.manifest.body().release
}

fn delivered_dir(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("delivered")
}

fn record_path(cfg: &Config, label: &str) -> PathBuf {
    delivered_dir(cfg).join(format!("{label}.toml"))
}

fn pieces_path(cfg: &Config, label: &str) -> PathBuf {
    delivered_dir(cfg).join(format!("{label}.pieces"))
}

/// Whether this content was delivered (and its install command run) before. The
/// release directory need not exist any more: an install command may move it.
pub fn is_delivered(cfg: &Config, release: &Release) -> bool {
    let label = label(release);
    let content = release.manifest.body().content_id().to_hex();
    let recorded = std::fs::read_to_string(record_path(cfg, label))
        .ok()
        .and_then(|text| toml::from_str::<Record>(&text).ok());
    if let Some(r) = recorded.filter(|r| r.content == content) {
        if r.install == INSTALL_STARTED {
            tracing::warn!(
                release = label,
                "the agent stopped while the install command ran for this release; it is \
                 not run again: check the host, and run it by hand if it did not finish"
            );
        }
        return true;
    }
    // Agents before delivery records raised the floor only after delivering and
    // installing: a floor naming exactly this manifest, with its directory in place,
    // means it was delivered. Record that, so the rule above decides from now on.
    let migrated = read_floor(cfg).is_some_and(|f| f.digest == release.id())
        && cfg.releases_dir.join(label).is_dir();
    if migrated {
        let record = Record {
            content,
            install: "before delivery records".into(),
        };
        if let Ok(text) = toml::to_string(&record) {
            let _ = write_atomic(&record_path(cfg, label), text.as_bytes());
        }
    }
    migrated
}

/// Delivers a complete release (see the module docs).
pub async fn deliver(cfg: &Config, release: &Arc<Release>, store: &Store) -> Result<PathBuf> {
    let label = label(release).to_owned();
    let incoming = cfg.releases_dir.join(format!(".incoming-{label}"));
    let dest = cfg.releases_dir.join(&label);
    store
        .assemble_async(release.clone(), incoming.clone())
        .await?;
    if !cfg.install_command.trim().is_empty() {
        let (dir, release) = (incoming.clone(), release.clone());
        let checked = tokio::task::spawn_blocking(move || check_staged(&dir, &release))
            .await
            .map_err(|e| Error::new(exit::IO, format!("checking the release: {e}"), ""))?;
        if let Err(e) = checked {
            // Not delivered: the next attempt assembles it again from re-verified pieces.
            let _ = std::fs::remove_dir_all(&incoming);
            return Err(e);
        }
    }
    let replace = {
        let dest = dest.clone();
        move || {
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            std::fs::rename(&incoming, &dest)
        }
    };
    tokio::task::spawn_blocking(replace)
        .await
        .map_err(|e| Error::new(exit::IO, format!("moving the release into place: {e}"), ""))?
        .map_err(|e| Error::io(dest.display(), e))?;
    write_pieces(cfg, &label, release)?;
    let content = release.manifest.body().content_id().to_hex();
    write_record(cfg, &label, &content, INSTALL_STARTED)?;
    {
        let (cfg, label) = (cfg.clone(), label.clone());
        let _ = tokio::task::spawn_blocking(move || sync_record(&cfg, &label)).await;
    }
    let install = install(cfg, &dest, &label).await;
    write_record(cfg, &label, &content, &install)?;
    finish(cfg, release).await?;
    tracing::info!(release = %label, dir = %dest.display(), "release delivered");
    Ok(dest)
}

/// What the record says while the install command runs (and after a crash in it).
const INSTALL_STARTED: &str = "started";

fn write_record(cfg: &Config, label: &str, content: &str, install: &str) -> Result<()> {
    let record = Record {
        content: content.to_owned(),
        install: install.to_owned(),
    };
    let text = toml::to_string(&record)
        .map_err(|e| Error::new(exit::IO, format!("encoding the delivery record: {e}"), ""))?;
    write_atomic(&record_path(cfg, label), text.as_bytes())
}

/// Flushes the "started" record to the disk before the install command runs, so a
/// power loss during the command cannot forget that it ran (best effort: a failure is
/// logged, the install goes on).
fn sync_record(cfg: &Config, label: &str) {
    let path = record_path(cfg, label);
    let synced = std::fs::File::open(&path).and_then(|f| f.sync_all());
    // The rename that put it in place lives in the directory.
    #[cfg(unix)]
    let synced = synced.and_then(|()| std::fs::File::open(delivered_dir(cfg))?.sync_all());
    if let Err(e) = synced {
        tracing::warn!(file = %path.display(), error = %e, "could not flush the delivery record");
    }
}

/// Whether the install command of `release` (delivered before) was cut off: the agent
/// stopped while it ran, so it was not run again. The status shows it.
pub fn install_interrupted(cfg: &Config, release: &Release) -> bool {
    std::fs::read_to_string(record_path(cfg, label(release)))
        .ok()
        .and_then(|text| toml::from_str::<Record>(&text).ok())
        .is_some_and(|r| r.install == INSTALL_STARTED)
}

/// Hashes every artifact of `release` in `dir` against the signed manifest (length and
/// SHA-256): what the install command is about to run is what the vendor signed.
pub fn check_staged(dir: &Path, release: &Release) -> Result<()> {
    use std::io::Read;
    for a in release.artifacts() {
        let path = dir.join(a.name.as_str());
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io(path.display(), e))?;
        let mut hasher = shoal_protocol::digest::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(path.display(), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        if len != a.length || hasher.finish() != a.sha256 {
            return Err(Error::new(
                exit::UNTRUSTED,
                format!(
                    "{} changed on disk after it was verified; the install command was not run",
                    path.display()
                ),
                "something on this machine writes into the agent's directories: find it; \
                 the release is assembled again from re-verified pieces at the next check",
            ));
        }
    }
    Ok(())
}

/// Raises the floor to `release` (delivered now or earlier) and prunes what it replaces
/// (on a blocking thread: old releases and their pieces may be gigabytes of files).
pub async fn finish(cfg: &Config, release: &Release) -> Result<()> {
    write_floor(cfg, &release.manifest.floor())?;
    let (cfg, label) = (cfg.clone(), label(release).to_owned());
    tokio::task::spawn_blocking(move || {
        prune(&cfg.releases_dir, cfg.keep_releases, &label);
        collect_garbage(&cfg, &label);
    })
    .await
    .map_err(|e| Error::new(exit::IO, format!("pruning old releases: {e}"), ""))
}

/// The persisted version floor of the channel (TOML).
fn floor_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join(format!("floor-{}.toml", cfg.channel))
}

/// The channel's persisted version floor, if any.
pub fn read_floor(cfg: &Config) -> Option<VersionFloor> {
    let text = std::fs::read_to_string(floor_path(cfg)).ok()?;
    toml::from_str(&text).ok()
}

fn write_floor(cfg: &Config, floor: &VersionFloor) -> Result<()> {
    let text = toml::to_string(floor)
        .map_err(|e| Error::new(exit::IO, format!("encoding the version floor: {e}"), ""))?;
    write_atomic(&floor_path(cfg), text.as_bytes())
}

/// Writes `bytes` to a temporary file and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path.display(), e))
}

/// Records which pieces a delivered release needs (one hex digest per line).
fn write_pieces(cfg: &Config, label: &str, release: &Release) -> Result<()> {
    let text: String = release
        .pieces
        .iter()
        .map(|p| format!("{}\n", p.digest))
        .collect();
    write_atomic(&pieces_path(cfg, label), text.as_bytes())
}

/// Runs the install command, if any; returns how it ended (for the record).
async fn install(cfg: &Config, dir: &Path, label: &str) -> String {
    if cfg.install_command.trim().is_empty() {
        return "none".into();
    }
    let (cmd, dir, label) = (
        cfg.install_command.clone(),
        dir.to_owned(),
        label.to_owned(),
    );
    let status = tokio::task::spawn_blocking(move || {
        // A shell command: `sh -c` where there is one, `cmd /C` on Windows.
        #[cfg(not(windows))]
        let mut shell = {
            let mut c = std::process::Command::new("sh");
            c.arg("-c");
            c
        };
        #[cfg(not(windows))]
        shell.arg(&cmd);
        // cmd.exe has its own quoting: hand it the line as written.
        #[cfg(windows)]
        let mut shell = {
            use std::os::windows::process::CommandExt;
            let mut c = std::process::Command::new("cmd");
            c.arg("/C").raw_arg(&cmd);
            c
        };
        shell
            .current_dir(&dir)
            .env("SHOAL_RELEASE_DIR", &dir)
            .env("SHOAL_RELEASE_VERSION", &label)
            .status()
    })
    .await;
    let outcome = match status {
        Ok(Ok(s)) if s.success() => "succeeded".to_owned(),
        Ok(Ok(s)) => format!("failed: {s}"),
        Ok(Err(e)) => format!("could not start: {e}"),
        Err(e) => format!("could not start: {e}"),
    };
    if outcome == "succeeded" {
        tracing::info!("install command succeeded");
    } else {
        tracing::error!(outcome = %outcome, "install command failed; it is not run again for this release");
    }
    outcome
}

/// Keeps the `keep` most recently delivered release directories (always `current`).
fn prune(releases: &Path, keep: usize, current: &str) {
    let Ok(entries) = std::fs::read_dir(releases) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, d) in dirs.into_iter().skip(keep) {
        if d.file_name().is_some_and(|n| n != current) {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// Delivery records kept at most (the newest; the current release's always).
const MAX_RECORDS: usize = 64;

/// Drops stored pieces that no kept release needs, the piece lists of pruned releases
/// and the oldest delivery records. The current release counts as kept even when its
/// directory is gone (an install command may move it): it is still seeded, and its
/// record is what stops a second install. Records outlive their directories, up to
/// [`MAX_RECORDS`].
fn collect_garbage(cfg: &Config, current: &str) {
    let mut kept: HashSet<String> = std::fs::read_dir(&cfg.releases_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    kept.insert(current.to_owned());
    let mut keep = HashSet::new();
    let mut records = Vec::new();
    for e in std::fs::read_dir(delivered_dir(cfg))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let path = e.path();
        let Some(label) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if path.extension().is_some_and(|x| x == "toml") {
            if label != current {
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                records.push((modified, path));
            }
            continue;
        }
        if !kept.contains(&label) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if path.extension().is_some_and(|x| x == "pieces") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            keep.extend(text.lines().filter_map(Digest::from_hex));
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (_, old) in records.into_iter().skip(MAX_RECORDS.saturating_sub(1)) {
        let _ = std::fs::remove_file(old);
    }
    if keep.is_empty() {
        return; // never wipe the store on missing bookkeeping
    }
    if let Ok(store) = Store::open(&cfg.state_dir) {
        let removed = store.retain(&keep);
        if removed > 0 {
            tracing::info!(removed, "dropped pieces no kept release needs");
        }
    }
}
