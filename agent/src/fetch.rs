//! One-shot download of a channel's current release: verify the documents, join the
//! swarm (static peers and mDNS discovery, started while the documents load), fetch what
//! no peer has from the origin, assemble the artifacts, keep seeding until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_protocol::Name;
use shoal_protocol::swarm::{Swarm, SwarmConfig};
use shoal_protocol::wire::{PeerId, Role};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::discovery::{Discovery, DiscoveryConfig};
use crate::error::{Error, Result, exit};
use crate::node::{self, Progress};
use crate::origin::OriginClient;
use crate::peer::{self, GossipOffer, HandshakeInfo};
use crate::store::Store;

/// Most peer connections at once (inbound and outbound).
pub const MAX_CONNECTIONS: usize = 64;

/// What `fetch` needs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Origin base URL.
    pub origin: String,
    /// The trust document shipped with the agent.
    pub trust: PathBuf,
    /// Channel.
    pub channel: String,
    /// Where finished artifacts go.
    pub out: PathBuf,
    /// Piece store directory.
    pub state: PathBuf,
    /// Peers to dial.
    pub peers: Vec<SocketAddr>,
    /// Extra CA for the origin.
    pub ca: Option<PathBuf>,
    /// Allow a plain-HTTP origin.
    pub danger_allow_http: bool,
    /// Swarm tunables.
    pub swarm: SwarmConfig,
    /// mDNS discovery (None: static peers only).
    pub discovery: Option<DiscoveryConfig>,
    /// Older releases of the channel this agent delivered (id, piece count): peers still
    /// on one of them are handed the current release.
    pub older: Vec<(shoal_protocol::Digest, u32)>,
    /// Where manifests and indexes offered by peers go (the daemon verifies them).
    pub gossip: Option<mpsc::Sender<crate::node::GossipEvent>>,
}

/// The outcome of a fetch.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// Release version string.
    pub release: String,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Final counters.
    pub progress: Progress,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(exit::IO, format!("no randomness from the OS: {e}"), ""))?;
    Ok(b)
}

/// Downloads the release, writes the artifacts, then keeps seeding until `shutdown`
/// turns true. `done` receives the report as soon as the artifacts are in place.
pub async fn run(
    o: FetchOptions,
    listener: TcpListener,
    done: Option<tokio::sync::oneshot::Sender<FetchReport>>,
    shutdown: watch::Receiver<bool>,
    on_progress: impl Fn(&Progress) + Send + 'static,
) -> Result<FetchReport> {
    // Announce and browse while the documents load: mDNS takes most of a second (the
    // library probes its name before announcing it), and peers met before the release
    // is ready split the origin work from the first fetch.
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("listener", e))?
        .port();
    let early = o
        .discovery
        .as_ref()
        .map(|cfg| start_discovery(cfg, port))
        .transpose()?;
    let release = Arc::new(load(&o).await?);
    run_with(o, release, listener, done, shutdown, on_progress, early).await
}

/// A running mDNS announcement and the addresses it finds.
type Discovered = (Discovery, mpsc::UnboundedReceiver<SocketAddr>);

fn start_discovery(cfg: &DiscoveryConfig, port: u16) -> Result<Discovered> {
    let (found_tx, found_rx) = mpsc::unbounded_channel();
    tracing::debug!(port, "mDNS discovery started");
    Ok((
        Discovery::start(cfg, port, random_bytes()?, found_tx)?,
        found_rx,
    ))
}

/// Fetches and verifies the documents of `o`'s channel (trust chain, manifest, indexes).
pub async fn load(o: &FetchOptions) -> Result<crate::release::Release> {
    let (origin, trust, manifest) = load_manifest(o).await?;
    crate::release::load_indexes(&origin, trust, manifest).await
}

/// Fetches and verifies only the trust chain and the channel's manifest (see
/// [`crate::release::load_manifest`]); the client is returned for fetching indexes.
pub async fn load_manifest(
    o: &FetchOptions,
) -> Result<(
    OriginClient,
    shoal_protocol::VerifiedTrust,
    shoal_protocol::VerifiedManifest,
)> {
    let channel = Name::new(&o.channel)
        .map_err(|e| Error::new(exit::USAGE, format!("channel {:?}: {e}", o.channel), ""))?;
    let anchor = std::fs::read(&o.trust).map_err(|e| Error::io(o.trust.display(), e))?;
    let origin = OriginClient::new(&o.origin, o.ca.as_deref(), o.danger_allow_http)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (trust, manifest) =
        crate::release::load_manifest(&origin, &anchor, &channel, now_unix).await?;
    Ok((origin, trust, manifest))
}

/// Like [`run`], for a release already loaded and verified.
pub async fn run_loaded(
    o: FetchOptions,
    release: Arc<crate::release::Release>,
    listener: TcpListener,
    done: Option<tokio::sync::oneshot::Sender<FetchReport>>,
    shutdown: watch::Receiver<bool>,
    on_progress: impl Fn(&Progress) + Send + 'static,
) -> Result<FetchReport> {
    run_with(o, release, listener, done, shutdown, on_progress, None).await
}

/// [`run_loaded`], with discovery already started (or started here when `early` is
/// `None` and `o.discovery` asks for it).
async fn run_with(
    o: FetchOptions,
    release: Arc<crate::release::Release>,
    listener: TcpListener,
    done: Option<tokio::sync::oneshot::Sender<FetchReport>>,
    mut shutdown: watch::Receiver<bool>,
    on_progress: impl Fn(&Progress) + Send + 'static,
    early: Option<Discovered>,
) -> Result<FetchReport> {
    let origin = OriginClient::new(&o.origin, o.ca.as_deref(), o.danger_allow_http)?;
    crate::space::check(&o.state, &release)?;
    let store = Store::open(&o.state)?;
    let held = store.scan(&release.pieces);
    let me = PeerId(random_bytes()?);
    let epoch = Instant::now();
    let swarm = Swarm::new(
        o.swarm.clone(),
        me,
        release.pieces.clone(),
        &held,
        u64::from_le_bytes(random_bytes()?),
        Duration::ZERO,
    );
    tracing::info!(
        release = %release.manifest.body().release,
        pieces = release.pieces.len(),
        already_held = held.iter().filter(|h| **h).count(),
        "release started"
    );
    // Bounded: a peer that floods messages is slowed by TCP backpressure, not buffered.
    let (in_tx, in_rx) = mpsc::channel(crate::node::INPUT_QUEUE);
    let (prog_tx, mut prog_rx) = watch::channel(Progress::default());
    let gossip = (!o.older.is_empty()).then(|| {
        Arc::new(GossipOffer {
            older: o.older.clone(),
            manifest: release.manifest.bytes().to_vec(),
            indexes: release
                .artifacts()
                .iter()
                .map(|a| a.index.sha256.0)
                .zip(release.index_bytes.iter().cloned())
                .collect(),
        })
    });
    let info = HandshakeInfo {
        me,
        release: release.id(),
        gossip,
    };
    let conn_ids = Arc::new(AtomicU64::new(0));
    let listen_port = listener
        .local_addr()
        .map_err(|e| Error::io("listener", e))?
        .port();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));

    let node = tokio::spawn(node::run(
        swarm,
        release.clone(),
        store.clone(),
        origin,
        in_tx.clone(),
        in_rx,
        prog_tx,
        shutdown.clone(),
        epoch,
        o.gossip.clone(),
    ));
    let accept = {
        let (info, in_tx, ids, slots) =
            (info.clone(), in_tx.clone(), conn_ids.clone(), slots.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let (info, in_tx) = (info.clone(), in_tx.clone());
                tokio::spawn(async move {
                    peer::run(stream, Role::Responder, info, id, in_tx).await;
                    drop(permit);
                });
            }
        })
    };
    let dial = {
        let (info, in_tx, ids, slots, stop) = (
            info.clone(),
            in_tx.clone(),
            conn_ids.clone(),
            slots.clone(),
            shutdown.clone(),
        );
        move |addr: SocketAddr| {
            let (info, in_tx, ids, slots) =
                (info.clone(), in_tx.clone(), ids.clone(), slots.clone());
            let mut stop = stop.clone();
            tokio::spawn(async move {
                // Keep a connection to the peer; redial when it drops. The first retries
                // are quick (peers start at about the same time, and meeting them before
                // the origin grace ends is what splits the origin work); after that a
                // connection that keeps ending quickly (peer down, or it dropped us: a
                // ban) backs off up to a minute. One that lasted resets it all.
                let mut quick_failures = 0u32;
                while !*stop.borrow() {
                    let began = tokio::time::Instant::now();
                    if let (Ok(Ok(stream)), Ok(permit)) = (
                        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
                            .await,
                        slots.clone().try_acquire_owned(),
                    ) {
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        peer::run(stream, Role::Initiator, info.clone(), id, in_tx.clone()).await;
                        drop(permit);
                    }
                    quick_failures = if began.elapsed() > Duration::from_secs(30) {
                        0
                    } else {
                        quick_failures.saturating_add(1)
                    };
                    let delay = Duration::from_millis(500)
                        .saturating_mul(1 << quick_failures.saturating_sub(6).min(7))
                        .min(Duration::from_secs(60));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        }
    };
    let mut dialers: Vec<tokio::task::JoinHandle<()>> = o.peers.iter().map(|a| dial(*a)).collect();
    let discovered = match early {
        Some(d) => Some(d),
        None => o
            .discovery
            .as_ref()
            .map(|cfg| start_discovery(cfg, listen_port))
            .transpose()?,
    };
    let mut _discovery = None;
    if let Some((announcement, mut found_rx)) = discovered {
        _discovery = Some(announcement);
        let known: std::collections::HashSet<SocketAddr> = o.peers.iter().copied().collect();
        dialers.push(tokio::spawn(async move {
            let mut known = known;
            let mut tasks = Vec::new();
            while let Some(addr) = found_rx.recv().await {
                if known.insert(addr) {
                    tasks.push(dial(addr));
                }
            }
            for t in tasks {
                t.abort();
            }
        }));
    }

    let mut report = None;
    let mut done = done;
    let outcome: Result<()> = async {
        loop {
            tokio::select! {
                r = prog_rx.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let p = *prog_rx.borrow_and_update();
                    on_progress(&p);
                    if p.fatal {
                        return Err(Error::new(
                            exit::IO,
                            format!("cannot write pieces to {}", o.state.display()),
                            "free disk space or fix the directory's permissions; verified pieces \
                             are kept and the next run resumes",
                        ));
                    }
                    if p.complete && report.is_none() {
                        let files = store.assemble(&release, &o.out)?;
                        let total = release.total_len().max(1);
                        tracing::info!(
                            release = %release.manifest.body().release,
                            from_peers = p.counters.from_peers,
                            from_origin = p.counters.from_origin,
                            peer_share = format!("{:.0}%", 100.0 * p.counters.from_peers as f64 / total as f64),
                            "release finished"
                        );
                        let r = FetchReport {
                            release: release.manifest.body().release.clone(),
                            files,
                            progress: p,
                        };
                        if let Some(tx) = done.take() {
                            let _ = tx.send(r.clone());
                        }
                        report = Some(r);
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    // Await the aborted tasks too: only then are their sockets closed, and a caller
    // (the daemon switching releases) can bind the same port again.
    accept.abort();
    let _ = accept.await;
    for d in &dialers {
        d.abort();
    }
    for d in dialers {
        let _ = d.await;
    }
    // After an error the node may still run; it holds nothing that needs a clean close.
    node.abort();
    let _ = node.await;
    outcome?;
    report.ok_or_else(|| {
        Error::new(
            exit::UNAVAILABLE,
            "stopped before the release was complete",
            "verified pieces are kept in the state directory; run again to resume",
        )
    })
}
