//! The core's rules against floods from one peer (PROTOCOL.md §6.3): an allowance of
//! messages that carry nothing (a token bucket per peer), the withdrawn requests whose
//! late blocks are dropped quietly, the limit on other unasked blocks, and the cap on
//! trust documents per connection. `inbound` applies them as messages arrive.

use std::time::Duration;

use super::{Peer, Swarm};
use crate::wire::{BlockRef, Message};

/// Messages that carry nothing new a peer may send at most: [`NOISE_BURST`] at once,
/// then one per [`NOISE_REFILL`]. Noise is a `KeepAlive`, a `Have` of a piece the peer
/// announced before, a `Stats` sooner than 5 s after its last, a repeated `Choke` or
/// `Unchoke`, a `Cancel` of nothing queued or being sent, a `Reject` of nothing
/// outstanding or withdrawn, and a `ManifestOffer` (PROTOCOL.md §6.3).
/// An honest peer sends a `KeepAlive` after 30 s of silence, a `Have` once per piece
/// and a `Stats` every 10 s, so it never comes near; a peer that floods them (an
/// independent check's 10–30 s bursts delayed downloads until the idle close) is closed
/// once it has spent the burst.
pub const NOISE_BURST: u32 = 32;

/// See [`NOISE_BURST`].
pub const NOISE_REFILL: Duration = Duration::from_secs(1);

/// `TrustOffer`s a peer may send over a connection: a trust chain, at most as long as
/// an agent keeps (`shoal-agent`: 64 documents), and its anchor.
pub const MAX_TRUST_OFFERS: u16 = 65;

/// A `Stats` sooner than this after the peer's last is noise (they are due every 10 s).
pub const STATS_NOISE: Duration = Duration::from_secs(5);

/// Blocks nobody asked for that a peer may send over a connection, in request windows.
/// A block that crosses our `Cancel` (an endgame duplicate, a timed-out piece) is not
/// one of them: the withdrawn requests are remembered (this many windows of them) and
/// such a block is dropped quietly. Others are a flood: beyond this many, the
/// connection closes. (A peer mixing junk blocks with real ones is caught too: real
/// blocks do not reset the count.)
pub const UNASKED_BLOCKS: u32 = 4;

impl Peer {
    /// Whether `msg` changes nothing (see [`NOISE_BURST`]): a repeated `Choke` or
    /// `Unchoke`, a `Cancel` of nothing queued (but one free per block being sent, which
    /// may cross it), a `Reject` of nothing outstanding (but one crossing our withdrawal
    /// of the request). An honest peer sends a few of these when requests and
    /// withdrawals cross.
    pub(super) fn carries_nothing(&mut self, msg: &Message) -> bool {
        match msg {
            Message::Choke => self.choked_us && self.outstanding.is_empty(),
            Message::Unchoke { max_requests } => !self.choked_us && self.window == *max_requests,
            Message::Cancel(block) if !self.queued.contains(block) => {
                if self.free_cancels > 0 {
                    self.free_cancels -= 1;
                    false
                } else {
                    true
                }
            }
            Message::Cancel(_) => false,
            Message::Reject { block, .. } => {
                !self.outstanding.contains(block) && !self.voided.contains(block)
            }
            _ => false,
        }
    }

    /// Remembers withdrawn requests (at most `keep`, the oldest forgotten first).
    pub(super) fn void(&mut self, blocks: &[BlockRef], keep: usize) {
        self.voided.extend(blocks.iter().copied());
        while self.voided.len() > keep {
            self.voided.pop_front();
        }
    }
}

/// A peer's allowance of noise: a token bucket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Noise {
    tokens: u32,
    since: Duration,
}

impl Noise {
    pub(super) fn new(now: Duration) -> Noise {
        Noise {
            tokens: NOISE_BURST,
            since: now,
        }
    }

    /// Spends one token; `false` when none is left.
    pub(super) fn spend(&mut self, now: Duration) -> bool {
        let refill = now.saturating_sub(self.since).as_millis() / NOISE_REFILL.as_millis();
        if refill > 0 {
            self.tokens = (self.tokens as u128 + refill).min(NOISE_BURST as u128) as u32;
            self.since += NOISE_REFILL * refill as u32;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

impl Swarm {
    /// How many withdrawn requests a peer's record keeps ([`UNASKED_BLOCKS`] windows).
    pub(super) fn voided_kept(&self) -> usize {
        (UNASKED_BLOCKS as usize) * usize::from(self.cfg.request_window.max(1))
    }
}
