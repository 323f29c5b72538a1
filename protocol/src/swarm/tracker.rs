//! The piece tracker: exactly one state per piece, in one place.
//!
//! A piece is `Missing`, `Downloading` (one attempt, or two in endgame, each from a
//! single source so a bad piece blames exactly one source) or `Have` (hash verified).
//! Every transition goes through this module; the rest of the core reads states and asks
//! for transitions, it never keeps a second copy of "what is in flight". One exception:
//! a piece whose bytes are out for hashing (`SwarmEvent::CheckPiece`) is `Missing` here
//! and counted in the core's `checking` map until the verdict comes back.

use std::time::Duration;

use crate::digest::Digest;
use crate::wire::PeerId;

/// Where an attempt fetches a piece from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A LAN peer.
    Peer(PeerId),
    /// The vendor's origin.
    Origin,
}

/// One source fetching one whole piece.
#[derive(Debug)]
pub struct Attempt {
    /// Where from.
    pub source: Source,
    /// When it started.
    pub started: Duration,
    /// When the last byte (or the start) arrived: a stall is measured from here.
    pub last_progress: Duration,
    /// Assembled bytes (peer attempts only; the origin hands over the whole piece).
    pub buf: Vec<u8>,
    /// Per block: received.
    pub received: Vec<bool>,
    /// Next block to request.
    pub next_block: u32,
}

impl Attempt {
    /// Whether every block arrived.
    pub fn complete(&self) -> bool {
        self.received.iter().all(|r| *r)
    }
}

/// The state of one piece.
#[derive(Debug)]
pub enum PieceState {
    /// Not held and not being fetched; `since` is when it became missing (start, or the
    /// end of a failed attempt) and drives the origin stall deadline.
    Missing {
        /// When it became missing.
        since: Duration,
    },
    /// Being fetched by one attempt (two in endgame), each from a different source.
    Downloading(Vec<Attempt>),
    /// Verified and stored.
    Have,
}

/// A piece's fixed facts from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceSpec {
    /// Length in bytes.
    pub length: u32,
    /// SHA-256 of its bytes.
    pub digest: Digest,
}

/// All pieces of a release and their states.
#[derive(Debug)]
pub struct Tracker {
    specs: Vec<PieceSpec>,
    states: Vec<PieceState>,
    block_len: u32,
    have: u32,
}

impl Tracker {
    /// A tracker whose pieces in `held` are already verified (resumed downloads, delta).
    pub fn new(specs: Vec<PieceSpec>, held: &[bool], block_len: u32, now: Duration) -> Self {
        let states: Vec<PieceState> = (0..specs.len())
            .map(|i| {
                if held.get(i).copied().unwrap_or(false) {
                    PieceState::Have
                } else {
                    PieceState::Missing { since: now }
                }
            })
            .collect();
        let have = states
            .iter()
            .filter(|s| matches!(s, PieceState::Have))
            .count() as u32;
        Tracker {
            specs,
            states,
            block_len,
            have,
        }
    }

    /// Number of pieces.
    pub fn len(&self) -> u32 {
        self.specs.len() as u32
    }

    /// Whether the release has no pieces.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Pieces verified.
    pub fn have_count(&self) -> u32 {
        self.have
    }

    /// A piece's spec.
    pub fn spec(&self, p: u32) -> Option<&PieceSpec> {
        self.specs.get(p as usize)
    }

    /// A piece's state.
    pub fn state(&self, p: u32) -> Option<&PieceState> {
        self.states.get(p as usize)
    }

    /// Blocks in piece `p`.
    pub fn blocks(&self, p: u32) -> u32 {
        self.spec(p)
            .map_or(0, |s| s.length.div_ceil(self.block_len))
    }

    /// Offset and length of block `b` of piece `p`.
    pub fn block(&self, p: u32, b: u32) -> (u32, u32) {
        let len = self.spec(p).map_or(0, |s| s.length);
        let off = b * self.block_len;
        (off, self.block_len.min(len.saturating_sub(off)))
    }

    /// Whether piece `p` is held.
    pub fn has(&self, p: u32) -> bool {
        matches!(self.state(p), Some(PieceState::Have))
    }

    /// Starts an attempt on `p` from `source` (Missing → Downloading, or a second
    /// attempt in endgame). Returns false if `p` is held or `source` already tries it.
    pub fn start(&mut self, p: u32, source: Source, now: Duration) -> bool {
        let blocks = self.blocks(p) as usize;
        let with_buf = matches!(source, Source::Peer(_));
        let len = self.spec(p).map_or(0, |s| s.length) as usize;
        let attempt = Attempt {
            source,
            started: now,
            last_progress: now,
            buf: if with_buf { vec![0; len] } else { Vec::new() },
            received: vec![false; if with_buf { blocks } else { 0 }],
            next_block: 0,
        };
        let Some(state) = self.states.get_mut(p as usize) else {
            return false;
        };
        match state {
            PieceState::Missing { .. } => {
                *state = PieceState::Downloading(vec![attempt]);
                true
            }
            PieceState::Downloading(attempts) if attempts.iter().all(|a| a.source != source) => {
                attempts.push(attempt);
                true
            }
            _ => false,
        }
    }

    /// The attempt on `p` by `source`, if any.
    pub fn attempt_mut(&mut self, p: u32, source: Source) -> Option<&mut Attempt> {
        match self.states.get_mut(p as usize)? {
            PieceState::Downloading(a) => a.iter_mut().find(|a| a.source == source),
            _ => None,
        }
    }

    /// Ends the attempt on `p` by `source`; the piece goes back to Missing if it was the
    /// only one.
    pub fn abort(&mut self, p: u32, source: Source, now: Duration) {
        if let Some(state) = self.states.get_mut(p as usize)
            && let PieceState::Downloading(attempts) = state
        {
            attempts.retain(|a| a.source != source);
            if attempts.is_empty() {
                *state = PieceState::Missing { since: now };
            }
        }
    }

    /// Marks `p` verified; returns the sources of the other attempts that must be
    /// cancelled.
    pub fn complete(&mut self, p: u32) -> Vec<Source> {
        let Some(state) = self.states.get_mut(p as usize) else {
            return Vec::new();
        };
        let others = match std::mem::replace(state, PieceState::Have) {
            PieceState::Downloading(a) => a.into_iter().map(|a| a.source).collect(),
            PieceState::Have => return Vec::new(),
            PieceState::Missing { .. } => Vec::new(),
        };
        self.have += 1;
        others
    }

    /// Every piece's index and state.
    pub fn states(&self) -> impl Iterator<Item = (u32, &PieceState)> {
        self.states.iter().enumerate().map(|(i, s)| (i as u32, s))
    }
}
