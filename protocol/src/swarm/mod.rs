//! The piece-exchange core of one release's swarm, without IO.
//!
//! In the style of `quinn-proto`: the agent feeds inputs through `handle_*` (a peer
//! joined, a message arrived, the origin answered, time passed) and drains outputs
//! through [`Swarm::poll_transmit`] (messages to send), [`Swarm::poll_event`] (fetch from
//! the origin, hash a piece whose blocks all arrived and report the verdict with
//! [`Swarm::handle_piece_checked`], store a verified piece, serve a block, drop a peer) and
//! [`Swarm::poll_timeout`] (when to call [`Swarm::handle_timeout`] next). Time is passed
//! in as a `Duration` since an arbitrary epoch; randomness comes from a seed. The same
//! inputs give the same outputs, which is what the deterministic simulator relies on.
//!
//! Policy, all of it here and nowhere else:
//! - **Rarest first** among pieces a peer can give us, ties broken at random.
//! - **One source per attempt**: every block of a piece comes from one peer (or the
//!   origin), so a hash mismatch blames exactly one source. A peer that sends a bad piece
//!   is banned. **Endgame**: when nothing is left to start, a piece may get a second
//!   attempt from another peer; the first verified copy wins, the other is cancelled. A
//!   peer's attempt is doubled only once it sent nothing for twice the time our
//!   downlink needs for everything we asked for (`endgame_patience`): a slow downlink
//!   that is merely busy does not spend itself on duplicates.
//! - **Origin work split**: a piece no neighbour's claim holds back (`held_back_by_claims`:
//!   claims by peers that are not snubbed, younger than `holder_patience` or from a peer
//!   that serves us) is fetched from the origin by its
//!   *owner* only. The LAN's *members* are the agents we know of ([`Swarm::handle_member`]
//!   for agents discovery reports, and every joined peer) and ourselves; the 4
//!   (`origin_fetchers`) with the highest [`fetcher_score`] are the release's origin
//!   fetchers (an agent on a slow link marks its id *light* and ranks below every other:
//!   [`is_light`]), and a piece's owner is the fetcher whose rendezvous score
//!   `SHA-256("SHOAL-RDV-V1\0" || piece (u32) || peer id)` is highest. Members need not be
//!   connected, so a LAN larger than one agent's peer set still fetches each piece about
//!   once. Everyone else waits for the piece to reach a neighbour. Only when no piece new
//!   to our neighbours is announced for `origin_stall` (owners dead or stuck) does an
//!   agent fetch pieces it does not own, in its own rendezvous order so that helpers
//!   spread over different pieces. (A per-piece deadline does not work: behind a slow
//!   origin every owner's fetch queues longer than any fixed deadline, and everybody
//!   would fetch everything; the simulator showed 7.6 copies.) Origin fetches start once
//!   the LAN is met: when members have appeared and none has for `origin_settle`, or
//!   after `origin_grace` at most. The LAN keeps about `origin_parallel` fetches in
//!   flight (each fetcher its share), so a new release causes no stampede.
//! - **Stalls**: an attempt with no progress for `block_timeout` is abandoned and its
//!   peer snubbed for `snub_time` (not picked, and not counted as a holder).
//! - **Upload slots** (`slots`): up to `upload_slots` peers are unchoked (fewer on a slow
//!   uplink), and the slots rotate to peers that wait; a holder rotated out may finish
//!   the pieces it started before it is choked.
//! - **Uploads** (`uploads`): an unchoked peer may keep `grant_window` requests
//!   outstanding, which wait here and go to the agent a few blocks per peer at a time;
//!   requests beyond the window are rejected, never queued unboundedly.
//! - **Peer sets** (`peerset`): which discovered agents to dial ([`PeerSetConfig`]); the
//!   agent applies it, the core only learns who joined.

mod bitfield;
mod floods;
mod inbound;
mod invariants;
mod membership;
mod peerset;
mod rates;
mod rng;
mod schedule;
mod slots;
mod timers;
mod tracker;
mod types;
mod uploads;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use bitfield::Bitfield;
use floods::Noise;
pub use floods::{MAX_TRUST_OFFERS, NOISE_BURST, NOISE_REFILL, STATS_NOISE, UNASKED_BLOCKS};
pub use peerset::{PeerSetConfig, link_score};
pub use rng::Rng;
pub use schedule::{fetcher_score, is_light, peer_id, rendezvous_score};
pub use tracker::{PieceSpec, PieceState, Source, Tracker};
pub use types::{Counters, PeerError, PeerStatus, SwarmConfig, SwarmEvent};

use crate::digest::Digest;
use crate::limits::MAX_BLOCK_LEN;
use crate::wire::{BlockRef, Message, PeerId, PieceNumber, RejectReason};

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
    /// When `unchoked` last changed (or the peer joined): slots rotate by it.
    slot_since: Duration,
    /// Blocks handed to the agent for upload and not yet sent.
    uploads: u16,
    /// Accepted requests not yet handed to the agent (see `uploads`).
    queued: VecDeque<BlockRef>,
    /// Pieces it started asking us for and has not yet asked for the end of: a slot
    /// winding down lets it finish them.
    started: Vec<u32>,
    /// Since when its slot has been winding down: it may finish `started`, nothing new,
    /// then it is choked.
    winding_down: Option<Duration>,
    /// Requests for new pieces refused while its slot winds down (a requester that
    /// does not heed `Reject(choked)` is choked after `grant_window` of them).
    wind_rejects: u16,
    /// It rejected a request of ours with `Choked` while unchoking us: it is winding
    /// our slot down, so we start no new piece with it until it unchokes us again.
    winding_us_down: bool,
    snubbed_until: Duration,
    /// Chokes that voided our requests since it last gave us a verified piece (see
    /// `max_flaps`).
    flaps: u8,
    /// Rejects of our requests since it last gave us a verified piece (a peer that
    /// answers every request with `Reject` is snubbed after `2 × request_window`).
    refusals: u16,
    /// When it last gave us a piece that verified.
    gave_at: Option<Duration>,
    /// Requests we withdrew (a `Cancel`, a `Choke`), newest last, at most
    /// [`UNASKED_BLOCKS`] windows of them: a block that crosses the withdrawal is
    /// dropped quietly.
    voided: VecDeque<BlockRef>,
    /// Blocks it sent that nobody asked for and that crossed no withdrawal; more than
    /// [`UNASKED_BLOCKS`] windows of them close the connection.
    unasked: u32,
    /// What is left of its allowance for messages that carry nothing (see [`Noise`]).
    noise: Noise,
    /// When its last `Stats` arrived.
    last_stats: Option<Duration>,
    /// `TrustOffer`s it sent (at most [`MAX_TRUST_OFFERS`]).
    trust_offers: u16,
    /// `Cancel`s of nothing queued it may send without spending its noise allowance:
    /// one per block handed to the agent for sending (it may cross the `Cancel`).
    free_cancels: u16,
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
    /// The pieces we hold (the tracker's `Have` states as a set, to compare with peers').
    held: Bitfield,
    banned: BTreeSet<PeerId>,
    /// Agents of the LAN we know of, joined or only discovered (without us): origin work
    /// is split over them.
    /// With each, its [`fetcher_score`] for this release (kept: a LAN of 1,000 agents
    /// would otherwise rehash every member whenever one appears).
    members: BTreeMap<PeerId, u64>,
    /// Per piece: whether we fetch it from the origin (we are its owner among the LAN's
    /// origin fetchers).
    mine: Vec<bool>,
    /// Per piece: the index in `fetchers` of its owner.
    owner: Vec<u8>,
    /// Per fetcher (not us): when a piece it owns last appeared new to us, or when it
    /// became a fetcher.
    fetcher_seen: BTreeMap<PeerId, Duration>,
    /// Members passed over as fetchers for this release: they stopped delivering while
    /// the LAN made progress.
    silent: BTreeSet<PeerId>,
    /// The usual time between two deliveries of one fetcher (a moving average): a
    /// fetcher is late only after `max(origin_stall, 3 × this)` (behind a slow origin
    /// every gap is long).
    delivery_gap: Duration,
    /// Fetchers that delivered at least once (their `fetcher_seen` is a delivery).
    delivered: BTreeSet<PeerId>,
    /// When fetchers were last passed over.
    passed_over_at: Duration,
    /// Members discovery names now (the others are members because they joined, and
    /// stop being members when their connection ends).
    named: BTreeSet<PeerId>,
    /// The LAN's origin fetchers in our view (us included if we are one).
    fetchers: Vec<PeerId>,
    /// Per piece we lack: since when a peer has claimed it (see `holder_patience`).
    claimed: Vec<Option<Duration>>,
    /// The same start times, counted: `poll_timeout` finds the next expiry here instead
    /// of scanning every piece.
    claim_starts: BTreeMap<Duration, u32>,
    /// Per piece: when its last claimant left (a claim within `origin_stall` of that
    /// keeps the old clock; a later one starts a new clock).
    unclaimed_at: Vec<Option<Duration>>,
    /// Pieces that were new to us once (`note_new_piece` counts each once).
    announced: Bitfield,
    /// When upload slots rotate next.
    next_rotation: Duration,
    /// The longest piece's length.
    max_piece: u32,
    /// The peer whose queued request was handed out last (uploads go round-robin).
    upload_turn: Option<PeerId>,
    /// Our measured upload rate.
    uplink: rates::Meter,
    /// Our measured download rate from peers: it bounds our outstanding requests.
    downlink: rates::Meter,
    rng: Rng,
    started: Duration,
    origin_in_flight: BTreeMap<u32, Duration>,
    /// Pieces handed out for hashing (`CheckPiece`) and not yet judged, with how many
    /// copies are out (endgame can finish two): not started again meanwhile.
    checking: BTreeMap<u32, u32>,
    origin_retry_at: Duration,
    origin_failures: u32,
    transmits: VecDeque<(PeerId, Message)>,
    events: VecDeque<SwarmEvent>,
    counters: Counters,
    complete_sent: bool,
    /// Blocks taken into a piece we asked for (see [`Swarm::blocks_accepted`]).
    blocks_accepted: u64,
    /// The latest time passed in: deadlines at or before it are not reported again.
    now: Duration,
    /// When the last peer joined (ends the origin grace early, see `origin_settle`).
    last_join: Option<Duration>,
    /// When the LAN last made origin progress: a piece nobody near us had appeared, or
    /// our start (restarted by a pass-over only if pieces came since the last one).
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
            origin_fetchers: cfg.origin_fetchers.clamp(1, usize::from(u8::MAX)),
            ..cfg
        };
        let n = pieces.len();
        let max_piece = pieces.iter().map(|p| p.length).max().unwrap_or(0);
        let mut have = Bitfield::new(n as u32);
        for (i, h) in held.iter().take(n).enumerate() {
            if *h {
                have.set(i as u32);
            }
        }
        let mut s = Swarm {
            tracker: Tracker::new(pieces, held, cfg.block_len, now),
            cfg,
            me,
            peers: BTreeMap::new(),
            availability: vec![0; n],
            held: have,
            banned: BTreeSet::new(),
            members: BTreeMap::new(),
            mine: vec![true; n],
            owner: vec![0; n],
            fetcher_seen: BTreeMap::new(),
            silent: BTreeSet::new(),
            delivery_gap: Duration::ZERO,
            delivered: BTreeSet::new(),
            passed_over_at: now,
            named: BTreeSet::new(),
            fetchers: Vec::new(),
            claimed: vec![None; n],
            claim_starts: BTreeMap::new(),
            unclaimed_at: vec![None; n],
            announced: Bitfield::new(n as u32),
            next_rotation: now,
            max_piece,
            upload_turn: None,
            uplink: rates::Meter::default(),
            downlink: rates::Meter::default(),
            rng: Rng::new(seed),
            started: now,
            origin_in_flight: BTreeMap::new(),
            checking: BTreeMap::new(),
            origin_retry_at: now,
            origin_failures: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            complete_sent: false,
            blocks_accepted: 0,
            now,
            last_join: None,
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

    /// Blocks from peers taken into a piece we asked for, so far: a transfer that
    /// watches it grow knows peers are still delivering (a block nobody asked for, or
    /// one refused, does not count).
    pub fn blocks_accepted(&self) -> u64 {
        self.blocks_accepted
    }

    /// The release's origin fetchers as this agent sees them (us included if we are
    /// one), highest score first.
    pub fn origin_fetchers(&self) -> &[PeerId] {
        &self.fetchers
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

    /// What we know of a joined peer.
    pub fn peer_status(&self, peer: &PeerId) -> Option<PeerStatus> {
        let pe = self.peers.get(peer)?;
        Some(PeerStatus {
            has: pe.have.count(),
            chokes_us: pe.choked_us,
            unchoked: pe.unchoked,
            snubbed_until: pe.snubbed_until,
            fetching: pe.pieces.len(),
            outstanding: pe.outstanding.len(),
            serving: usize::from(pe.uploads) + pe.queued.len(),
        })
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains(peer)
    }

    /// A message from `peer` arrived. A protocol violation drops the peer (reported as
    /// a `Disconnect` event).
    pub fn handle_message(&mut self, peer: PeerId, msg: Message, now: Duration) {
        self.now = self.now.max(now);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_recv = now;
        // A message that changes nothing spends the peer's noise allowance.
        let nothing = p.carries_nothing(&msg);
        let handled = if nothing {
            self.noise(peer, now)
        } else {
            Ok(())
        }
        .and_then(|()| self.on_message(peer, msg, now));
        if let Err(e) = handled {
            let ban = matches!(e, PeerError::BadPiece(_));
            self.drop_peer(peer, e, ban, now);
        }
        // A request, `Cancel` or `Have` may have ended a slot's wind-down.
        self.end_wind_downs(now);
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
                self.note_own_delivery(now);
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

    /// The agent hashed a piece it was handed in [`SwarmEvent::CheckPiece`]: `good` when
    /// its SHA-256 matched the piece's [`PieceSpec`]. A good piece is held (unless
    /// another copy won meanwhile); a bad one is thrown away and its sender banned.
    pub fn handle_piece_checked(
        &mut self,
        piece: PieceNumber,
        source: Source,
        data: Vec<u8>,
        good: bool,
        now: Duration,
    ) {
        self.now = self.now.max(now);
        let p = piece.0;
        self.end_check(p);
        let expected = self
            .tracker
            .spec(p)
            .is_some_and(|s| s.length as usize == data.len());
        if good && expected && !self.tracker.has(p) {
            self.counters.from_peers += data.len() as u64;
            if let Source::Peer(id) = source
                && let Some(pe) = self.peers.get_mut(&id)
            {
                // It gives: what it refused before is forgiven, and its claims hold
                // pieces back a while longer (`held_back_by_claims`).
                pe.flaps = 0;
                pe.refusals = 0;
                pe.gave_at = Some(now);
            }
            self.finish_piece(p, data, source, now);
        } else {
            self.counters.wasted += data.len() as u64;
            if !good && let Source::Peer(id) = source {
                // Also when it has left already: the agent bans its address too.
                self.drop_peer(id, PeerError::BadPiece(p), true, now);
            }
        }
        self.schedule(now);
    }

    /// A `CheckPiece` whose verdict will never come (the hashing task was lost): the
    /// piece may be fetched again; nobody is blamed.
    pub fn handle_piece_check_lost(&mut self, piece: PieceNumber, now: Duration) {
        self.now = self.now.max(now);
        self.end_check(piece.0);
        self.schedule(now);
    }

    fn end_check(&mut self, p: u32) {
        if let Some(n) = self.checking.get_mut(&p) {
            *n -= 1;
            if *n == 0 {
                self.checking.remove(&p);
            }
        }
    }

    /// The expected length and SHA-256 of piece `p`.
    pub fn spec(&self, p: PieceNumber) -> Option<PieceSpec> {
        self.tracker.spec(p.0).copied()
    }

    /// The agent sent (or gave up sending) an `Upload` block to `peer`.
    pub fn handle_upload_done(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.uploads = p.uploads.saturating_sub(1);
        }
        // The uplink counts as busy only while two peers or more have blocks waiting: one
        // slow reader must not make it look slow (its slots would shrink for everyone).
        let waiting = self
            .peers
            .values()
            .filter(|p| p.uploads > 0 || !p.queued.is_empty())
            .count();
        self.uplink
            .done(u64::from(self.cfg.block_len), waiting >= 2, now);
        self.serve_uploads();
        self.end_wind_downs(now);
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Message)> {
        self.transmits.pop_front()
    }

    /// The next thing for the agent to do.
    pub fn poll_event(&mut self) -> Option<SwarmEvent> {
        self.events.pop_front()
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

    /// A verified piece: record it, cancel duplicates, announce it.
    fn finish_piece(&mut self, p: u32, data: Vec<u8>, source: Source, now: Duration) {
        self.held.set(p);
        if let Some(t) = self.claimed[p as usize].take() {
            self.unclaim(t);
        }
        for other in self.tracker.complete(p) {
            match other {
                // A peer's verified attempt ended before its hash was checked, so any
                // peer attempt still open, the same peer's included, is a duplicate.
                Source::Peer(id) => self.cancel_attempt(id, p, now),
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
        let keep = self.voided_kept();
        let cancels: Vec<BlockRef> = match self.peers.get_mut(&peer) {
            Some(pe) => {
                pe.pieces.retain(|x| *x != p);
                let (c, rest): (Vec<BlockRef>, Vec<BlockRef>) =
                    pe.outstanding.drain(..).partition(|b| b.piece.0 == p);
                pe.outstanding = rest;
                pe.void(&c, keep);
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
}
