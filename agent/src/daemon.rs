//! `shoal-agent run`: follow a channel for good.
//!
//! Every poll (jittered ±10%; after failures, backoff from 30 s up to the interval) the
//! agent loads and verifies the channel's documents. A manifest that is not newer than
//! the persisted version floor is ignored, a rollback or equivocation is refused (and
//! logged), a newer one is downloaded with the LAN's help into
//! `releases_dir/.incoming-<version>`, renamed atomically to `releases_dir/<version>`
//! once every artifact verified, handed to the install command, and recorded as the new
//! floor. The agent then keeps seeding that release until the next one appears, and
//! keeps the newest `keep_releases` release directories; pieces no kept release needs
//! are deleted from the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::VersionFloor;
use shoal_protocol::manifest::{Acceptance, accept};
use shoal_protocol::swarm::SwarmConfig;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::discovery::DiscoveryConfig;
use crate::error::{Error, Result, exit};
use crate::fetch::{FetchOptions, FetchReport, load_manifest, run_loaded};
use crate::node::GossipEvent;
use crate::release::load_indexes;
use crate::release::{Release, from_parts};
use shoal_protocol::{ChannelRef, Digest, Name, VerifiedManifest};
use tokio::sync::mpsc;

/// The release being seeded now.
struct Seeding {
    release: Arc<Release>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<FetchReport>>,
}

/// What the daemon keeps between checks.
struct State {
    seeding: Option<Seeding>,
    /// Releases delivered by this process (id, piece count): peers still on one of them
    /// are handed the current release.
    delivered: Vec<(Digest, u32)>,
    gossip_tx: mpsc::Sender<GossipEvent>,
}

/// How long the pushed indexes of an offered manifest may take to arrive.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

fn options(cfg: &Config, out: PathBuf) -> FetchOptions {
    FetchOptions {
        origin: cfg.origin.clone(),
        trust: cfg.trust.clone(),
        channel: cfg.channel.clone(),
        out,
        state: cfg.state_dir.clone(),
        peers: cfg.peers.clone(),
        ca: (!cfg.origin_ca.as_os_str().is_empty()).then(|| cfg.origin_ca.clone()),
        danger_allow_http: cfg.danger_allow_http,
        swarm: SwarmConfig {
            origin_grace: Duration::from_secs_f64(cfg.origin_grace_secs),
            ..SwarmConfig::default()
        },
        discovery: cfg.mdns.enabled.then(|| DiscoveryConfig {
            interfaces: cfg.mdns.interfaces.clone(),
            group: cfg.mdns.group.clone(),
        }),
        older: Vec::new(),
        gossip: None,
    }
}

/// The persisted version floor of the channel (TOML).
fn floor_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join(format!("floor-{}.toml", cfg.channel))
}

fn read_floor(cfg: &Config) -> Option<VersionFloor> {
    let text = std::fs::read_to_string(floor_path(cfg)).ok()?;
    toml::from_str(&text).ok()
}

fn write_floor(cfg: &Config, floor: &VersionFloor) -> Result<()> {
    let path = floor_path(cfg);
    let text = toml::to_string(floor)
        .map_err(|e| Error::new(exit::IO, format!("encoding the version floor: {e}"), ""))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(path.display(), e))
}

/// Runs until `shutdown` turns true.
pub async fn run(cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::io(cfg.state_dir.display(), e))?;
    std::fs::create_dir_all(&cfg.releases_dir)
        .map_err(|e| Error::io(cfg.releases_dir.display(), e))?;
    let (gossip_tx, mut gossip_rx) = mpsc::channel(256);
    let mut state = State {
        seeding: None,
        delivered: Vec::new(),
        gossip_tx,
    };
    let mut failures: u32 = 0;
    loop {
        let wait = match check(&cfg, &mut state, &mut shutdown).await {
            Ok(()) => {
                failures = 0;
                jitter(Duration::from_secs(cfg.poll_interval_secs))
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e.message, note = %e.note, "channel check failed");
                let backoff = Duration::from_secs(30).saturating_mul(1 << failures.min(10));
                jitter(backoff.min(Duration::from_secs(cfg.poll_interval_secs)))
            }
        };
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                _ = shutdown.changed() => break,
                Some(ev) = gossip_rx.recv() => {
                    // A peer handed over a manifest: verify it and switch, origin or not.
                    if let GossipEvent::Manifest(bytes) = ev
                        && let Err(e) = adopt_offer(&cfg, bytes, &mut gossip_rx, &mut state, &mut shutdown).await
                    {
                        tracing::warn!(error = %e.message, "ignored a manifest offered by a peer");
                    }
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    if let Some(s) = state.seeding {
        s.stop.send_replace(true);
        let _ = s.task.await;
    }
    Ok(())
}

/// ±10% around `d`, so a fleet does not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.9 + 0.2 * r)
}

async fn check(
    cfg: &Config,
    state: &mut State,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    // The manifest decides; indexes (up to MiBs each) are fetched only for a release we
    // will actually switch to, so an unchanged channel costs the origin a few KiB a poll.
    let probe = options(cfg, cfg.releases_dir.clone());
    let (origin, trust, manifest) = load_manifest(&probe).await?;
    if !wanted(cfg, &manifest, state)? {
        return Ok(());
    }
    let release = Arc::new(load_indexes(&origin, trust, manifest).await?);
    switch_to(cfg, release, state, shutdown).await
}

/// Whether `manifest` should become the current release: newer than the persisted
/// floor, or the floor's own release when nothing is being seeded yet (a restart).
/// A rollback or equivocation is an error.
fn wanted(cfg: &Config, manifest: &VerifiedManifest, state: &State) -> Result<bool> {
    match accept(read_floor(cfg).as_ref(), manifest) {
        Ok(Acceptance::Newer) => Ok(true),
        Ok(Acceptance::Current) => Ok(state.seeding.is_none()),
        Err(e) => Err(Error::new(
            exit::UNTRUSTED,
            format!("refused the channel's manifest: {e}"),
            "the origin or a mirror serves an older or conflicting release; nothing changed",
        )),
    }
}

/// Verifies a manifest a peer offered under the current trust and floor, collects its
/// indexes from the peer's pushed `IndexData`, and switches to it.
async fn adopt_offer(
    cfg: &Config,
    bytes: Vec<u8>,
    gossip_rx: &mut mpsc::Receiver<GossipEvent>,
    state: &mut State,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let Some(current) = state.seeding.as_ref().map(|s| s.release.clone()) else {
        return Ok(()); // nothing verified yet to judge an offer by
    };
    let trust = current.trust.clone();
    let channel = Name::new(&cfg.channel)
        .map_err(|e| Error::new(exit::USAGE, format!("channel: {e}"), ""))?;
    let want = ChannelRef {
        product: trust.body().product.clone(),
        channel,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let manifest = VerifiedManifest::verify(&bytes, &trust, &want, now)
        .map_err(|e| Error::new(exit::UNTRUSTED, format!("offered manifest: {e}"), ""))?;
    if !matches!(
        accept(read_floor(cfg).as_ref(), &manifest),
        Ok(Acceptance::Newer)
    ) {
        return Ok(());
    }
    // Indexes arrive in order right after the offer; their lengths come from the
    // verified manifest, so nothing beyond them is buffered.
    let wanted: Vec<([u8; 32], usize)> = manifest
        .body()
        .artifacts
        .iter()
        .map(|a| (a.index.sha256.0, a.index.length as usize))
        .collect();
    let mut bufs: Vec<Vec<u8>> = wanted.iter().map(|_| Vec::new()).collect();
    let deadline = tokio::time::Instant::now() + OFFER_TIMEOUT;
    while bufs.iter().zip(&wanted).any(|(b, (_, len))| b.len() < *len) {
        let ev = tokio::time::timeout_at(deadline, gossip_rx.recv())
            .await
            .map_err(|_| Error::new(exit::UNAVAILABLE, "offered indexes did not arrive", ""))?;
        let (index, offset, data) = match ev {
            Some(GossipEvent::Index {
                index,
                offset,
                data,
            }) => (index, offset, data),
            Some(GossipEvent::Manifest(_)) => continue,
            None => return Err(Error::new(exit::UNAVAILABLE, "gossip channel closed", "")),
        };
        for ((sha, len), buf) in wanted.iter().zip(bufs.iter_mut()) {
            if *sha == index && offset as usize == buf.len() && buf.len() + data.len() <= *len {
                buf.extend_from_slice(&data);
            }
        }
    }
    let release = Arc::new(from_parts(trust, manifest, bufs)?);
    tracing::info!(release = %release.manifest.body().release, "learned a newer release from a peer");
    switch_to(cfg, release, state, shutdown).await
}

/// Makes `release` the current one if it is newer than the floor: fetch it with the
/// LAN's help, deliver it, install it, and seed it.
async fn switch_to(
    cfg: &Config,
    release: Arc<Release>,
    state: &mut State,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    if !wanted(cfg, &release.manifest, state)? {
        return Ok(());
    }
    let label = release.manifest.body().release.clone();
    let incoming = cfg.releases_dir.join(format!(".incoming-{label}"));
    if let Some(s) = state.seeding.take() {
        s.stop.send_replace(true);
        let _ = s.task.await;
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            Error::new(
                exit::IO,
                format!("cannot listen on {}: {e}", cfg.listen),
                "change `listen`",
            )
        })?;
    let (stop, stopped) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel();
    let mut o = options(cfg, incoming.clone());
    o.older = state
        .delivered
        .iter()
        .filter(|(id, _)| *id != release.id())
        .copied()
        .collect();
    o.gossip = Some(state.gossip_tx.clone());
    let task = tokio::spawn(run_loaded(
        o,
        release.clone(),
        listener,
        Some(done_tx),
        stopped,
        |_| {},
    ));
    let finished = tokio::select! {
        r = done_rx => r.ok(),
        _ = shutdown.changed() => None,
    };
    state.seeding = Some(Seeding {
        release: release.clone(),
        stop,
        task,
    });
    if finished.is_none() {
        return Ok(()); // shutting down; verified pieces stay for next time
    }
    let dest = cfg.releases_dir.join(&label);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(dest.display(), e))?;
    }
    std::fs::rename(&incoming, &dest).map_err(|e| Error::io(dest.display(), e))?;
    install(cfg, &dest, &label).await;
    write_floor(cfg, &release.manifest.floor())?;
    record_pieces(cfg, &label, &release)?;
    state.delivered.retain(|(id, _)| *id != release.id());
    state
        .delivered
        .push((release.id(), release.pieces.len() as u32));
    let excess = state
        .delivered
        .len()
        .saturating_sub(cfg.keep_releases.max(2));
    state.delivered.drain(..excess);
    prune(&cfg.releases_dir, cfg.keep_releases, &label);
    collect_garbage(cfg);
    Ok(())
}

/// Where the piece list of a delivered release is kept.
fn pieces_list(cfg: &Config, label: &str) -> PathBuf {
    cfg.state_dir
        .join("delivered")
        .join(format!("{label}.pieces"))
}

/// Records which pieces a delivered release needs (one hex digest per line).
fn record_pieces(cfg: &Config, label: &str, release: &Release) -> Result<()> {
    let path = pieces_list(cfg, label);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    }
    let text: String = release
        .pieces
        .iter()
        .map(|p| format!("{}\n", p.digest))
        .collect();
    std::fs::write(&path, text).map_err(|e| Error::io(path.display(), e))
}

/// Drops stored pieces that no kept release needs, and the lists of pruned releases.
fn collect_garbage(cfg: &Config) {
    let kept: std::collections::HashSet<String> = std::fs::read_dir(&cfg.releases_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let mut keep = std::collections::HashSet::new();
    let lists = cfg.state_dir.join("delivered");
    for e in std::fs::read_dir(&lists)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(label) = name.strip_suffix(".pieces") else {
            continue;
        };
        if !kept.contains(label) {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        keep.extend(text.lines().filter_map(Digest::from_hex));
    }
    if keep.is_empty() {
        return; // never wipe the store on missing bookkeeping
    }
    if let Ok(store) = crate::store::Store::open(&cfg.state_dir) {
        let removed = store.retain(&keep);
        if removed > 0 {
            tracing::info!(removed, "dropped pieces no kept release needs");
        }
    }
}

/// Runs the install command, if any, for a delivered release.
async fn install(cfg: &Config, dir: &Path, label: &str) {
    if cfg.install_command.trim().is_empty() {
        return;
    }
    let (cmd, dir, label) = (
        cfg.install_command.clone(),
        dir.to_owned(),
        label.to_owned(),
    );
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&dir)
            .env("SHOAL_RELEASE_DIR", &dir)
            .env("SHOAL_RELEASE_VERSION", &label)
            .status()
    })
    .await;
    match status {
        Ok(Ok(s)) if s.success() => tracing::info!("install command succeeded"),
        Ok(Ok(s)) => tracing::error!(%s, "install command failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "install command could not start"),
        Err(e) => tracing::error!(error = %e, "install command panicked"),
    }
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
