//! The node: drives one release's swarm core with real sockets, the origin and the store.
//!
//! It owns the [`Swarm`] and is the only task that touches it: connection tasks and
//! origin fetches send [`NodeInput`]s, the node feeds them to the core, then carries out
//! what the core asks (send, fetch, store, upload, drop a peer). It decides nothing.
//!
//! Verified pieces are written to the store on blocking threads, at most
//! [`MAX_PENDING_WRITES`] at a time (beyond that the node writes itself, which slows it to
//! the disk's pace); until a write lands, uploads of that piece are served from memory.
//! Completion is reported only once every write has landed.
//!
//! Two agents that dial each other at once end up with two connections. Both sides keep
//! the same one, the connection opened by the smaller peer id, and retire the other after
//! [`RETIRE_AFTER`]; messages on either are accepted meanwhile, so nothing in flight is
//! lost and the core sees one peer throughout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_protocol::swarm::{Counters, Swarm, SwarmEvent};
use shoal_protocol::wire::{Message, PeerId};
use tokio::sync::{mpsc, watch};

use crate::origin::OriginClient;
use crate::peer::{ConnId, NodeInput};
use crate::release::Release;
use crate::store::Store;

/// Inputs queued for the node at most; senders wait beyond that (backpressure).
pub const INPUT_QUEUE: usize = 1024;

/// Piece writes in flight at most (each holds its piece, at most 1 MiB, in memory).
pub const MAX_PENDING_WRITES: usize = 16;

/// A document a peer handed over, passed on to whoever decides about releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipEvent {
    /// A manifest the peer believes newer (unverified).
    Manifest(Vec<u8>),
    /// Part of an index file (unverified).
    Index {
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// How long a redundant connection stays open before it is closed.
pub const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// A joined peer's connections: the one we send on, and redundant ones being retired.
struct PeerConns {
    current: (ConnId, mpsc::UnboundedSender<Message>, bool),
    others: Vec<(ConnId, mpsc::UnboundedSender<Message>)>,
}

/// What the node reports as it goes.
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
    /// A local failure that stops the download (e.g. the disk is full).
    pub fatal: bool,
}

/// Bytes `offset..offset+length` of the release's index file named `index` (clipped to
/// the file); empty if the release has no such index.
pub fn index_range(release: &Release, index: &[u8; 32], offset: u32, length: u32) -> Vec<u8> {
    let found = release
        .artifacts()
        .iter()
        .position(|a| a.index.sha256.0 == *index)
        .and_then(|i| release.index_bytes.get(i));
    let Some(bytes) = found else {
        return Vec::new();
    };
    let start = (offset as usize).min(bytes.len());
    let end = start.saturating_add(length as usize).min(bytes.len());
    bytes[start..end].to_vec()
}

/// Runs the node until `shutdown` turns true; publishes progress on `progress`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut swarm: Swarm,
    release: Arc<Release>,
    store: Store,
    origin: OriginClient,
    inputs_tx: mpsc::Sender<NodeInput>,
    mut inputs: mpsc::Receiver<NodeInput>,
    progress: watch::Sender<Progress>,
    mut shutdown: watch::Receiver<bool>,
    epoch: Instant,
    gossip: Option<mpsc::Sender<GossipEvent>>,
) {
    let mut conns: HashMap<ConnId, PeerId> = HashMap::new();
    let mut peers: HashMap<PeerId, PeerConns> = HashMap::new();
    let me = swarm.me();
    let mut complete_seen = false;
    // Verified pieces whose store write has not landed yet.
    let mut writing: HashMap<u32, Arc<Vec<u8>>> = HashMap::new();
    let mut fatal = false;
    loop {
        loop {
            if let Some((peer, msg)) = swarm.poll_transmit() {
                if let Some(pc) = peers.get(&peer) {
                    let _ = pc.current.1.send(msg);
                }
                continue;
            }
            let Some(ev) = swarm.poll_event() else { break };
            match ev {
                SwarmEvent::FetchOrigin { piece } => {
                    let p = piece.0 as usize;
                    let (Some(loc), Some(spec)) = (release.locations.get(p), release.pieces.get(p))
                    else {
                        continue;
                    };
                    let path = Release::artifact_path(&release.artifacts()[loc.artifact]);
                    let (origin, tx, offset, len) = (
                        origin.clone(),
                        inputs_tx.clone(),
                        loc.offset,
                        u64::from(spec.length),
                    );
                    tracing::debug!(piece = piece.0, len, "origin fetch started");
                    tokio::spawn(async move {
                        let data = match origin.range(&path, offset, len).await {
                            Ok(d) => {
                                tracing::debug!(piece = piece.0, "origin fetch done");
                                Some(d)
                            }
                            Err(e) => {
                                tracing::warn!(piece = piece.0, error = %e, "origin fetch failed");
                                None
                            }
                        };
                        let _ = tx
                            .send(NodeInput::Origin {
                                piece: piece.0,
                                data,
                            })
                            .await;
                    });
                }
                SwarmEvent::PieceVerified {
                    piece,
                    data,
                    source,
                } => {
                    tracing::debug!(piece = piece.0, ?source, "piece verified");
                    let Some(spec) = release.pieces.get(piece.0 as usize) else {
                        continue;
                    };
                    if writing.len() >= MAX_PENDING_WRITES {
                        // The disk is behind: write here, so the node slows to its pace.
                        if let Err(e) = store.put(&spec.digest, &data) {
                            // Nothing unverified was written; what is stored stays valid.
                            tracing::error!(error = %e, "cannot store a verified piece; stopping");
                            fatal = true;
                        }
                        continue;
                    }
                    let data = Arc::new(data);
                    writing.insert(piece.0, data.clone());
                    let (store, digest, tx) = (store.clone(), spec.digest, inputs_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let ok = match store.put(&digest, &data) {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot store a verified piece; stopping");
                                false
                            }
                        };
                        let _ = tx.blocking_send(NodeInput::Stored { piece: piece.0, ok });
                    });
                }
                SwarmEvent::Upload { peer, block } => {
                    let spec = release.pieces.get(block.piece.0 as usize);
                    let data = match writing.get(&block.piece.0) {
                        Some(piece) => {
                            let start = (block.offset as usize).min(piece.len());
                            let end = start.saturating_add(block.length as usize).min(piece.len());
                            Some(piece[start..end].to_vec())
                        }
                        None => spec
                            .and_then(|s| store.read(&s.digest, block.offset, block.length).ok()),
                    };
                    if let (Some(data), Some(pc)) = (data, peers.get(&peer)) {
                        let _ = pc.current.1.send(Message::Piece {
                            piece: block.piece,
                            offset: block.offset,
                            data,
                        });
                    }
                    swarm.handle_upload_done(peer);
                }
                SwarmEvent::Disconnect { peer, reason, ban } => {
                    if ban {
                        tracing::warn!(?peer, %reason, "banned peer");
                    } else {
                        tracing::debug!(?peer, %reason, "dropped peer");
                    }
                    if let Some(pc) = peers.remove(&peer) {
                        conns.remove(&pc.current.0);
                        for (c, _) in pc.others {
                            conns.remove(&c);
                        }
                    }
                }
                SwarmEvent::Complete => complete_seen = true,
                SwarmEvent::OriginFailed { piece, corrupt } => {
                    tracing::warn!(piece = piece.0, corrupt, "origin fetch failed");
                }
                SwarmEvent::IndexRequested {
                    peer,
                    index,
                    offset,
                    ..
                } => {
                    // Not held: this agent offers no older-release gossip yet.
                    if let Some(pc) = peers.get(&peer) {
                        let _ = pc.current.1.send(Message::IndexData {
                            index,
                            offset,
                            data: Vec::new(),
                        });
                    }
                }
                SwarmEvent::ManifestOffered { bytes, .. } => {
                    if let Some(g) = &gossip {
                        let _ = g.try_send(GossipEvent::Manifest(bytes));
                    }
                }
                SwarmEvent::IndexReceived {
                    index,
                    offset,
                    data,
                    ..
                } => {
                    if let Some(g) = &gossip {
                        let _ = g.try_send(GossipEvent::Index {
                            index,
                            offset,
                            data,
                        });
                    }
                }
                SwarmEvent::PeerStats { .. } => {}
            }
        }
        let (have, total) = swarm.progress();
        progress.send_replace(Progress {
            have,
            total,
            counters: swarm.counters(),
            complete: complete_seen && writing.is_empty(),
            fatal,
        });
        if fatal {
            return;
        }
        let now = epoch.elapsed();
        let sleep = swarm
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| t.saturating_sub(now));
        tokio::select! {
            input = inputs.recv() => {
                let now = epoch.elapsed();
                match input {
                    Some(NodeInput::Joined { conn, peer, initiated, tx }) => {
                        if swarm.is_banned(&peer) {
                            continue; // dropping tx closes the connection
                        }
                        conns.insert(conn, peer);
                        match peers.get_mut(&peer) {
                            None => {
                                tracing::debug!(?peer, "peer joined");
                                peers.insert(peer, PeerConns { current: (conn, tx, initiated), others: Vec::new() });
                                swarm.handle_joined(peer, now);
                            }
                            Some(pc) => {
                                // Prefer the connection opened by the smaller id; both
                                // sides reach the same choice.
                                let preferred_initiated = me < peer;
                                let retired = if initiated == preferred_initiated
                                    && pc.current.2 != preferred_initiated
                                {
                                    let old = std::mem::replace(&mut pc.current, (conn, tx, initiated));
                                    (old.0, old.1)
                                } else {
                                    (conn, tx)
                                };
                                let id = retired.0;
                                pc.others.push(retired);
                                let input = inputs_tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(RETIRE_AFTER).await;
                                    let _ = input.send(NodeInput::Retire { conn: id }).await;
                                });
                            }
                        }
                    }
                    Some(NodeInput::Retire { conn }) => {
                        for pc in peers.values_mut() {
                            pc.others.retain(|(c, _)| *c != conn);
                        }
                    }
                    Some(NodeInput::Message { conn, msg }) => {
                        if let Some(peer) = conns.get(&conn) {
                            swarm.handle_message(*peer, msg, now);
                        }
                    }
                    Some(NodeInput::Closed { conn }) => {
                        let Some(peer) = conns.remove(&conn) else { continue };
                        let Some(pc) = peers.get_mut(&peer) else { continue };
                        if pc.current.0 != conn {
                            pc.others.retain(|(c, _)| *c != conn);
                        } else if let Some((c, tx)) = pc.others.pop() {
                            pc.current = (c, tx, !pc.current.2);
                        } else {
                            peers.remove(&peer);
                            swarm.handle_disconnected(peer, now);
                        }
                    }
                    Some(NodeInput::Stored { piece, ok }) => {
                        writing.remove(&piece);
                        fatal |= !ok;
                    }
                    Some(NodeInput::Origin { piece, data }) => {
                        swarm.handle_origin_piece(shoal_protocol::wire::PieceNumber(piece), data, now);
                    }
                    None => return,
                }
            }
            () = tokio::time::sleep(sleep) => swarm.handle_timeout(epoch.elapsed()),
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
