//! The piece-exchange core of one release's swarm, without IO.
//!
//! In the style of `quinn-proto`: the agent feeds inputs through `handle_*` (a peer
//! joined, a message arrived, the origin answered, time passed) and drains outputs
//! through [`Swarm::poll_transmit`] (messages to send), [`Swarm::poll_event`] (fetch from
//! the origin, store a verified piece, serve a block, drop a peer) and
//! [`Swarm::poll_timeout`] (when to call [`Swarm::handle_timeout`] next). Time is passed
//! in as a `Duration` since an arbitrary epoch; randomness comes from a seed. The same
//! inputs give the same outputs, which is what the deterministic simulator relies on.
//!
//! Policy, all of it here and nowhere else:
//! - **Rarest first** among pieces a peer can give us, ties broken at random.
//! - **One source per attempt**: every block of a piece comes from one peer (or the
//!   origin), so a hash mismatch blames exactly one source. A peer that sends a bad piece
//!   is banned. **Endgame**: when nothing is left to start, a piece may get a second
//!   attempt from another peer; the first verified copy wins, the other is cancelled.
//! - **Origin work split**: a piece no unsnubbed peer has is fetched from the origin by its
//!   *owner* only, the peer whose rendezvous score `SHA-256("SHOAL-RDV-V1\0" || piece
//!   (u32) || peer id)` is highest among the joined peers and ourselves. Everyone else
//!   waits for the owner's `Have`. Only when the LAN as a whole stops making progress
//!   (no piece new to the LAN announced for `origin_stall`: owners dead or stuck) does
//!   an agent fetch pieces it does not own, in its own rendezvous order so that helpers
//!   spread over different pieces. (A per-piece deadline does not work: behind a slow
//!   origin every owner's fetch queues longer than any fixed deadline, and everybody
//!   would fetch everything; the simulator showed 7.6 copies.) Origin fetches start only after `origin_grace` (time to meet the LAN),
//!   and at most `origin_parallel` run at once, so a new release causes no stampede.
//! - **Stalls**: an attempt with no progress for `block_timeout` is abandoned and its
//!   peer snubbed for `snub_time` (not picked, and not counted as a holder).
//! - **Uploads**: up to `upload_slots` peers are unchoked and may keep `grant_window`
//!   requests outstanding; requests beyond that are rejected, never queued unboundedly.

mod bitfield;
mod rng;
mod tracker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use bitfield::Bitfield;
pub use rng::Rng;
pub use tracker::{PieceSpec, PieceState, Source, Tracker};

use crate::digest::Digest;
use crate::limits::MAX_BLOCK_LEN;
use crate::wire::{BlockRef, Message, PeerId, PieceNumber, RejectReason, StatsSummary};

/// Tunables of the swarm core. Every field has a default fit for a LAN.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Bytes per block request (≤ `MAX_BLOCK_LEN`).
    pub block_len: u32,
    /// Requests we keep outstanding to one peer (capped by the window it grants).
    pub request_window: u16,
    /// Pieces fetched from one peer at a time.
    pub pieces_per_peer: usize,
    /// Peers we unchoke at once.
    pub upload_slots: usize,
    /// Requests an unchoked peer may keep outstanding with us.
    pub grant_window: u16,
    /// An attempt with no progress for this long is abandoned.
    pub block_timeout: Duration,
    /// A peer whose attempt stalled is not used for this long.
    pub snub_time: Duration,
    /// No origin fetch before this long after start (time to discover the LAN).
    pub origin_grace: Duration,
    /// When no piece new to the LAN has appeared for this long, fetch pieces other peers
    /// own from the origin too.
    pub origin_stall: Duration,
    /// Origin fetches in flight at once.
    pub origin_parallel: usize,
    /// An origin fetch unanswered for this long is abandoned.
    pub origin_timeout: Duration,
    /// Longest wait between origin retries after failures.
    pub origin_max_backoff: Duration,
    /// Send a keep-alive after this long without sending.
    pub keepalive: Duration,
    /// Drop a peer silent for this long.
    pub idle_timeout: Duration,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            block_len: 128 * 1024,
            request_window: 16,
            pieces_per_peer: 2,
            upload_slots: 32,
            grant_window: 32,
            block_timeout: Duration::from_secs(10),
            snub_time: Duration::from_secs(30),
            origin_grace: Duration::from_secs(2),
            origin_stall: Duration::from_secs(10),
            origin_parallel: 4,
            origin_timeout: Duration::from_secs(120),
            origin_max_backoff: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Why the core dropped a peer. None of these is fatal to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The peer sent a piece whose hash did not match the index.
    #[error("sent piece {0} with a wrong hash")]
    BadPiece(u32),
    /// The peer said nothing for too long.
    #[error("silent for too long")]
    Idle,
    /// The peer is banned.
    #[error("banned")]
    Banned,
}

/// Something the agent must do.
#[derive(Debug, PartialEq, Eq)]
pub enum SwarmEvent {
    /// Fetch piece `piece` from the origin (an HTTP range request) and report with
    /// [`Swarm::handle_origin_piece`].
    FetchOrigin {
        /// The piece.
        piece: PieceNumber,
    },
    /// A piece verified against the index: store it (flushed) before announcing it in
    /// stats; the core already counts it as held.
    PieceVerified {
        /// The piece.
        piece: PieceNumber,
        /// Its bytes.
        data: Vec<u8>,
        /// Where it came from.
        source: Source,
    },
    /// Send `peer` a `Piece` message with this block, read from the store.
    Upload {
        /// The requester.
        peer: PeerId,
        /// The block.
        block: BlockRef,
    },
    /// Close the connection to `peer`; with `ban`, refuse it from now on.
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: PeerError,
        /// Whether it is banned.
        ban: bool,
    },
    /// The origin sent a piece that failed verification, or failed to answer.
    OriginFailed {
        /// The piece.
        piece: PieceNumber,
        /// Whether the bytes were wrong (rather than missing).
        corrupt: bool,
    },
    /// A peer handed over a manifest: verify it and possibly switch releases.
    ManifestOffered {
        /// The peer.
        peer: PeerId,
        /// The manifest bytes.
        bytes: Vec<u8>,
    },
    /// A peer's progress report.
    PeerStats {
        /// The peer.
        peer: PeerId,
        /// What it said.
        summary: StatsSummary,
    },
    /// Every piece is held (emitted once).
    Complete,
}

/// Byte counters of this swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Verified piece bytes received from peers.
    pub from_peers: u64,
    /// Verified piece bytes received from the origin.
    pub from_origin: u64,
    /// Block bytes we agreed to upload.
    pub uploaded: u64,
    /// Bytes received and thrown away (bad pieces, cancelled duplicates, unrequested).
    pub wasted: u64,
}

#[derive(Debug)]
struct Peer {
    have: Bitfield,
    got_map: bool,
    choked_us: bool,
    window: u16,
    /// Requests we sent this peer and that it has not answered.
    outstanding: Vec<BlockRef>,
    /// Pieces with an attempt from this peer (an index over the tracker's states).
    pieces: Vec<u32>,
    unchoked: bool,
    uploads: u16,
    snubbed_until: Duration,
    last_recv: Duration,
    last_sent: Duration,
}

/// The swarm core of one release (see the module docs).
#[derive(Debug)]
pub struct Swarm {
    cfg: SwarmConfig,
    me: PeerId,
    tracker: Tracker,
    peers: BTreeMap<PeerId, Peer>,
    availability: Vec<u32>,
    banned: BTreeSet<PeerId>,
    mine: Vec<bool>,
    rng: Rng,
    started: Duration,
    origin_in_flight: BTreeMap<u32, Duration>,
    origin_retry_at: Duration,
    origin_failures: u32,
    transmits: VecDeque<(PeerId, Message)>,
    events: VecDeque<SwarmEvent>,
    counters: Counters,
    complete_sent: bool,
    /// The latest time passed in: deadlines at or before it are not reported again.
    now: Duration,
    /// When the LAN last made origin progress: a piece nobody had appeared, a peer set
    /// change, or our start.
    lan_progress: Duration,
}

impl Swarm {
    /// A swarm for a release of `pieces` (in piece-number order), with the pieces in
    /// `held` already verified, started at `now`.
    pub fn new(
        cfg: SwarmConfig,
        me: PeerId,
        pieces: Vec<PieceSpec>,
        held: &[bool],
        seed: u64,
        now: Duration,
    ) -> Self {
        let cfg = SwarmConfig {
            block_len: cfg.block_len.clamp(1, MAX_BLOCK_LEN),
            ..cfg
        };
        let n = pieces.len();
        let mut s = Swarm {
            tracker: Tracker::new(pieces, held, cfg.block_len, now),
            cfg,
            me,
            peers: BTreeMap::new(),
            availability: vec![0; n],
            banned: BTreeSet::new(),
            mine: vec![true; n],
            rng: Rng::new(seed),
            started: now,
            origin_in_flight: BTreeMap::new(),
            origin_retry_at: now,
            origin_failures: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            complete_sent: false,
            now,
            lan_progress: now,
        };
        s.recompute_ownership();
        s.check_complete();
        // With no grace the first origin fetches are due now; nothing else would trigger
        // them before the next deadline.
        s.schedule(now);
        s
    }

    /// Our own peer id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The byte counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Pieces held and pieces in the release.
    pub fn progress(&self) -> (u32, u32) {
        (self.tracker.have_count(), self.tracker.len())
    }

    /// Whether piece `p` is held.
    pub fn has(&self, p: u32) -> bool {
        self.tracker.has(p)
    }

    /// The peers joined now.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains(peer)
    }

    /// A peer finished the handshake for this release.
    pub fn handle_joined(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        if self.banned.contains(&peer) || peer == self.me {
            self.events.push_back(SwarmEvent::Disconnect {
                peer,
                reason: PeerError::Banned,
                ban: false,
            });
            return;
        }
        if self.peers.contains_key(&peer) {
            return;
        }
        let unchoked = self.peers.values().filter(|p| p.unchoked).count() < self.cfg.upload_slots;
        self.peers.insert(
            peer,
            Peer {
                have: Bitfield::new(self.tracker.len()),
                got_map: false,
                choked_us: true,
                window: 0,
                outstanding: Vec::new(),
                pieces: Vec::new(),
                unchoked,
                uploads: 0,
                snubbed_until: Duration::ZERO,
                last_recv: now,
                last_sent: now,
            },
        );
        let mut map = Bitfield::new(self.tracker.len());
        for p in 0..self.tracker.len() {
            if self.tracker.has(p) {
                map.set(p);
            }
        }
        self.send(
            peer,
            Message::PieceMap {
                piece_count: map.len(),
                bits: map.as_wire().to_vec(),
            },
            now,
        );
        if unchoked {
            let w = self.cfg.grant_window;
            self.send(peer, Message::Unchoke { max_requests: w }, now);
        }
        self.recompute_ownership();
        self.schedule(now);
    }

    /// The connection to `peer` closed.
    pub fn handle_disconnected(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        self.remove_peer(peer, now);
        self.schedule(now);
    }

    /// A message from `peer` arrived. A protocol violation drops the peer (reported as
    /// a `Disconnect` event).
    pub fn handle_message(&mut self, peer: PeerId, msg: Message, now: Duration) {
        self.now = self.now.max(now);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_recv = now;
        if let Err(e) = self.on_message(peer, msg, now) {
            let ban = matches!(e, PeerError::BadPiece(_));
            self.drop_peer(peer, e, ban, now);
        }
        self.schedule(now);
    }

    /// The origin answered a `FetchOrigin` for `piece`: its bytes, or `None` if the
    /// fetch failed.
    pub fn handle_origin_piece(
        &mut self,
        piece: PieceNumber,
        data: Option<Vec<u8>>,
        now: Duration,
    ) {
        let p = piece.0;
        if self.origin_in_flight.remove(&p).is_none() {
            return;
        }
        let ok = match &data {
            Some(d) => self
                .tracker
                .spec(p)
                .is_some_and(|s| d.len() == s.length as usize && Digest::of(d) == s.digest),
            None => false,
        };
        match data {
            Some(d) if ok => {
                self.origin_failures = 0;
                self.counters.from_origin += d.len() as u64;
                self.finish_piece(p, d, Source::Origin, now);
            }
            other => {
                if let Some(d) = &other {
                    self.counters.wasted += d.len() as u64;
                }
                self.tracker.abort(p, Source::Origin, now);
                self.origin_failures = self.origin_failures.saturating_add(1);
                let backoff = Duration::from_millis(500)
                    .saturating_mul(1 << self.origin_failures.min(16))
                    .min(self.cfg.origin_max_backoff);
                self.origin_retry_at = now + backoff;
                self.events.push_back(SwarmEvent::OriginFailed {
                    piece,
                    corrupt: other.is_some(),
                });
            }
        }
        self.schedule(now);
    }

    /// The agent sent (or gave up sending) an `Upload` block to `peer`.
    pub fn handle_upload_done(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.uploads = p.uploads.saturating_sub(1);
        }
    }

    /// Time passed: stalls, keep-alives, idle peers, origin deadlines.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let stalled: Vec<(PeerId, u32)> = self
            .peers
            .iter()
            .flat_map(|(id, p)| p.pieces.iter().map(move |piece| (*id, *piece)))
            .filter(|(id, piece)| {
                let src = Source::Peer(*id);
                matches!(self.tracker.state(*piece), Some(PieceState::Downloading(a))
                    if a.iter().any(|a| a.source == src
                        && now >= a.last_progress + self.cfg.block_timeout))
            })
            .collect();
        for (id, piece) in stalled {
            self.abandon(id, piece, now);
            if let Some(p) = self.peers.get_mut(&id) {
                p.snubbed_until = now + self.cfg.snub_time;
            }
        }
        let late: Vec<u32> = self
            .origin_in_flight
            .iter()
            .filter(|(_, since)| now >= **since + self.cfg.origin_timeout)
            .map(|(p, _)| *p)
            .collect();
        for p in late {
            self.handle_origin_piece(PieceNumber(p), None, now);
        }
        let idle: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now >= p.last_recv + self.cfg.idle_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.drop_peer(id, PeerError::Idle, false, now);
        }
        let quiet: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| now >= p.last_sent + self.cfg.keepalive)
            .map(|(id, _)| *id)
            .collect();
        for id in quiet {
            self.send(id, Message::KeepAlive, now);
        }
        self.schedule(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Message)> {
        self.transmits.pop_front()
    }

    /// The next thing for the agent to do.
    pub fn poll_event(&mut self) -> Option<SwarmEvent> {
        self.events.pop_front()
    }

    /// When [`Swarm::handle_timeout`] should next be called, if ever. Only deadlines
    /// after the latest time passed in are reported, so a caller never spins.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut t: Option<Duration> = None;
        let now = self.now;
        let mut at = |d: Duration| {
            if d > now {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        for (id, p) in &self.peers {
            at(p.last_sent + self.cfg.keepalive);
            at(p.last_recv + self.cfg.idle_timeout);
            for piece in &p.pieces {
                if let Some(a) = self.attempt(*piece, Source::Peer(*id)) {
                    at(a.last_progress + self.cfg.block_timeout);
                }
            }
            at(p.snubbed_until);
        }
        for since in self.origin_in_flight.values() {
            at(*since + self.cfg.origin_timeout);
        }
        if !self.complete_sent {
            at(self.started + self.cfg.origin_grace);
            at(self.origin_retry_at);
            at(self.lan_progress + self.cfg.origin_stall);
        }
        t
    }

    fn attempt(&self, piece: u32, source: Source) -> Option<&tracker::Attempt> {
        match self.tracker.state(piece)? {
            PieceState::Downloading(a) => a.iter().find(|a| a.source == source),
            _ => None,
        }
    }

    fn send(&mut self, peer: PeerId, msg: Message, now: Duration) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_sent = now;
            self.transmits.push_back((peer, msg));
        }
    }

    fn on_message(&mut self, peer: PeerId, msg: Message, now: Duration) -> Result<(), PeerError> {
        let n = self.tracker.len();
        let got_map = self.peers.get(&peer).is_some_and(|p| p.got_map);
        if !got_map && !matches!(msg, Message::PieceMap { .. } | Message::KeepAlive) {
            return Err(PeerError::Protocol(
                "first message after joining must be PieceMap",
            ));
        }
        match msg {
            Message::Hello(_) | Message::Join { .. } => {
                return Err(PeerError::Protocol("handshake message after joining"));
            }
            Message::PieceMap { piece_count, bits } => {
                if got_map {
                    return Err(PeerError::Protocol("second PieceMap"));
                }
                let map = Bitfield::from_wire(piece_count, &bits)
                    .filter(|m| m.len() == n)
                    .ok_or(PeerError::Protocol("PieceMap does not match the release"))?;
                for i in map.iter() {
                    self.availability[i as usize] += 1;
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.have = map;
                    p.got_map = true;
                }
            }
            Message::Have(PieceNumber(i)) => {
                if i >= n {
                    return Err(PeerError::Protocol("Have names a piece past the release"));
                }
                if let Some(p) = self.peers.get_mut(&peer)
                    && p.have.set(i)
                {
                    if self.availability[i as usize] == 0 && !self.tracker.has(i) {
                        self.lan_progress = now;
                    }
                    self.availability[i as usize] += 1;
                }
            }
            Message::Choke => {
                // Requests to a choking peer are void; its attempts go back to Missing.
                let pieces = self.peers.get_mut(&peer).map(|p| {
                    p.choked_us = true;
                    p.outstanding.clear();
                    p.pieces.clone()
                });
                for piece in pieces.unwrap_or_default() {
                    self.abandon(peer, piece, now);
                }
            }
            Message::Unchoke { max_requests } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.choked_us = false;
                    p.window = max_requests;
                }
            }
            Message::Request(block) => self.on_request(peer, block, now)?,
            Message::Cancel(_) => {
                // Blocks already handed to the agent are sent anyway; they are small.
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_piece(peer, piece.0, offset, data, now)?,
            Message::Reject { block, reason } => {
                let was_ours = self.peers.get_mut(&peer).is_some_and(|p| {
                    let before = p.outstanding.len();
                    p.outstanding.retain(|b| *b != block);
                    before != p.outstanding.len()
                });
                if was_ours {
                    if reason == RejectReason::NotHeld {
                        return Err(PeerError::Protocol("rejected a piece it announced"));
                    }
                    self.abandon(peer, block.piece.0, now);
                }
            }
            Message::KeepAlive => {}
            Message::ManifestOffer(bytes) => {
                self.events
                    .push_back(SwarmEvent::ManifestOffered { peer, bytes });
            }
            Message::Stats(summary) => {
                self.events
                    .push_back(SwarmEvent::PeerStats { peer, summary });
            }
        }
        Ok(())
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        block: BlockRef,
        now: Duration,
    ) -> Result<(), PeerError> {
        let p = block.piece.0;
        let Some(spec) = self.tracker.spec(p).copied() else {
            return Err(PeerError::Protocol(
                "Request names a piece past the release",
            ));
        };
        let reason = match self.peers.get(&peer) {
            _ if u64::from(block.offset) + u64::from(block.length) > u64::from(spec.length) => {
                Some(RejectReason::Invalid)
            }
            Some(pe) if !pe.unchoked => Some(RejectReason::Choked),
            Some(pe) if pe.uploads >= self.cfg.grant_window => Some(RejectReason::Overloaded),
            _ if !self.tracker.has(p) => Some(RejectReason::NotHeld),
            _ => None,
        };
        if let Some(reason) = reason {
            self.send(peer, Message::Reject { block, reason }, now);
            return Ok(());
        }
        if let Some(pe) = self.peers.get_mut(&peer) {
            pe.uploads += 1;
        }
        self.counters.uploaded += u64::from(block.length);
        self.events.push_back(SwarmEvent::Upload { peer, block });
        Ok(())
    }

    fn on_piece(
        &mut self,
        peer: PeerId,
        p: u32,
        offset: u32,
        data: Vec<u8>,
        now: Duration,
    ) -> Result<(), PeerError> {
        let block = BlockRef {
            piece: PieceNumber(p),
            offset,
            length: data.len() as u32,
        };
        let requested = self.peers.get_mut(&peer).is_some_and(|pe| {
            let before = pe.outstanding.len();
            pe.outstanding.retain(|b| *b != block);
            before != pe.outstanding.len()
        });
        let block_len = self.cfg.block_len;
        let Some(a) = self
            .tracker
            .attempt_mut(p, Source::Peer(peer))
            .filter(|_| requested)
        else {
            // Cancelled or unrequested: drop it.
            self.counters.wasted += data.len() as u64;
            return Ok(());
        };
        let b = (offset / block_len) as usize;
        let end = offset as usize + data.len();
        if !offset.is_multiple_of(block_len)
            || end > a.buf.len()
            || a.received.get(b) != Some(&false)
        {
            return Err(PeerError::Protocol("Piece data does not match the request"));
        }
        a.buf[offset as usize..end].copy_from_slice(&data);
        a.received[b] = true;
        a.last_progress = now;
        if !a.complete() {
            return Ok(());
        }
        let buf = std::mem::take(&mut a.buf);
        let good = self
            .tracker
            .spec(p)
            .is_some_and(|s| Digest::of(&buf) == s.digest);
        if let Some(pe) = self.peers.get_mut(&peer) {
            pe.pieces.retain(|x| *x != p);
        }
        if !good {
            self.counters.wasted += buf.len() as u64;
            self.tracker.abort(p, Source::Peer(peer), now);
            return Err(PeerError::BadPiece(p));
        }
        self.counters.from_peers += buf.len() as u64;
        self.finish_piece(p, buf, Source::Peer(peer), now);
        Ok(())
    }

    /// A verified piece: record it, cancel duplicates, announce it.
    fn finish_piece(&mut self, p: u32, data: Vec<u8>, source: Source, now: Duration) {
        for other in self.tracker.complete(p) {
            match other {
                Source::Peer(id) if other != source => self.cancel_attempt(id, p, now),
                Source::Origin if other != source => {
                    // The origin response will be ignored when it arrives.
                    self.origin_in_flight.remove(&p);
                }
                _ => {}
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.send(id, Message::Have(PieceNumber(p)), now);
        }
        self.events.push_back(SwarmEvent::PieceVerified {
            piece: PieceNumber(p),
            data,
            source,
        });
        self.check_complete();
    }

    fn check_complete(&mut self) {
        if !self.complete_sent && self.tracker.have_count() == self.tracker.len() {
            self.complete_sent = true;
            self.events.push_back(SwarmEvent::Complete);
        }
    }

    /// Withdraws our requests for piece `p` from `peer` (sending `Cancel`s).
    fn cancel_attempt(&mut self, peer: PeerId, p: u32, now: Duration) {
        let cancels: Vec<BlockRef> = match self.peers.get_mut(&peer) {
            Some(pe) => {
                pe.pieces.retain(|x| *x != p);
                let (c, keep) = pe.outstanding.drain(..).partition(|b| b.piece.0 == p);
                pe.outstanding = keep;
                c
            }
            None => Vec::new(),
        };
        for b in cancels {
            self.send(peer, Message::Cancel(b), now);
        }
    }

    /// Gives up `peer`'s attempt on `p`; the piece returns to Missing if it was alone.
    fn abandon(&mut self, peer: PeerId, p: u32, now: Duration) {
        self.cancel_attempt(peer, p, now);
        self.tracker.abort(p, Source::Peer(peer), now);
    }

    fn drop_peer(&mut self, peer: PeerId, reason: PeerError, ban: bool, now: Duration) {
        if ban {
            self.banned.insert(peer);
        }
        self.remove_peer(peer, now);
        self.events
            .push_back(SwarmEvent::Disconnect { peer, reason, ban });
    }

    fn remove_peer(&mut self, peer: PeerId, now: Duration) {
        let Some(pe) = self.peers.remove(&peer) else {
            return;
        };
        for i in pe.have.iter() {
            self.availability[i as usize] -= 1;
        }
        for p in pe.pieces {
            self.tracker.abort(p, Source::Peer(peer), now);
        }
        self.transmits.retain(|(to, _)| *to != peer);
        // Hand its upload slot to a choked peer.
        if pe.unchoked
            && let Some(next) = self
                .peers
                .iter()
                .find(|(_, p)| !p.unchoked)
                .map(|(id, _)| *id)
        {
            if let Some(p) = self.peers.get_mut(&next) {
                p.unchoked = true;
            }
            let w = self.cfg.grant_window;
            self.send(next, Message::Unchoke { max_requests: w }, now);
        }
        self.recompute_ownership();
    }

    /// Rendezvous hashing: which pieces we fetch from the origin first. A change of the
    /// peer set restarts the stall clock: the new owners get their chance.
    fn recompute_ownership(&mut self) {
        self.lan_progress = self.now;
        let mut members: Vec<PeerId> = self.peers.keys().copied().collect();
        members.push(self.me);
        for p in 0..self.tracker.len() {
            let owner = members
                .iter()
                .max_by_key(|id| rendezvous_score(p, id))
                .copied();
            self.mine[p as usize] = owner == Some(self.me);
        }
    }

    /// Starts new attempts and requests (see the module docs for the policy).
    fn schedule(&mut self, now: Duration) {
        if self.complete_sent {
            return;
        }
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        self.rng.shuffle(&mut ids);
        let endgame = !self
            .tracker
            .states()
            .any(|(_, s)| matches!(s, PieceState::Missing { .. }));
        for id in ids {
            self.fill_peer(id, endgame, now);
        }
        self.start_origin(now);
    }

    fn fill_peer(&mut self, id: PeerId, endgame: bool, now: Duration) {
        let Some(pe) = self.peers.get(&id) else {
            return;
        };
        if pe.choked_us || !pe.got_map || pe.snubbed_until > now {
            return;
        }
        while self
            .peers
            .get(&id)
            .is_some_and(|p| p.pieces.len() < self.cfg.pieces_per_peer)
        {
            let Some(p) = self.pick_for(id, endgame) else {
                break;
            };
            self.tracker.start(p, Source::Peer(id), now);
            if let Some(pe) = self.peers.get_mut(&id) {
                pe.pieces.push(p);
            }
        }
        loop {
            let Some(pe) = self.peers.get(&id) else {
                return;
            };
            let limit = usize::from(pe.window.min(self.cfg.request_window));
            if pe.outstanding.len() >= limit {
                return;
            }
            let pieces = pe.pieces.clone();
            let mut sent = false;
            for p in pieces {
                let blocks = self.tracker.blocks(p);
                let Some(a) = self.tracker.attempt_mut(p, Source::Peer(id)) else {
                    continue;
                };
                if a.next_block >= blocks {
                    continue;
                }
                let b = a.next_block;
                a.next_block += 1;
                let (offset, length) = self.tracker.block(p, b);
                let block = BlockRef {
                    piece: PieceNumber(p),
                    offset,
                    length,
                };
                if let Some(pe) = self.peers.get_mut(&id) {
                    pe.outstanding.push(block);
                }
                self.send(id, Message::Request(block), now);
                sent = true;
                break;
            }
            if !sent {
                return;
            }
        }
    }

    /// The rarest piece `id` can give us, ties broken at random; in endgame also pieces
    /// already being fetched from one other source.
    fn pick_for(&mut self, id: PeerId, endgame: bool) -> Option<u32> {
        let pe = self.peers.get(&id)?;
        let mut best: Vec<u32> = Vec::new();
        let mut best_avail = u32::MAX;
        for (p, state) in self.tracker.states() {
            let eligible = match state {
                PieceState::Missing { .. } => true,
                PieceState::Downloading(a) => {
                    endgame && a.len() == 1 && a[0].source != Source::Peer(id)
                }
                PieceState::Have => false,
            };
            if !eligible || !pe.have.get(p) {
                continue;
            }
            let avail = self.availability[p as usize];
            if avail < best_avail {
                best_avail = avail;
                best.clear();
            }
            if avail == best_avail {
                best.push(p);
            }
        }
        if best.is_empty() {
            return None;
        }
        let i = self.rng.below(best.len());
        Some(best[i])
    }

    fn start_origin(&mut self, now: Duration) {
        if now < self.started + self.cfg.origin_grace || now < self.origin_retry_at {
            return;
        }
        let free = self
            .cfg
            .origin_parallel
            .saturating_sub(self.origin_in_flight.len());
        if free == 0 {
            return;
        }
        let stalled = now >= self.lan_progress + self.cfg.origin_stall;
        // Missing pieces no usable peer holds: ours first (in piece order, friendly to
        // the origin's read-ahead); when the LAN stalls, others' too, in our own
        // rendezvous order so that helping agents pick different pieces.
        let mut ours = Vec::new();
        let mut others = Vec::new();
        for (p, state) in self.tracker.states() {
            if !matches!(state, PieceState::Missing { .. }) {
                continue;
            }
            let held_nearby = self
                .peers
                .values()
                .any(|pe| pe.have.get(p) && pe.snubbed_until <= now);
            if held_nearby {
                continue;
            }
            if self.mine[p as usize] {
                ours.push(p);
            } else if stalled {
                others.push(p);
            }
        }
        let me = self.me;
        others.sort_by_key(|p| std::cmp::Reverse(rendezvous_score(*p, &me)));
        let picks: Vec<u32> = ours.into_iter().chain(others).take(free).collect();
        for p in picks {
            self.tracker.start(p, Source::Origin, now);
            self.origin_in_flight.insert(p, now);
            self.events.push_back(SwarmEvent::FetchOrigin {
                piece: PieceNumber(p),
            });
        }
    }

    /// Checks the core's internal consistency; the simulator calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut avail = vec![0u32; self.availability.len()];
        for (id, pe) in &self.peers {
            for i in pe.have.iter() {
                avail[i as usize] += 1;
            }
            if pe.pieces.len() > self.cfg.pieces_per_peer {
                return Err(format!("{id:?} has {} pieces in flight", pe.pieces.len()));
            }
            for p in &pe.pieces {
                if self.attempt(*p, Source::Peer(*id)).is_none() {
                    return Err(format!("{id:?} lists piece {p} with no attempt"));
                }
            }
            for b in &pe.outstanding {
                if !pe.pieces.contains(&b.piece.0) {
                    return Err(format!(
                        "{id:?} has a request for untracked piece {}",
                        b.piece.0
                    ));
                }
            }
        }
        if avail != self.availability {
            return Err("availability counts disagree with peer maps".into());
        }
        let mut have = 0;
        for (p, state) in self.tracker.states() {
            match state {
                PieceState::Have => have += 1,
                PieceState::Downloading(attempts) => {
                    if attempts.is_empty() || attempts.len() > 2 {
                        return Err(format!("piece {p} has {} attempts", attempts.len()));
                    }
                    for a in attempts {
                        match a.source {
                            Source::Origin if !self.origin_in_flight.contains_key(&p) => {
                                return Err(format!("piece {p}: origin attempt not in flight"));
                            }
                            Source::Peer(id)
                                if !self
                                    .peers
                                    .get(&id)
                                    .is_some_and(|pe| pe.pieces.contains(&p)) =>
                            {
                                return Err(format!("piece {p}: attempt by unknown {id:?}"));
                            }
                            _ => {}
                        }
                    }
                }
                PieceState::Missing { .. } => {}
            }
        }
        if have != self.tracker.have_count() {
            return Err("have count is off".into());
        }
        if self.origin_in_flight.len() > self.cfg.origin_parallel {
            return Err("too many origin fetches in flight".into());
        }
        Ok(())
    }
}

/// The rendezvous score of `peer` for piece `p` (highest wins the origin fetch).
pub fn rendezvous_score(p: u32, peer: &PeerId) -> u64 {
    let d = Digest::of_parts(&[b"SHOAL-RDV-V1\0", &p.to_be_bytes(), &peer.0]);
    u64::from_be_bytes(d.0[..8].try_into().unwrap_or_default())
}
