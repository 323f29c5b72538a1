//! Upload slots: which peers may request from us, and how the slots rotate.
//!
//! At most `upload_slots` peers are unchoked at once. A peer *waits* when it is choked
//! and lacks a piece we hold (we know its `PieceMap` and `Have`s). Every `rotate_every`,
//! while someone waits:
//! - a slot held by a peer that lacks nothing we hold is handed to the longest-waiting
//!   peer at once;
//! - then up to a quarter of the slots (at least one) go from the holders served longest
//!   (at least `rotate_every`, and on a slow uplink long enough for two whole pieces) to
//!   the peers that waited longest.
//!
//! So with `W` waiting peers and `S` slots, a waiting peer is unchoked within about
//! `ceil(W / ceil(S / 4)) × rotate_every`, and no peer starves however large the LAN.
//! A slot freed by a peer leaving goes to the longest-waiting peer at once; one freed
//! because its holder needs nothing more, at the next rotation.

use super::*;

/// The upload rate, measured over periods when uploads were waiting to go out (an idle
/// uplink says nothing about its capacity).
#[derive(Debug, Default)]
pub(super) struct Uplink {
    busy_from: Option<Duration>,
    busy: Duration,
    bytes: u64,
    rate: Option<f64>,
}

impl Uplink {
    /// Blocks are on their way out from `now` (if they were not already).
    fn busy(&mut self, now: Duration) {
        self.busy_from.get_or_insert(now);
    }

    /// A block of `bytes` went out at `now`; `still_busy` if more wait.
    pub(super) fn done(&mut self, bytes: u64, still_busy: bool, now: Duration) {
        let Some(from) = self.busy_from else {
            return;
        };
        self.bytes += bytes;
        let mut busy = self.busy + now.saturating_sub(from);
        if still_busy {
            self.busy_from = Some(now);
        } else {
            self.busy_from = None;
        }
        if busy >= Duration::from_millis(500) {
            let sample = self.bytes as f64 / busy.as_secs_f64();
            self.rate = Some(self.rate.map_or(sample, |r| (r + sample) / 2.0));
            self.bytes = 0;
            busy = Duration::ZERO;
        }
        self.busy = busy;
    }

    /// Bytes per second, once measured.
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }
}

impl Swarm {
    /// Whether `pe` lacks a piece we hold.
    fn lacks_ours(&self, pe: &Peer) -> bool {
        pe.got_map && self.held.has_any_not_in(&pe.have)
    }

    /// Whether the slots need a rotation: a choked peer lacks a piece we hold, or more
    /// peers are unchoked than the uplink has slots for.
    pub(super) fn slots_need_rotation(&self) -> bool {
        self.peers
            .values()
            .any(|pe| !pe.unchoked && self.lacks_ours(pe))
            || self.peers.values().filter(|p| p.unchoked).count() > self.upload_slots()
    }

    /// Waiting peers, longest-waiting first.
    fn waiting(&self) -> Vec<PeerId> {
        let mut w: Vec<(Duration, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, pe)| !pe.unchoked && self.lacks_ours(pe))
            .map(|(id, pe)| (pe.slot_since, *id))
            .collect();
        w.sort_unstable();
        w.into_iter().map(|(_, id)| id).collect()
    }

    fn set_unchoked(&mut self, id: PeerId, unchoked: bool, now: Duration) {
        let Some(pe) = self.peers.get_mut(&id) else {
            return;
        };
        if pe.unchoked == unchoked {
            return;
        }
        pe.unchoked = unchoked;
        pe.slot_since = now;
        if !unchoked {
            // Its requests are void once it is choked (PROTOCOL.md: Choke).
            pe.queued.clear();
        }
        let msg = if unchoked {
            Message::Unchoke {
                max_requests: self.cfg.grant_window,
            }
        } else {
            Message::Choke
        };
        self.send(id, msg, now);
    }

    /// Hands queued requests to the agent, one block per peer in turn, while the peer
    /// has fewer than the inflight limit on their way out. The limit is per
    /// peer, so a peer that stops reading holds up only its own uploads; and a short
    /// queue in the agent keeps a slow uplink from holding seconds of data in front of
    /// our own requests on the same connections.
    pub(super) fn serve_uploads(&mut self) {
        let limit = self.upload_inflight_limit();
        let mut order: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, pe)| !pe.queued.is_empty() && usize::from(pe.uploads) < limit)
            .map(|(id, _)| *id)
            .collect();
        if order.is_empty() {
            return;
        }
        // Start after the peer served last.
        if let Some(last) = self.upload_turn {
            let split = order.partition_point(|id| *id <= last);
            order.rotate_left(split);
        }
        loop {
            let mut served = false;
            for id in &order {
                let Some(pe) = self.peers.get_mut(id) else {
                    continue;
                };
                if usize::from(pe.uploads) >= limit {
                    continue;
                }
                let Some(block) = pe.queued.pop_front() else {
                    continue;
                };
                pe.uploads += 1;
                served = true;
                self.upload_turn = Some(*id);
                self.counters.uploaded += u64::from(block.length);
                self.events
                    .push_back(SwarmEvent::Upload { peer: *id, block });
            }
            if !served {
                break;
            }
        }
        // The uplink's rate is measured only while two peers or more are served: one
        // slow reader must not make it look slow.
        let serving = self
            .peers
            .values()
            .filter(|p| p.uploads > 0 || !p.queued.is_empty())
            .count();
        if serving >= 2 {
            self.uplink.busy(self.now);
        }
    }

    /// Blocks one peer may have on their way out: `upload_inflight`, or once the
    /// uplink's rate is measured, its share of about 100 ms of it (at least one).
    fn upload_inflight_limit(&self) -> usize {
        let max = self.cfg.upload_inflight.max(1);
        let Some(rate) = self.uplink.rate() else {
            return max;
        };
        let budget = (rate / 10.0 / f64::from(self.cfg.block_len)).ceil() as usize;
        let sharing = self.peers.values().filter(|p| p.unchoked).count().max(1);
        budget.div_ceil(sharing).clamp(1, max)
    }

    /// How long a peer keeps its slot at least before it rotates out: `rotate_every`, or
    /// on a slow uplink long enough to send it two of the largest pieces, so a turn
    /// always completes pieces (a `Choke` makes the peer drop its partial ones).
    fn min_tenure(&self) -> Duration {
        let Some(rate) = self.uplink.rate() else {
            return self.cfg.rotate_every;
        };
        let per_slot = rate / self.upload_slots().max(1) as f64;
        let piece = Duration::from_secs_f64(2.0 * f64::from(self.max_piece) / per_slot.max(1.0));
        self.cfg
            .rotate_every
            .max(piece.min(Duration::from_secs(30)))
    }

    /// Peers unchoked at once: `upload_slots`, fewer on a slow uplink.
    pub(super) fn upload_slots(&self) -> usize {
        let max = self.cfg.upload_slots.max(1);
        match self.uplink.rate() {
            Some(r) => {
                ((r / self.cfg.slot_rate.max(1) as f64).ceil() as usize).clamp(2.min(max), max)
            }
            None => max,
        }
    }

    /// Hands free upload slots to the longest-waiting peers.
    pub(super) fn fill_upload_slots(&mut self, now: Duration) {
        let used = self.peers.values().filter(|p| p.unchoked).count();
        let free = self.upload_slots().saturating_sub(used);
        for id in self.waiting().into_iter().take(free) {
            self.set_unchoked(id, true, now);
        }
    }

    /// Rotates upload slots when due (see the module docs).
    pub(super) fn rotate_uploads(&mut self, now: Duration) {
        if now < self.next_rotation {
            return;
        }
        self.next_rotation = now + self.cfg.rotate_every;
        let mut holders: Vec<(bool, Duration, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, pe)| pe.unchoked)
            .map(|(id, pe)| (self.lacks_ours(pe), pe.slot_since, *id))
            .collect();
        // Holders that need nothing from us first, then the longest-served.
        holders.sort_unstable();
        let slots = self.upload_slots();
        let mut turns = slots.div_ceil(4).max(1);
        let used = holders.len();
        // More holders than slots (the uplink proved slower than thought): the excess
        // goes first.
        for _ in slots..used {
            if let Some((_, _, holder)) = holders.first().copied() {
                holders.remove(0);
                self.set_unchoked(holder, false, now);
            }
        }
        let used = holders.len();
        let mut free = slots.saturating_sub(used);
        let mut waiting = self.waiting().into_iter();
        let mut holders = holders.into_iter();
        while waiting.len() > 0 {
            if free == 0 {
                let Some((needs, since, holder)) = holders.next() else {
                    break;
                };
                if needs {
                    if turns == 0 || now < since + self.min_tenure() {
                        break;
                    }
                    turns -= 1;
                }
                self.set_unchoked(holder, false, now);
                free += 1;
            }
            if let Some(next) = waiting.next() {
                self.set_unchoked(next, true, now);
                free -= 1;
            }
        }
    }
}
