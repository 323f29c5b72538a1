//! The node: the one task that owns a transfer's [`Swarm`] and carries out its events.
//!
//! Connection tasks and origin fetches send [`NodeInput`]s; the node feeds them to the
//! core, then does what the core asks: queue a message or an upload for a peer, start an
//! origin fetch, write a verified piece, drop a peer. Policy is the core's; the node
//! applies two rules of `shoal_protocol::wire`: which of two connections to one peer
//! survives ([`keeps_own_connection`]), and that a peer whose outbound queue is full is
//! not reading and is dropped.
//!
//! Pieces whose blocks all arrived are hashed on blocking threads and the verdict handed
//! back to the core (`Swarm::handle_piece_checked`). Verified pieces are written on
//! blocking threads, at most [`MAX_PENDING_WRITES`] at a
//! time: beyond that the node waits for a write to land, which slows it to the disk's
//! pace. Completion is reported only once every write has landed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocol::Digest;
use shoal_protocol::swarm::{Source, Swarm, SwarmEvent};
use shoal_protocol::wire::{Capabilities, PeerId, PieceNumber, keeps_own_connection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

mod bans;
mod gossip;
mod origin;

use super::conn::Outbound;
use super::disk::{Disk, MAX_PENDING_WRITES};
use super::report::{Reporter, TransferSnapshot};
use super::{ConnId, GossipEvent, NodeInput, Progress};
use crate::error::Result;
use crate::origin::OriginClient;
use crate::release::Release;

/// How long a redundant connection stays open before it is closed (messages on either
/// are accepted meanwhile, so nothing in flight is lost and the core sees one peer).
pub const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// An offered manifest already passed up is passed up again after this long.
pub const OFFER_AGAIN: Duration = Duration::from_secs(60);

/// Pieces being hashed at once at most (each holds up to 1 MiB).
const MAX_PENDING_CHECKS: usize = 16;

/// Inputs taken at once before the core's outputs are carried out.
const INPUT_BATCH: usize = 64;

/// Offered manifests remembered at most.
const MAX_RECENT_OFFERS: usize = 8;

/// A hashed piece: which, from whom, its bytes, and whether they matched.
type Checked = (PieceNumber, Source, Vec<u8>, bool);

/// One connection's outbound side.
struct Conn {
    id: ConnId,
    tx: mpsc::Sender<Outbound>,
    initiated: bool,
    addr: Option<std::net::IpAddr>,
    /// Dropped with the `Conn`: the connection closes at once, even mid-write.
    close: oneshot::Sender<()>,
}

/// A joined peer's connections: the one we send on, and redundant ones being retired.
struct PeerConns {
    current: Conn,
    others: Vec<Conn>,
}

/// What the node needs besides its inputs.
pub(super) struct NodeParts {
    pub swarm: Swarm,
    pub release: Arc<Release>,
    pub disk: Disk,
    pub origin: OriginClient,
    pub inputs_tx: mpsc::Sender<NodeInput>,
    pub progress: watch::Sender<Progress>,
    /// Where a local failure's cause goes (read by `Transfer::complete`).
    pub failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The origin's last failure and the last piece's arrival (for the status and
    /// `Transfer::origin_trouble`).
    pub origin_health: std::sync::Arc<std::sync::Mutex<super::OriginHealth>>,
    pub gossip: Option<mpsc::Sender<GossipEvent>>,
    pub epoch: Instant,
    pub joined: Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>,
    /// Banned addresses (the node bans the addresses of the peers the core bans).
    pub gate: Arc<super::gate::Gate>,
    /// Status snapshots and `Stats` for peers.
    pub report: Reporter,
    /// Where snapshots go.
    pub snapshot: watch::Sender<TransferSnapshot>,
}

struct Node {
    p: NodeParts,
    conns: HashMap<ConnId, PeerId>,
    peers: HashMap<PeerId, PeerConns>,
    writes: JoinSet<(u32, Result<()>)>,
    /// Pieces being hashed on blocking threads, at most [`MAX_PENDING_CHECKS`], and which
    /// piece each task hashes (so a lost task releases its piece).
    checks: JoinSet<Checked>,
    checking: HashMap<tokio::task::Id, PieceNumber>,
    /// Origin fetches and retire timers: aborted when the node ends.
    tasks: JoinSet<()>,
    /// Close signals of retired connections still writing what they hold, by peer.
    closing: HashMap<ConnId, (PeerId, oneshot::Sender<()>)>,
    complete_seen: bool,
    fatal: bool,
    /// Manifests passed up recently (by whom, and when), so peers repeating offers cost
    /// nothing; an offer is passed up again after [`OFFER_AGAIN`] in case adopting it
    /// failed. Index data is passed up only from these peers.
    offers: Vec<(Digest, PeerId, Instant)>,
    /// Trust documents passed up lately (digest, when).
    trust_seen: Vec<(Digest, Instant)>,
    /// The origin fetch under way for each piece, by serial (stopped when the core
    /// gives up on it).
    origin_tasks: HashMap<u32, (u64, tokio::task::AbortHandle)>,
    /// Serial of the last origin fetch started.
    origin_serial: u64,
    /// The addresses of peers whose connections ended, newest last (at most
    /// [`DEPARTED`]): a piece checked after its sender left can still ban the address.
    departed: std::collections::VecDeque<(PeerId, Vec<std::net::IpAddr>)>,
}

/// Departed peers whose addresses the node remembers.
const DEPARTED: usize = 256;

/// Runs the node until `shutdown` turns true, its inputs close or a local failure
/// (a piece that cannot be stored) stops it; publishes progress as it goes.
pub(super) async fn run(
    parts: NodeParts,
    mut inputs: mpsc::Receiver<NodeInput>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut n = Node {
        p: parts,
        conns: HashMap::new(),
        peers: HashMap::new(),
        writes: JoinSet::new(),
        checks: JoinSet::new(),
        checking: HashMap::new(),
        tasks: JoinSet::new(),
        closing: HashMap::new(),
        complete_seen: false,
        fatal: false,
        offers: Vec::new(),
        trust_seen: Vec::new(),
        origin_tasks: HashMap::new(),
        origin_serial: 0,
        departed: std::collections::VecDeque::new(),
    };
    n.run(&mut inputs, &mut shutdown).await;
    // The last second's bytes count too: the daemon folds this into its totals.
    n.p.report.due_now();
    n.report();
}

impl Node {
    async fn run(
        &mut self,
        inputs: &mut mpsc::Receiver<NodeInput>,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let n = self;
        loop {
            n.drain().await;
            n.publish();
            while n.tasks.try_join_next().is_some() {}
            if n.fatal {
                return;
            }
            let now = n.p.epoch.elapsed();
            let sleep =
                n.p.swarm
                    .poll_timeout()
                    .map_or(Duration::from_secs(3600), |t| t.saturating_sub(now));
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => {
                        n.on_input(input);
                        // Take what else is queued before carrying out the core's events:
                        // one pass over the outputs per batch, not per message.
                        for _ in 0..INPUT_BATCH {
                            let Ok(input) = inputs.try_recv() else { break };
                            // A peer's connections change: carry out what the core asked
                            // first, or a Disconnect it queued for the old session would
                            // hit the new one.
                            if matches!(input, NodeInput::Joined { .. } | NodeInput::Closed { .. }) {
                                n.drain().await;
                            }
                            n.on_input(input);
                        }
                    }
                    None => return,
                },
                Some(done) = n.writes.join_next() => n.on_written(done),
                Some(checked) = n.checks.join_next_with_id() => {
                    n.on_checked(checked);
                    while let Some(more) = n.checks.try_join_next_with_id() {
                        n.on_checked(more);
                    }
                }
                () = tokio::time::sleep(sleep) => n.p.swarm.handle_timeout(n.p.epoch.elapsed()),
                () = tokio::time::sleep_until(n.p.report.next_tick().into()) => n.report(),
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

impl Node {
    fn now(&self) -> Duration {
        self.p.epoch.elapsed()
    }

    /// Publishes progress when a piece, completion or a failure changed it (byte counters
    /// alone wake nobody: a watcher per block cost more than the block).
    fn publish(&mut self) {
        let (have, total) = self.p.swarm.progress();
        let now = Progress {
            have,
            total,
            counters: self.p.swarm.counters(),
            complete: self.complete_seen && self.writes.is_empty(),
            fatal: self.fatal,
        };
        let completed = self.p.progress.send_if_modified(|p| {
            let changed = (p.have, p.total, p.complete, p.fatal)
                != (now.have, now.total, now.complete, now.fatal);
            *p = now;
            changed
        }) && now.complete;
        if completed {
            self.p.report.due_now();
        }
    }

    /// Sends `Stats` to the peers whose turn it is, and publishes a snapshot when due.
    fn report(&mut self) {
        let complete = self.complete_seen && self.writes.is_empty();
        let peers = &self.peers;
        let (stats, snapshot) = self.p.report.tick(
            &self.p.swarm,
            |p| peers.get(p).and_then(|pc| pc.current.addr),
            complete,
        );
        for (peer, msg) in stats {
            // Display only: a peer whose queue is full misses a report, nothing more.
            if let Some(pc) = self.peers.get(&peer) {
                let _ = pc.current.tx.try_send(Outbound::Message(msg));
            }
        }
        if let Some(s) = snapshot {
            self.p.snapshot.send_replace(s);
        }
    }

    /// Carries out everything the core asked for.
    async fn drain(&mut self) {
        loop {
            if let Some((peer, msg)) = self.p.swarm.poll_transmit() {
                self.send(peer, Outbound::Message(msg));
                continue;
            }
            let Some(ev) = self.p.swarm.poll_event() else {
                return;
            };
            self.on_event(ev).await;
        }
    }

    async fn on_event(&mut self, ev: SwarmEvent) {
        match ev {
            SwarmEvent::FetchOrigin { piece } => self.fetch_origin(piece),
            SwarmEvent::CheckPiece {
                piece,
                source,
                data,
            } => {
                // SHA-256 of up to 1 MiB on a blocking thread: the node task was the
                // bottleneck of a fast transfer, a quarter of it hashing.
                while self.checks.len() >= MAX_PENDING_CHECKS {
                    // Hashing is behind: wait, so the node slows to its pace.
                    if let Some(done) = self.checks.join_next_with_id().await {
                        self.on_checked(done);
                    }
                }
                let digest = self.p.swarm.spec(piece).map(|s| s.digest);
                let task = self.checks.spawn_blocking(move || {
                    let good = digest.is_some_and(|d| Digest::of(&data) == d);
                    (piece, source, data, good)
                });
                self.checking.insert(task.id(), piece);
            }
            SwarmEvent::PieceVerified {
                piece,
                data,
                source,
            } => {
                tracing::debug!(piece = piece.0, ?source, "piece verified");
                self.note_activity();
                while self.writes.len() >= MAX_PENDING_WRITES {
                    // The disk is behind: wait for it, so the node slows to its pace.
                    if let Some(done) = self.writes.join_next().await {
                        self.on_written(done);
                    }
                }
                self.writes.spawn(self.p.disk.write(piece.0, data));
            }
            SwarmEvent::Upload { peer, block } => self.send(peer, Outbound::Block(block)),
            SwarmEvent::Disconnect { peer, reason, ban } => {
                if ban {
                    let addrs = self.ban_addresses(peer);
                    tracing::warn!(?peer, ?addrs, %reason, "banned peer");
                    self.p.report.on_ban(peer, addrs, reason.to_string());
                } else {
                    tracing::debug!(?peer, %reason, "dropped peer");
                }
                self.forget(peer);
            }
            SwarmEvent::Complete => self.complete_seen = true,
            SwarmEvent::OriginFailed { piece, corrupt } => {
                self.p.report.on_origin_failure();
                tracing::warn!(piece = piece.0, corrupt, "origin fetch failed");
                if corrupt {
                    self.origin_corrupt(piece);
                }
                self.origin_gave_up(piece);
            }
            SwarmEvent::IndexRequested {
                peer,
                index,
                offset,
                length,
            } => self.send(
                peer,
                Outbound::Index {
                    index,
                    offset,
                    length,
                },
            ),
            SwarmEvent::ManifestOffered { peer, bytes } => self.on_manifest_offered(peer, bytes),
            SwarmEvent::TrustOffered { peer, bytes } => self.on_trust_offered(peer, bytes),
            SwarmEvent::IndexReceived {
                peer,
                index,
                offset,
                data,
            } => self.on_index_received(peer, index, offset, data),
            SwarmEvent::PeerStats { peer, summary } => {
                let addr = self.peers.get(&peer).and_then(|pc| pc.current.addr);
                self.p.report.on_stats(peer, addr, summary);
            }
        }
    }

    fn on_checked(
        &mut self,
        checked: std::result::Result<(tokio::task::Id, Checked), tokio::task::JoinError>,
    ) {
        let now = self.now();
        match checked {
            Ok((id, (piece, source, data, good))) => {
                self.checking.remove(&id);
                self.p
                    .swarm
                    .handle_piece_checked(piece, source, data, good, now);
            }
            Err(e) => {
                if let Some(piece) = self.checking.remove(&e.id()) {
                    self.p.swarm.handle_piece_check_lost(piece, now);
                }
            }
        }
    }

    fn on_written(&mut self, done: std::result::Result<(u32, Result<()>), tokio::task::JoinError>) {
        let failure = match done {
            Ok((_, Ok(()))) => return,
            Ok((piece, Err(e))) => format!("piece {piece}: {}", e.message),
            Err(e) => e.to_string(),
        };
        // Nothing unverified was written; what is stored stays valid.
        tracing::error!(error = %failure, "cannot store a verified piece; stopping");
        self.p
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert(failure);
        self.fatal = true;
    }

    /// Queues `item` for `peer`; a peer whose queue is full is not reading: dropped.
    fn send(&mut self, peer: PeerId, item: Outbound) {
        let Some(pc) = self.peers.get(&peer) else {
            return;
        };
        if pc.current.tx.try_send(item).is_err() {
            tracing::debug!(?peer, "dropping a peer that does not read its socket");
            self.forget(peer);
            self.p.swarm.handle_disconnected(peer, self.now());
        }
    }

    /// Keeps the diallers' view of joined peers.
    fn set_joined(&self, peer: PeerId, joined: bool) {
        let mut set = self
            .p
            .joined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if joined {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    /// Forgets `peer`'s connections, retired ones included; dropping their close
    /// signals closes them at once.
    fn forget(&mut self, peer: PeerId) {
        self.remember_departed(peer);
        self.p.report.on_left(peer);
        if let Some(pc) = self.peers.remove(&peer) {
            self.set_joined(peer, false);
            self.conns.remove(&pc.current.id);
            for c in pc.others {
                self.conns.remove(&c.id);
            }
        }
        let retiring: Vec<ConnId> = self
            .closing
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .map(|(c, _)| *c)
            .collect();
        for c in retiring {
            self.closing.remove(&c);
            self.conns.remove(&c);
        }
    }

    fn on_input(&mut self, input: NodeInput) {
        let now = self.now();
        match input {
            NodeInput::Joined {
                conn,
                peer,
                initiated,
                addr,
                tx,
                close,
                capabilities,
            } => self.on_joined(
                Conn {
                    id: conn,
                    tx,
                    initiated,
                    addr,
                    close,
                },
                peer,
                capabilities,
            ),
            NodeInput::Retire { conn } => {
                // Stop queueing on it but let it write what it holds: keep its close
                // signal until it reports `Closed`.
                for (retired_peer, pc) in self.peers.iter_mut() {
                    let retired_peer = *retired_peer;
                    if let Some(i) = pc.others.iter().position(|c| c.id == conn) {
                        let retired = pc.others.swap_remove(i);
                        self.closing.insert(conn, (retired_peer, retired.close));
                    }
                }
            }
            NodeInput::Message { conn, msg, budget } => {
                if let Some(peer) = self.conns.get(&conn) {
                    let accepted = self.p.swarm.blocks_accepted();
                    self.p.swarm.handle_message(*peer, msg, now);
                    if self.p.swarm.blocks_accepted() > accepted {
                        self.note_activity(); // blocks nobody asked for do not count
                    }
                }
                drop(budget);
            }
            NodeInput::Uploaded { conn, blocks } => {
                // A report from a connection already forgotten belongs to an earlier
                // session of the peer: its slots went with that session.
                if let Some(peer) = self.conns.get(&conn).copied() {
                    for _ in 0..blocks {
                        self.p.swarm.handle_upload_done(peer, now);
                    }
                }
            }
            NodeInput::Closed { conn, peer, unsent } => self.on_closed(conn, peer, unsent, now),
            NodeInput::Member { peer, present } => {
                if present {
                    self.p.swarm.handle_member(peer, now);
                } else {
                    self.p.swarm.handle_member_gone(peer, now);
                }
                let members = self.p.swarm.members();
                tracing::debug!(?peer, present, members, "LAN member");
            }
            NodeInput::Origin {
                piece,
                data,
                serial,
            } => {
                if self
                    .origin_tasks
                    .get(&piece.0)
                    .is_some_and(|(s, _)| *s == serial)
                {
                    self.origin_tasks.remove(&piece.0);
                }
                self.p.swarm.handle_origin_piece(piece, data, now);
            }
        }
    }

    fn on_joined(&mut self, conn: Conn, peer: PeerId, capabilities: Capabilities) {
        if self.p.swarm.is_banned(&peer) || conn.addr.is_some_and(|a| self.p.gate.is_banned(a)) {
            return; // dropping the sender closes the connection
        }
        self.conns.insert(conn.id, peer);
        let Some(pc) = self.peers.get_mut(&peer) else {
            tracing::debug!(?peer, "peer joined");
            self.set_joined(peer, true);
            self.peers.insert(
                peer,
                PeerConns {
                    current: conn,
                    others: Vec::new(),
                },
            );
            self.p.swarm.handle_joined(peer, self.now());
            self.p.report.on_joined(peer, capabilities);
            return;
        };
        // Both sides keep the connection the smaller id opened.
        let keep_initiated = keeps_own_connection(&self.p.swarm.me(), &peer);
        let retired = if conn.initiated == keep_initiated && pc.current.initiated != keep_initiated
        {
            std::mem::replace(&mut pc.current, conn)
        } else {
            conn
        };
        let (id, input) = (retired.id, self.p.inputs_tx.clone());
        pc.others.push(retired);
        self.tasks.spawn(async move {
            tokio::time::sleep(RETIRE_AFTER).await;
            let _ = input.send(NodeInput::Retire { conn: id }).await;
        });
    }

    fn on_closed(&mut self, conn: ConnId, peer: PeerId, unsent: u16, now: Duration) {
        self.closing.remove(&conn);
        if self.conns.remove(&conn).is_none() {
            return;
        }
        let Some(pc) = self.peers.get_mut(&peer) else {
            return;
        };
        if pc.current.id != conn {
            pc.others.retain(|c| c.id != conn);
        } else if let Some(next) = pc.others.pop() {
            pc.current = next;
        } else {
            self.remember_departed(peer);
            self.p.report.on_left(peer);
            self.peers.remove(&peer);
            self.set_joined(peer, false);
            self.p.swarm.handle_disconnected(peer, now);
            return;
        }
        // The peer stays (on another connection): uploads lost with this one free their
        // slots.
        for _ in 0..unsent {
            self.p.swarm.handle_upload_done(peer, now);
        }
    }
}
