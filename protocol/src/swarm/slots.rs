//! Upload slots: which peers may request from us, and how the slots change hands.
//!
//! At most `upload_slots` peers hold a slot (are unchoked) at once; fewer on a slow
//! uplink (one per `slot_rate` of measured upload rate, at least 2). A peer *waits*
//! when it is choked and lacks a piece we hold (we know its `PieceMap` and `Have`s).
//!
//! **Rotation.** Every `rotate_every`, while someone waits:
//! - a slot held by a peer that lacks nothing we hold is handed on at once;
//! - then up to a quarter of the slots (at least one) go from the holders served longest
//!   (at least `rotate_every`, and on a slow uplink long enough for two whole pieces) to
//!   the peers that waited longest.
//!
//! So with `W` waiting peers and `S` slots, a waiting peer is unchoked within about
//! `ceil(W / ceil(S / 4)) × rotate_every`, and no peer starves however large the LAN.
//! A slot freed by a peer leaving goes to the longest-waiting peer at once.
//!
//! **Winding down.** A holder that loses its slot is not choked mid-piece: it may still
//! ask for the rest of the pieces it started (requests for a new piece get
//! `Reject(Choked)`), and is choked once those are asked for and sent, or after the
//! minimum tenure at most. A choke mid-piece would make it drop the blocks it has (a
//! piece comes from one source), which on a slow link was a tenth of all bytes received.

use super::*;

impl Swarm {
    /// Whether `pe` lacks a piece we hold.
    fn lacks_ours(&self, pe: &Peer) -> bool {
        pe.got_map && self.held.has_any_not_in(&pe.have)
    }

    /// Whether `pe` holds a slot (unchoked, and not winding down).
    fn holds_slot(pe: &Peer) -> bool {
        pe.unchoked && pe.winding_down.is_none()
    }

    /// Slots held now.
    pub(super) fn slots_held(&self) -> usize {
        self.peers.values().filter(|p| Self::holds_slot(p)).count()
    }

    /// Whether the slots need attention at the next rotation: a choked peer lacks a
    /// piece we hold, more peers hold slots than the uplink has, or a slot winds down.
    pub(super) fn slots_need_rotation(&self) -> bool {
        self.peers
            .values()
            .any(|pe| (!pe.unchoked && self.lacks_ours(pe)) || pe.winding_down.is_some())
            || self.slots_held() > self.upload_slots()
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
        pe.winding_down = None;
        pe.wind_rejects = 0;
        if !unchoked {
            // Its requests are void once it is choked (PROTOCOL.md: Choke).
            pe.queued.clear();
            pe.started.clear();
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

    /// Takes `id`'s slot: it is choked once the pieces it started are asked for and
    /// sent (at once if there are none).
    fn wind_down(&mut self, id: PeerId, now: Duration) {
        let Some(pe) = self.peers.get_mut(&id) else {
            return;
        };
        if !pe.unchoked || pe.winding_down.is_some() {
            return;
        }
        pe.winding_down = Some(now);
        self.end_wind_downs(now);
    }

    /// Chokes the peers whose slot wound down: nothing they started is left to ask
    /// for, queued or on its way out (a `Choke` must not overtake the data: the peer
    /// would drop it as unrequested), or the minimum tenure is over, or the peer kept
    /// asking for new pieces.
    pub(super) fn end_wind_downs(&mut self, now: Duration) {
        let limit = self.min_tenure();
        let patience = self.cfg.grant_window;
        let done: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, pe)| {
                pe.winding_down.is_some_and(|since| {
                    (pe.started.is_empty() && pe.queued.is_empty() && pe.uploads == 0)
                        || now >= since + limit
                        || pe.wind_rejects >= patience
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.set_unchoked(id, false, now);
        }
    }

    /// Notes an accepted request of `peer` for `block` in the pieces it started (a piece
    /// is finished once the end of it is asked for; requests come in order);
    /// `Some(Choked)` if its slot is winding down and the block starts a new piece.
    pub(super) fn note_started(&mut self, peer: PeerId, block: BlockRef) -> Option<RejectReason> {
        let p = block.piece.0;
        let len = self.tracker.spec(p).map_or(0, |s| s.length);
        let ends = u64::from(block.offset) + u64::from(block.length) >= u64::from(len);
        let cap = usize::from(self.cfg.grant_window).max(1);
        let pe = self.peers.get_mut(&peer)?;
        let known = pe.started.contains(&p);
        if !known && pe.winding_down.is_some() {
            pe.wind_rejects = pe.wind_rejects.saturating_add(1);
            return Some(RejectReason::Choked);
        }
        if ends {
            pe.started.retain(|x| *x != p);
        } else if !known {
            // Bounded: a peer that starts pieces and never finishes them loses the
            // oldest (it only shortens its own wind-down).
            if pe.started.len() >= cap {
                pe.started.remove(0);
            }
            pe.started.push(p);
        }
        None
    }

    /// How long a peer keeps its slot at least before it rotates out, and the longest
    /// a slot winds down: `rotate_every`, or on a slow uplink long enough to send it two
    /// of the largest pieces.
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
        let free = self.upload_slots().saturating_sub(self.slots_held());
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
        self.end_wind_downs(now);
        let mut holders: Vec<(bool, Duration, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, pe)| Self::holds_slot(pe))
            .map(|(id, pe)| (self.lacks_ours(pe), pe.slot_since, *id))
            .collect();
        // Holders that need nothing from us first, then the longest-served.
        holders.sort_unstable();
        let mut holders = holders.into_iter();
        let slots = self.upload_slots();
        // More holders than slots (the uplink proved slower than thought): the excess
        // goes first.
        for _ in slots..self.slots_held() {
            let Some((_, _, holder)) = holders.next() else {
                break;
            };
            self.wind_down(holder, now);
        }
        let mut free = slots.saturating_sub(self.slots_held());
        let mut turns = slots.div_ceil(4).max(1);
        let tenure = self.min_tenure();
        for next in self.waiting() {
            if free == 0 {
                let Some((needs, since, holder)) = holders.next() else {
                    break;
                };
                if needs {
                    if turns == 0 || now < since + tenure {
                        break;
                    }
                    turns -= 1;
                }
                self.wind_down(holder, now);
                free += 1;
            }
            self.set_unchoked(next, true, now);
            free -= 1;
        }
    }
}
