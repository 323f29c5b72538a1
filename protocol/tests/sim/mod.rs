//! A deterministic simulator of the swarm core: virtual time, links with bandwidth,
//! latency and loss, an origin with its own uplink, late joiners, crashing peers, lying
//! peers and a slow or dead origin. Every step is replayable from the seed, and the
//! core's invariants plus "nothing wrong is ever stored" are checked after every step.
//!
//! Transfer model: a block (`Piece`) is serialised on the sender's uplink (one queue, in
//! the order the core hands blocks out), travels for the link latency (plus a
//! retransmission delay when it is "lost"), then takes the receiver's downlink in the
//! order blocks arrive there. Other messages are a few bytes: they take only the latency,
//! and wait behind nothing but what their own connection carries before them (TCP keeps
//! order; the kernel and the switch interleave connections). The origin is one uplink
//! shared by all its responses (FIFO); an origin response arrives when the origin
//! finishes sending it and does not occupy the receiver's downlink (it is far slower
//! than the LAN).
//!
//! Overlay model: discovery is instant and complete (every node learns of every node
//! that starts, through `Swarm::handle_member`), and each node connects by the protocol's
//! overlay rule (`PeerSetConfig`): it dials the members with the best link scores among
//! the live ones, and a connection needs room at both ends (the handshake is abstracted).
//! A crashed node's neighbours see the connection close and dial replacements; the
//! others forget it only after `forget_after` (mDNS records outlive a crash).
//!
//! Starvation check: every second, a node that has had a neighbour holding a piece it
//! lacks, and has received no piece data, for longer than `starve_bound` fails the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_protocol::swarm::{
    PeerError, PieceSpec, Rng, Swarm, SwarmEvent, fetcher_score, link_score, peer_id,
};
use shoal_protocol::wire::{Message, PeerId, PieceNumber};

mod links;
use links::bits_time;
mod mesh;
mod scenario;
mod shapes;

pub use scenario::{NodeSpec, Report, Scenario};
pub use shapes::{MBIT, lan, show};

enum Ev {
    Join(usize),
    Crash(usize),
    Deliver {
        to: usize,
        from: usize,
        msg: Message,
    },
    Origin {
        to: usize,
        piece: u32,
        data: Option<Vec<u8>>,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Forget(usize),
    Tick,
    UploadDone {
        node: usize,
        peer: PeerId,
    },
}

struct Node {
    spec: NodeSpec,
    id: PeerId,
    swarm: Option<Swarm>,
    up_free: Duration,
    /// The downlink's reserved stretches (start, end), in order.
    down: Vec<(Duration, Duration)>,
    held: Vec<bool>,
    alive: bool,
    finished: Option<Duration>,
    timer_generation: u64,
    /// Connected nodes.
    links: std::collections::BTreeSet<usize>,
    /// The live members with the best link scores (best first, at most `mesh.dial`).
    top: Vec<(u64, usize)>,
    /// Since when the node wants what a neighbour has and got no piece data.
    wanting_since: Option<Duration>,
    /// Piece data delivered to it by peers, bytes.
    received: u64,
    /// `Request`s delivered to it.
    requests: u64,
}

/// Runs a scenario to completion; `Err` carries the seed and what went wrong.
pub fn run(sc: &Scenario) -> Result<Report, String> {
    Sim::new(sc)
        .run()
        .map_err(|e| format!("seed {:#x}: {e}", sc.seed))
}

struct Sim<'a> {
    sc: &'a Scenario,
    truth: Vec<Vec<u8>>,
    specs: Vec<PieceSpec>,
    nodes: Vec<Node>,
    index: std::collections::HashMap<PeerId, usize>,
    ghosts: Vec<PeerId>,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    payloads: std::collections::HashMap<u64, Ev>,
    seq: u64,
    now: Duration,
    rng: Rng,
    origin_free: Duration,
    origin_bytes: u64,
    bans_of_liars: usize,
    steps: u64,
    longest_starved: Duration,
    /// Per connection (from, to): when its latest message arrives (TCP keeps order).
    conns: std::collections::HashMap<(usize, usize), Duration>,
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario) -> Self {
        let mut rng = Rng::new(sc.seed);
        let truth: Vec<Vec<u8>> = (0..sc.pieces)
            .map(|_| {
                let mut v = Vec::with_capacity(sc.piece_len as usize);
                while v.len() < sc.piece_len as usize {
                    v.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
                v.truncate(sc.piece_len as usize);
                v
            })
            .collect();
        let specs = truth
            .iter()
            .map(|d| PieceSpec {
                length: d.len() as u32,
                digest: Digest::of(d),
            })
            .collect();
        let nodes: Vec<Node> = sc
            .nodes
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
                id[8..].copy_from_slice(&(i as u64).to_le_bytes());
                Node {
                    spec: spec.clone(),
                    id: peer_id(id, spec.light),
                    swarm: None,
                    up_free: Duration::ZERO,
                    down: Vec::new(),
                    held: vec![spec.seed; sc.pieces as usize],
                    alive: false,
                    finished: None,
                    timer_generation: 0,
                    links: Default::default(),
                    top: Vec::new(),
                    wanting_since: None,
                    received: 0,
                    requests: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            sc,
            truth,
            specs,
            index: nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect(),
            ghosts: Vec::new(),
            nodes,
            queue: BinaryHeap::new(),
            payloads: std::collections::HashMap::new(),
            seq: 0,
            now: Duration::ZERO,
            rng,
            origin_free: Duration::ZERO,
            origin_bytes: 0,
            bans_of_liars: 0,
            steps: 0,
            longest_starved: Duration::ZERO,
            conns: std::collections::HashMap::new(),
        };
        sim.push(Duration::from_secs(1), Ev::Tick);
        let salt = sim.specs.first().map_or([0; 32], |s| s.digest.0);
        for _ in 0..sc.ghosts {
            let best = (0..1000)
                .map(|_| {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&sim.rng.next_u64().to_le_bytes());
                    id[8..].copy_from_slice(&sim.rng.next_u64().to_le_bytes());
                    PeerId(id)
                })
                .max_by_key(|id| fetcher_score(&salt, id));
            sim.ghosts.extend(best);
        }
        for i in 0..sim.nodes.len() {
            let spec = sim.nodes[i].spec.clone();
            sim.push(spec.join_at, Ev::Join(i));
            if let Some(t) = spec.crash_at {
                sim.push(t, Ev::Crash(i));
                sim.push(t + sc.forget_after, Ev::Forget(i));
            }
        }
        sim
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    fn honest_done(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| !n.spec.lying && n.spec.crash_at.is_none())
            .all(|n| n.finished.is_some())
    }

    fn run(mut self) -> Result<Report, String> {
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if self.honest_done() {
                break;
            }
            if at > self.sc.time_limit {
                let stuck: Vec<String> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.alive && n.finished.is_none() && !n.spec.lying)
                    .map(|(i, n)| {
                        let (h, t) = n.swarm.as_ref().map_or((0, 0), |s| s.progress());
                        format!("node {i}: {h}/{t}")
                    })
                    .collect();
                return Err(format!(
                    "not finished by {:?}: {}",
                    self.sc.time_limit,
                    stuck.join(", ")
                ));
            }
            self.now = at;
            self.steps += 1;
            let Some(ev) = self.payloads.remove(&seq) else {
                continue;
            };
            let touched = self.step(ev)?;
            for i in touched {
                self.drain(i)?;
                if !self.steps.is_multiple_of(self.sc.check_every.max(1)) {
                    continue;
                }
                if let Some(s) = &self.nodes[i].swarm {
                    s.check_invariants()
                        .map_err(|e| format!("node {i} at {:?}: {e}", self.now))?;
                }
            }
        }
        if !self.honest_done() {
            return Err("event queue ran dry before every honest node finished".into());
        }
        Ok(self.report())
    }

    /// Applies one event; returns the nodes whose core changed.
    fn step(&mut self, ev: Ev) -> Result<Vec<usize>, String> {
        let now = self.now;
        Ok(match ev {
            Ev::Join(i) => {
                let held = self.nodes[i].held.clone();
                let seed = self.rng.next_u64();
                let swarm = Swarm::new(
                    self.sc.config.clone(),
                    self.nodes[i].id,
                    self.specs.clone(),
                    &held,
                    seed,
                    now,
                );
                self.nodes[i].swarm = Some(swarm);
                self.nodes[i].alive = true;
                let mut touched = vec![i];
                let others: Vec<usize> = (0..self.nodes.len())
                    .filter(|j| *j != i && self.nodes[*j].alive)
                    .collect();
                // Discovery: the new node learns of everyone, everyone of it.
                let me = self.nodes[i].id;
                for g in self.ghosts.clone() {
                    if let Some(s) = self.nodes[i].swarm.as_mut() {
                        s.handle_member(g, now);
                    }
                }
                for &j in &others {
                    let them = self.nodes[j].id;
                    if let Some(s) = self.nodes[i].swarm.as_mut() {
                        s.handle_member(them, now);
                    }
                    if let Some(s) = self.nodes[j].swarm.as_mut() {
                        s.handle_member(me, now);
                    }
                }
                // The overlay: the new node dials its best links; nodes for which it is
                // now among the best dial it.
                self.rank(i);
                let mine: Vec<usize> = self.nodes[i].top.iter().map(|(_, j)| *j).collect();
                for j in mine {
                    self.connect(i, j, now, &mut touched);
                }
                let dial = self.sc.mesh.dial;
                for &j in &others {
                    let score = link_score(&me, &self.nodes[j].id);
                    let top = &mut self.nodes[j].top;
                    if top.len() < dial || top.last().is_some_and(|(s, _)| score > *s) {
                        top.push((score, i));
                        top.sort_unstable_by(|a, b| b.cmp(a));
                        top.truncate(dial);
                        self.connect(j, i, now, &mut touched);
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                touched
            }
            Ev::Crash(i) => {
                self.nodes[i].alive = false;
                self.nodes[i].swarm = None;
                let id = self.nodes[i].id;
                let mut touched = Vec::new();
                let links = std::mem::take(&mut self.nodes[i].links);
                for &j in &links {
                    self.nodes[j].links.remove(&i);
                    if let Some(s) = self.nodes[j].swarm.as_mut() {
                        s.handle_disconnected(id, now);
                        touched.push(j);
                    }
                }
                // Nodes that dialled it dial their next best live member.
                let rerank: Vec<usize> = (0..self.nodes.len())
                    .filter(|j| self.nodes[*j].alive && self.nodes[*j].top.iter().any(|t| t.1 == i))
                    .collect();
                for j in rerank {
                    self.rank(j);
                    let best: Vec<usize> = self.nodes[j].top.iter().map(|(_, k)| *k).collect();
                    for k in best {
                        self.connect(j, k, now, &mut touched);
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                touched
            }
            Ev::Forget(i) => {
                let id = self.nodes[i].id;
                let mut touched = Vec::new();
                for j in 0..self.nodes.len() {
                    if let Some(s) = self.nodes[j].swarm.as_mut() {
                        s.handle_member_gone(id, now);
                        touched.push(j);
                    }
                }
                touched
            }
            Ev::UploadDone { node, peer } => match self.nodes[node].swarm.as_mut() {
                Some(s) => {
                    s.handle_upload_done(peer, self.now);
                    vec![node]
                }
                None => vec![],
            },
            Ev::Tick => {
                self.check_starvation()?;
                self.push(now + Duration::from_secs(1), Ev::Tick);
                vec![]
            }
            Ev::Deliver { to, from, msg } => {
                let from_id = self.nodes[from].id;
                let linked = self.nodes[from].alive && self.nodes[to].links.contains(&from);
                if let Message::Piece { data, .. } = &msg {
                    self.nodes[to].wanting_since = None;
                    self.nodes[to].received += data.len() as u64;
                }
                if matches!(msg, Message::Request(_)) {
                    self.nodes[to].requests += 1;
                }
                match self.nodes[to].swarm.as_mut() {
                    Some(s) if linked => {
                        s.handle_message(from_id, msg, now);
                        vec![to]
                    }
                    _ => vec![],
                }
            }
            Ev::Origin { to, piece, data } => match self.nodes[to].swarm.as_mut() {
                Some(s) => {
                    s.handle_origin_piece(PieceNumber(piece), data, now);
                    vec![to]
                }
                None => vec![],
            },
            Ev::Timer { node, generation } => {
                let n = &mut self.nodes[node];
                match n.swarm.as_mut() {
                    Some(s) if n.timer_generation == generation => {
                        s.handle_timeout(now);
                        vec![node]
                    }
                    _ => vec![],
                }
            }
        })
    }

    /// Sends what node `i`'s core wants sent and acts on its events.
    fn drain(&mut self, i: usize) -> Result<(), String> {
        loop {
            let Some(s) = self.nodes[i].swarm.as_mut() else {
                return Ok(());
            };
            if let Some((to, msg)) = s.poll_transmit() {
                self.transmit(i, to, msg);
                continue;
            }
            let Some(ev) = s.poll_event() else { break };
            self.on_event(i, ev)?;
        }
        let now = self.now;
        let n = &mut self.nodes[i];
        n.timer_generation += 1;
        let generation = n.timer_generation;
        if let Some(t) = n.swarm.as_ref().and_then(Swarm::poll_timeout) {
            self.push(
                t.max(now),
                Ev::Timer {
                    node: i,
                    generation,
                },
            );
        }
        Ok(())
    }

    fn index_of(&self, id: PeerId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    fn on_event(&mut self, i: usize, ev: SwarmEvent) -> Result<(), String> {
        let now = self.now;
        match ev {
            SwarmEvent::FetchOrigin { piece } => {
                let p = piece.0 as usize;
                if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
                    eprintln!(
                        "{:>9.3}s node {i:>2} fetches piece {p} from the origin",
                        now.as_secs_f64()
                    );
                }
                let dead = self.sc.origin_dies_at.is_some_and(|t| now >= t);
                if dead {
                    // A dead origin: the connection attempt times out.
                    self.push(
                        now + Duration::from_secs(2),
                        Ev::Origin {
                            to: i,
                            piece: piece.0,
                            data: None,
                        },
                    );
                } else {
                    let data = self.truth[p].clone();
                    let size = data.len() + 300;
                    let start = self.origin_free.max(now + self.sc.latency);
                    self.origin_free = start + bits_time(size, self.sc.origin_bps);
                    // The response trickles in at the origin's pace over the whole
                    // transfer; it does not hold the node's downlink FIFO until it ends
                    // (that would delay every LAN message behind a future arrival).
                    let node = &self.nodes[i];
                    let at = (self.origin_free + self.sc.latency)
                        .max(now + bits_time(size, node.spec.down_bps));
                    self.origin_bytes += data.len() as u64;
                    self.push(
                        at,
                        Ev::Origin {
                            to: i,
                            piece: piece.0,
                            data: Some(data),
                        },
                    );
                }
            }
            SwarmEvent::PieceVerified { piece, data, .. } => {
                let p = piece.0 as usize;
                if data != self.truth[p] {
                    return Err(format!("node {i} verified wrong bytes for piece {p}"));
                }
                self.nodes[i].held[p] = true;
            }
            SwarmEvent::Upload { peer, block } => {
                let p = block.piece.0 as usize;
                if !self.nodes[i].held[p] {
                    return Err(format!(
                        "node {i} was asked to upload piece {p} it does not hold"
                    ));
                }
                let start = block.offset as usize;
                let mut data = self.truth[p][start..start + block.length as usize].to_vec();
                if self.nodes[i].spec.lying {
                    data[0] ^= 0x5a;
                }
                let msg = Message::Piece {
                    piece: block.piece,
                    offset: block.offset,
                    data,
                };
                self.transmit(i, peer, msg);
                // The agent reports an upload done once it is written out.
                let sent = self.nodes[i].up_free;
                self.push(sent, Ev::UploadDone { node: i, peer });
            }
            SwarmEvent::Disconnect { peer, ban, reason } => {
                if let Some(j) = self.index_of(peer) {
                    if ban && self.nodes[j].spec.lying {
                        self.bans_of_liars += 1;
                    } else if ban {
                        return Err(format!("node {i} banned honest node {j}"));
                    }
                    // The protocol rules (noise, unasked blocks, ...) must never close
                    // an honest peer's connection.
                    let s = &self.nodes[j].spec;
                    let hostile = s.lying || s.stingy || s.flapping;
                    if matches!(reason, PeerError::Protocol(_)) && !hostile {
                        return Err(format!(
                            "node {i} closed honest node {j} for a protocol error: {reason}"
                        ));
                    }
                    let me = self.nodes[i].id;
                    self.nodes[i].links.remove(&j);
                    self.nodes[j].links.remove(&i);
                    if let Some(s) = self.nodes[j].swarm.as_mut() {
                        s.handle_disconnected(me, now);
                    }
                    self.drain(j)?;
                }
            }
            SwarmEvent::CheckPiece {
                piece,
                source,
                data,
            } => {
                // The agent hashes on a worker thread; here the verdict is immediate.
                let good = self.truth.get(piece.0 as usize) == Some(&data);
                if let Some(s) = self.nodes[i].swarm.as_mut() {
                    s.handle_piece_checked(piece, source, data, good, now);
                }
            }
            SwarmEvent::Complete => {
                if self.nodes[i].finished.is_none() {
                    self.nodes[i].finished = Some(now);
                }
            }
            SwarmEvent::OriginFailed { .. }
            | SwarmEvent::ManifestOffered { .. }
            | SwarmEvent::TrustOffered { .. }
            | SwarmEvent::PeerStats { .. }
            | SwarmEvent::IndexRequested { .. }
            | SwarmEvent::IndexReceived { .. } => {}
        }
        Ok(())
    }
}
