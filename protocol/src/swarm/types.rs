//! The swarm core's public vocabulary: its configuration, the events it asks the agent
//! to carry out, why it drops peers, and its byte counters.

use std::time::Duration;

use super::Source;
use crate::wire::{BlockRef, PeerId, PieceNumber, StatsSummary};

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
    /// How often upload slots rotate: peers that want a piece we hold and wait for a
    /// slot take over from the longest-served holders (see `uploads`).
    pub rotate_every: Duration,
    /// How many agents of the LAN fetch from the origin (see `origin_parallel`).
    pub origin_fetchers: usize,
    /// Requests an unchoked peer may keep outstanding with us.
    pub grant_window: u16,
    /// Blocks handed to the agent for upload to one peer (`SwarmEvent::Upload`) and not
    /// yet sent, at most; further accepted requests wait in the core. Once the uplink's
    /// rate is measured, fewer: each unchoked peer's share of about 100 ms of it.
    pub upload_inflight: usize,
    /// Upload bytes per second one slot is worth: once the uplink's rate is measured,
    /// `upload_slots` shrinks to `rate / slot_rate` (at least 2), so a slow uplink
    /// sends a fresh piece to one or two peers quickly rather than to eight slowly.
    pub slot_rate: u64,
    /// An attempt with no progress for this long is abandoned.
    pub block_timeout: Duration,
    /// A peer whose attempt stalled is not used for this long.
    pub snub_time: Duration,
    /// A piece we lack that peers have claimed for this long without it reaching us no
    /// longer holds back its owner's origin fetch (its claimants choke us, or claim what
    /// they never send); helpers may fetch it one `origin_stall` later.
    pub holder_patience: Duration,
    /// A peer whose `Choke`s void our outstanding requests this many times since it last
    /// gave us a verified piece is snubbed.
    pub max_flaps: u8,
    /// At most this long after start without an origin fetch (time to discover the LAN);
    /// see `origin_settle` for the usual, earlier end of the wait.
    pub origin_grace: Duration,
    /// The wait for the LAN ends early once peers have joined and no new one has joined
    /// for this long: discovery has settled, and the origin work can be split.
    pub origin_settle: Duration,
    /// When no piece new to the LAN has appeared for this long, fetch pieces other peers
    /// own from the origin too.
    pub origin_stall: Duration,
    /// Origin fetches the LAN keeps in flight at once: each origin fetcher runs
    /// `ceil(origin_parallel / fetchers)` of them (at least one).
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
            upload_slots: 8,
            rotate_every: Duration::from_millis(500),
            origin_fetchers: 4,
            grant_window: 32,
            upload_inflight: 8,
            slot_rate: 2_500_000,
            block_timeout: Duration::from_secs(10),
            snub_time: Duration::from_secs(30),
            holder_patience: Duration::from_secs(30),
            max_flaps: 3,
            origin_grace: Duration::from_secs(2),
            origin_settle: Duration::from_millis(400),
            origin_stall: Duration::from_secs(10),
            origin_parallel: 8,
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
    /// [`Swarm::handle_origin_piece`](super::Swarm::handle_origin_piece).
    FetchOrigin {
        /// The piece.
        piece: PieceNumber,
    },
    /// A piece whose every block arrived from a peer: hash it (off the caller's hot
    /// path, e.g. on a worker thread) and report with [`Swarm::handle_piece_checked`](super::Swarm::handle_piece_checked)
    /// whether its SHA-256 matches [`Swarm::spec`](super::Swarm::spec). Until then it counts for nothing.
    CheckPiece {
        /// The piece.
        piece: PieceNumber,
        /// Who sent it.
        source: Source,
        /// Its bytes.
        data: Vec<u8>,
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
    /// A peer handed over a trust document: adopt it if it is a signed successor of the
    /// newest one we hold (then a manifest signed under it can be verified).
    TrustOffered {
        /// The peer.
        peer: PeerId,
        /// The document's bytes.
        bytes: Vec<u8>,
    },
    /// A peer asks for part of a piece index (of a release we offered it); answer with
    /// `IndexData`, empty if not held.
    IndexRequested {
        /// The peer.
        peer: PeerId,
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// Bytes wanted.
        length: u32,
    },
    /// Part of a piece index arrived (verify the whole file against its manifest).
    IndexReceived {
        /// The peer.
        peer: PeerId,
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// The bytes (empty: the peer does not hold it).
        data: Vec<u8>,
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

/// What the core knows of one joined peer (for status views and diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Pieces it holds.
    pub has: u32,
    /// It chokes us.
    pub chokes_us: bool,
    /// We unchoked it.
    pub unchoked: bool,
    /// Its stalled attempt keeps us from asking it until then.
    pub snubbed_until: Duration,
    /// Pieces we fetch from it now.
    pub fetching: usize,
    /// Our requests it has not answered.
    pub outstanding: usize,
    /// Its requests queued or on their way out.
    pub serving: usize,
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
