//! The swarm runtime of one release: the listener, the dialers, discovery, the peer
//! connections and the node that drives the swarm core, started by [`start`] and owned
//! by the returned [`Transfer`] until [`Transfer::stop`].
//!
//! | module | owns |
//! |---|---|
//! | [`conn`] | one connection: handshake, framing, the bounded outbound queue, write timeouts |
//! | [`node`] | the `Swarm` core and the carrying out of its events |
//! | [`dial`] | the accept loop and the bounded set of dialers |
//! | [`gate`] | banned addresses, and inbound connections per address |
//! | [`disk`] | the store scan, piece writes and upload reads, on blocking threads |
//! | [`gossip`] | handing the current manifest to peers on an older release |
//! | [`report`] | the status snapshot, and `Stats` to and from peers |
//!
//! `fetch` (one download) and the daemon (a channel followed for good) are thin callers:
//! they load a verified release, start a transfer, wait for [`Transfer::complete`], and
//! deliver the artifacts.

pub mod conn;
pub mod dial;
pub mod disk;
pub mod gate;
pub mod gossip;
mod node;
pub mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use shoal_protocol::Digest;
use shoal_protocol::swarm::{Counters, PeerSetConfig, Swarm, SwarmConfig};
use shoal_protocol::wire::{Capabilities, Message, PeerId, PieceNumber};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::discovery::{Discovery, DiscoveryConfig, Found};
use crate::error::{Error, Result, exit};
use crate::origin::OriginClient;
use crate::release::Release;
use crate::store::Store;
use conn::{ConnContext, Outbound};
use dial::Connector;
use disk::Disk;
use gossip::GossipOffer;
pub use report::{Identity, TransferSnapshot};

/// Inputs queued for the node at most; senders wait beyond that (backpressure).
pub const INPUT_QUEUE: usize = 1024;

/// Bytes of peer messages queued for the node at most, all connections together: with
/// frames of up to 1 MiB, a count alone would allow a GiB while the node is busy.
pub const INPUT_BYTES: usize = 16 << 20;

/// Discovered addresses queued for the dialer at most (more are dropped; the dialer
/// drains the queue at once, so this fills only under a flood of announcements).
pub const DISCOVERED_QUEUE: usize = 2 * dial::MAX_MEMBERS;

/// A peer that does not take a write for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Identifies one connection (a peer may briefly have two: only one is used).
pub type ConnId = u64;

/// What connection tasks and origin fetches tell the node.
#[derive(Debug)]
pub enum NodeInput {
    /// Handshake done; queue items for the peer on `tx`.
    Joined {
        /// Connection.
        conn: ConnId,
        /// The peer's id.
        peer: PeerId,
        /// Whether we opened the connection.
        initiated: bool,
        /// The peer's address (a ban covers it too).
        addr: Option<std::net::IpAddr>,
        /// The connection's outbound queue.
        tx: mpsc::Sender<Outbound>,
        /// Dropping this closes the connection at once (what is queued is not sent).
        close: oneshot::Sender<()>,
        /// What the peer announced it can do.
        capabilities: Capabilities,
    },
    /// A message from the peer.
    Message {
        /// Connection.
        conn: ConnId,
        /// The message.
        msg: Message,
        /// Its share of the input budget, returned when the node drops it.
        budget: OwnedSemaphorePermit,
    },
    /// Blocks queued on `conn` were handed to its socket (or could not be read).
    Uploaded {
        /// Connection.
        conn: ConnId,
        /// How many.
        blocks: u16,
    },
    /// The connection ended; `unsent` uploads queued on it never reached the socket.
    Closed {
        /// Connection.
        conn: ConnId,
        /// The peer it was joined with.
        peer: PeerId,
        /// Blocks dropped with it.
        unsent: u16,
    },
    /// Close a redundant connection (a second one to a peer already joined).
    Retire {
        /// Connection.
        conn: ConnId,
    },
    /// Discovery sees an agent of the LAN (`present`), or no longer does.
    Member {
        /// Its peer id.
        peer: PeerId,
        /// Whether it is there.
        present: bool,
    },
    /// An origin fetch finished.
    Origin {
        /// The piece.
        piece: PieceNumber,
        /// The bytes, or `None` on failure.
        data: Option<Vec<u8>>,
        /// Which fetch of the piece (a late one must not stand for its successor).
        serial: u64,
    },
}

/// A document a peer handed over, passed on to whoever decides about releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// A trust document (unverified): the next of the chain after a key rotation.
    Trust {
        /// Who offered it.
        peer: PeerId,
        /// The document's bytes.
        bytes: Vec<u8>,
    },
    /// A manifest the peer believes newer (unverified).
    Manifest {
        /// Who offered it (its index data is taken from that peer only).
        peer: PeerId,
        /// The manifest's bytes.
        bytes: Vec<u8>,
    },
    /// Part of an index file (unverified).
    Index {
        /// Who sent it.
        peer: PeerId,
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// What a transfer reports as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pieces held.
    pub have: u32,
    /// Pieces in the release.
    pub total: u32,
    /// Byte counters.
    pub counters: Counters,
    /// Every piece is held and stored.
    pub complete: bool,
    /// A local failure stopped the transfer (e.g. the disk is full).
    pub fatal: bool,
}

/// How a transfer meets peers and talks to them.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Swarm tunables.
    pub swarm: SwarmConfig,
    /// Peers to dial for as long as the transfer runs.
    pub peers: Vec<SocketAddr>,
    /// Older releases of the channel this agent delivered (id, piece count): peers still
    /// on one of them are handed the current release.
    pub older: Vec<(Digest, u32)>,
    /// Where manifests and indexes offered by peers go (the daemon verifies them).
    pub gossip: Option<mpsc::Sender<GossipEvent>>,
    /// A peer that does not take a write for this long is dropped.
    pub write_timeout: Duration,
    /// Which discovered agents to dial, and how many connections to keep at most.
    pub overlay: PeerSetConfig,
    /// Our peer id (see [`new_peer_id`]); discovery announces the same.
    pub me: PeerId,
    /// The name and start time our `Stats` tell peers.
    pub identity: Identity,
    /// A private swarm's keys (PROTOCOL.md §6.8); `None` for a public swarm.
    pub private: Option<crate::secure::SwarmKeys>,
}

/// A running mDNS announcement and the agents it finds.
pub struct Discovered {
    announcement: Discovery,
    found: mpsc::Receiver<Found>,
}

/// A fresh peer id: random, and light if this machine's link is slow (PROTOCOL.md §6.4).
pub fn new_peer_id(light: bool) -> Result<PeerId> {
    Ok(shoal_protocol::swarm::peer_id(random_bytes()?, light))
}

/// Starts announcing `me` on `port` and browsing for peers. Start it early: mDNS takes
/// most of a second (the library probes its name first), and peers met before the
/// release is ready split the origin work from the first fetch.
pub fn discover(cfg: &DiscoveryConfig, port: u16, me: PeerId) -> Result<Discovered> {
    let (tx, found) = mpsc::channel(DISCOVERED_QUEUE);
    tracing::debug!(port, "mDNS discovery started");
    Ok(Discovered {
        announcement: Discovery::start(cfg, port, &me, tx)?,
        found,
    })
}

/// Random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(exit::IO, format!("no randomness from the OS: {e}"), ""))?;
    Ok(b)
}

/// How the origin has been doing, for [`Transfer::origin_trouble`].
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginHealth {
    /// Its last failed fetch (or bytes that did not match the signed index).
    pub trouble: Option<OriginTrouble>,
    /// When bytes last arrived: a block from a peer, a piece verified.
    pub last_activity: Option<std::time::Instant>,
    /// Origin fetches under way.
    pub in_flight: usize,
}

/// A failed origin fetch.
#[derive(Debug, Clone)]
pub(crate) struct OriginTrouble {
    /// When.
    pub at: std::time::Instant,
    /// The error.
    pub message: String,
    /// What to do about it.
    pub note: String,
}

/// How often a one-shot transfer looks whether it stalled on the origin.
const STALL_CHECK: Duration = Duration::from_secs(2);

fn trouble_error(trouble: OriginTrouble) -> Option<Error> {
    Some(Error::new(
        exit::UNAVAILABLE,
        format!(
            "no bytes arrived from the LAN or the origin since the origin failed: {}",
            trouble.message
        ),
        trouble.note,
    ))
}

/// One release's running swarm (see the module docs).
pub struct Transfer {
    progress: watch::Receiver<Progress>,
    /// Why a local failure stopped the transfer (set with `Progress::fatal`).
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// The origin's last failure and the last piece's arrival.
    origin_health: Arc<std::sync::Mutex<OriginHealth>>,
    snapshot: watch::Receiver<TransferSnapshot>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _discovery: Option<Discovery>,
}

/// Scans the store for pieces already held and starts the release's swarm on
/// `listener`; `discovered` adds mDNS peers.
pub async fn start(
    o: TransferOptions,
    release: Arc<Release>,
    store: Store,
    origin: OriginClient,
    listener: TcpListener,
    discovered: Option<Discovered>,
) -> Result<Transfer> {
    let disk = Disk::new(store, release.clone());
    let held = disk.scan().await?;
    let me = o.me;
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
    let (in_tx, in_rx) = mpsc::channel(INPUT_QUEUE);
    let (prog_tx, progress) = watch::channel(Progress::default());
    let failure = Arc::new(std::sync::Mutex::new(None));
    let origin_health = Arc::new(std::sync::Mutex::new(OriginHealth::default()));
    let facts = report::ReleaseFacts {
        release: release.manifest.body().release.clone(),
        version: release.manifest.body().version,
        release_id: release.id().to_hex(),
        bytes: release.total_len(),
        piece_count: release.pieces.len() as u32,
    };
    let (snapshot_tx, snapshot) = watch::channel(TransferSnapshot {
        release: facts.release.clone(),
        version: facts.version,
        release_id: facts.release_id.clone(),
        bytes: facts.bytes,
        piece_count: facts.piece_count,
        ..TransferSnapshot::default()
    });
    let (stop, stopped) = watch::channel(false);
    let gossip = (!o.older.is_empty()).then(|| {
        Arc::new(GossipOffer {
            older: o.older.clone(),
            trust: release.trust_chain.clone(),
            manifest: release.manifest.bytes().to_vec(),
            indexes: release
                .artifacts()
                .iter()
                .map(|a| a.index.sha256.0)
                .zip(release.index_bytes.iter().cloned())
                .collect(),
        })
    });
    let joined = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let gate = Arc::new(gate::Gate::default());
    let connector = Connector {
        ctx: Arc::new(ConnContext {
            me,
            release: release.id(),
            gossip,
            disk: disk.clone(),
            write_timeout: o.write_timeout,
            node: in_tx.clone(),
            input_budget: Arc::new(Semaphore::new(INPUT_BYTES)),
            joined: joined.clone(),
            gate: gate.clone(),
            private: o.private.clone(),
        }),
        slots: Arc::new(Semaphore::new(o.overlay.max_peers)),
        ids: Arc::new(AtomicU64::new(0)),
        stop: stopped.clone(),
    };
    let parts = node::NodeParts {
        swarm,
        release,
        disk,
        origin,
        inputs_tx: in_tx,
        progress: prog_tx,
        failure: failure.clone(),
        origin_health: origin_health.clone(),
        gossip: o.gossip,
        epoch,
        joined,
        gate,
        report: report::Reporter::new(facts, o.identity),
        snapshot: snapshot_tx,
    };
    let (announcement, found) = match discovered {
        Some(d) => (Some(d.announcement), Some(d.found)),
        None => (None, None),
    };
    // Slots kept for our own dialling of discovered members; none without discovery
    // (a static seed takes every inbound connection it has room for).
    let reserve = if found.is_some() {
        (o.overlay.dial / 2).min(o.overlay.max_peers / 2)
    } else {
        0
    };
    let tasks = vec![
        tokio::spawn(node::run(parts, in_rx, stopped)),
        tokio::spawn(connector.clone().accept(listener, reserve)),
        tokio::spawn(connector.dial(o.peers, found, o.overlay)),
    ];
    Ok(Transfer {
        progress,
        failure,
        origin_health,
        snapshot,
        stop,
        tasks,
        _discovery: announcement,
    })
}

impl Transfer {
    /// Progress updates.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The transfer's status, refreshed once a second.
    pub fn snapshot(&self) -> watch::Receiver<TransferSnapshot> {
        self.snapshot.clone()
    }

    /// Waits until every piece is held and stored, calling `on_progress` on each update.
    /// A local failure (a piece that cannot be stored) is an error.
    pub async fn complete(&self, on_progress: impl FnMut(&Progress)) -> Result<Progress> {
        self.complete_or_stall(on_progress, None).await
    }

    /// [`Transfer::complete`], which also gives up when the transfer stalls on the
    /// origin: no bytes arrived from anywhere for `stall`, no origin fetch is under way,
    /// and the origin failed a fetch within the last `2 × stall` (a file it lacks, an
    /// error status, bytes that do not match the signed index). The error is the origin's last failure.
    /// Without `stall` it waits for as long as it takes (the daemon does; it shows the
    /// failure in its status, see [`Transfer::origin_trouble`]).
    pub async fn complete_or_stall(
        &self,
        mut on_progress: impl FnMut(&Progress),
        stall: Option<Duration>,
    ) -> Result<Progress> {
        let mut rx = self.progress.clone();
        let began = std::time::Instant::now();
        loop {
            let p = *rx.borrow_and_update();
            on_progress(&p);
            if p.fatal {
                let why = self
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_else(|| "the log says why".into());
                return Err(Error::new(
                    exit::IO,
                    format!("cannot write verified pieces to the state directory: {why}"),
                    "free disk space or fix the directory's permissions; verified pieces are \
                     kept and the next run resumes",
                ));
            }
            if p.complete {
                return Ok(p);
            }
            let check = async {
                match stall {
                    // Often enough that giving up comes within a few seconds of `stall`.
                    Some(d) => tokio::time::sleep(d.min(STALL_CHECK)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(Error::new(
                        exit::UNAVAILABLE,
                        "the transfer stopped before the release was complete",
                        "verified pieces are kept in the state directory; run again to resume",
                    ));
                },
                () = check => {
                    if let Some(e) = stall.and_then(|d| self.stalled(d, began)) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The origin's last failure, if the transfer is stalled on it (see
    /// [`Transfer::complete_or_stall`]).
    fn stalled(&self, stall: Duration, began: std::time::Instant) -> Option<Error> {
        let health = self
            .origin_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let quiet_since = health.last_activity.unwrap_or(began).max(began);
        if health.in_flight > 0 || quiet_since.elapsed() < stall {
            return None;
        }
        // A failure of long ago is not why it is quiet now (a transient one, then a
        // wait for peers); a file the origin lacks fails again at every retry.
        let trouble = health.trouble.filter(|t| t.at.elapsed() < 2 * stall)?;
        trouble_error(trouble)
    }

    /// The origin's last failure, if nothing arrived since and no origin fetch is under
    /// way: a file it lacks, an error status, a refused certificate, bytes that do not
    /// match the signed index. `None` while bytes keep arriving (from peers or the
    /// origin) or a fetch runs (a slow one ends by its own timeout).
    pub fn origin_trouble(&self) -> Option<Error> {
        let health = self
            .origin_health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let trouble = health.trouble?;
        if health.in_flight > 0 || health.last_activity.is_some_and(|t| t > trouble.at) {
            return None;
        }
        trouble_error(trouble)
    }

    /// Stops every task of the transfer and waits for them, so its listening port is
    /// free again when this returns.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Transfer {
    /// A transfer dropped without [`Transfer::stop`] still ends its tasks (without
    /// waiting for them).
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
