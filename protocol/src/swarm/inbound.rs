//! Inbound peer messages: what each one does to the swarm's state, and which ones are
//! protocol violations.

use super::*;

impl Swarm {
    pub(super) fn on_message(
        &mut self,
        peer: PeerId,
        msg: Message,
        now: Duration,
    ) -> Result<(), PeerError> {
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
                    self.note_claim(i, now);
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
                // New to us when the announcer is not snubbed and no claim by another
                // peer held the piece back still (a peer that claims every piece but
                // withholds them must not hide the LAN's progress for good).
                let new = !self.tracker.has(i)
                    && self
                        .peers
                        .get(&peer)
                        .is_some_and(|pe| pe.snubbed_until <= now)
                    && !self.held_back_by_claims(i, now);
                let Some(p) = self.peers.get_mut(&peer) else {
                    return Ok(());
                };
                if !p.have.set(i) {
                    // It announced this piece before: that says nothing.
                    return self.noise(peer, now);
                }
                p.started.retain(|x| *x != i);
                self.availability[i as usize] += 1;
                self.note_claim(i, now);
                if new {
                    self.note_new_piece(i, now);
                }
            }
            Message::Choke => {
                let keep = self.voided_kept();
                // Requests to a choking peer are void; its attempts go back to Missing.
                // A peer that keeps voiding our requests and sends no block in between
                // is snubbed: otherwise every Unchoke would start the same round again.
                let flaps = self.cfg.max_flaps.max(1);
                let snub = now + self.cfg.snub_time;
                let pieces = self.peers.get_mut(&peer).map(|p| {
                    if !p.outstanding.is_empty() {
                        p.flaps = p.flaps.saturating_add(1);
                        if p.flaps >= flaps {
                            p.snubbed_until = snub;
                            p.flaps = 0;
                        }
                    }
                    p.choked_us = true;
                    p.winding_us_down = false;
                    let cleared = std::mem::take(&mut p.outstanding);
                    p.void(&cleared, keep);
                    p.pieces.clone()
                });
                for piece in pieces.unwrap_or_default() {
                    self.abandon(peer, piece, now);
                }
            }
            Message::Unchoke { max_requests } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.choked_us = false;
                    p.winding_us_down = false;
                    p.window = max_requests;
                }
            }
            Message::Request(block) => self.on_request(peer, block, now)?,
            Message::Cancel(block) => {
                // Blocks already handed to the agent are sent anyway; they are small.
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.queued.retain(|b| *b != block);
                }
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_piece(peer, piece.0, offset, data, now)?,
            Message::Reject { block, reason } => {
                let refusals = 2 * self.cfg.request_window.max(1);
                let snub = now + self.cfg.snub_time;
                let was_ours = self.peers.get_mut(&peer).is_some_and(|p| {
                    if reason == RejectReason::Choked && !p.choked_us {
                        p.winding_us_down = true;
                    }
                    let before = p.outstanding.len();
                    p.outstanding.retain(|b| *b != block);
                    let ours = before != p.outstanding.len();
                    if !ours {
                        // A refusal crossing our withdrawal: quiet once, not forever.
                        if let Some(i) = p.voided.iter().position(|b| *b == block) {
                            p.voided.remove(i);
                        }
                    }
                    // Only refusals of what we still wait for, while it unchokes us (a
                    // request that crossed its `Choke` is no refusal). The piece is
                    // abandoned, so the other requests for it are refused too: they
                    // count, or a peer that rejects one block per piece would be asked
                    // for every block of every piece before it is snubbed. Except for a
                    // `Reject(choked)`, a slot winding down (§6.6), which is routine and
                    // counts once.
                    if ours && !p.choked_us {
                        let voided = if reason == RejectReason::Choked {
                            0
                        } else {
                            p.outstanding
                                .iter()
                                .filter(|b| b.piece == block.piece)
                                .count()
                        };
                        let voided = u16::try_from(voided + 1).unwrap_or(u16::MAX);
                        p.refusals = p.refusals.saturating_add(voided);
                        if p.refusals >= refusals {
                            p.snubbed_until = snub;
                            p.refusals = 0;
                        }
                    }
                    ours
                });
                if was_ours {
                    if reason == RejectReason::NotHeld {
                        return Err(PeerError::Protocol("rejected a piece it announced"));
                    }
                    self.abandon(peer, block.piece.0, now);
                }
            }
            Message::KeepAlive => return self.noise(peer, now),
            Message::TrustOffer(bytes) => {
                // A chain is a few documents; more than an agent keeps is a flood.
                let offers = self.peers.get_mut(&peer).map_or(0, |p| {
                    p.trust_offers = p.trust_offers.saturating_add(1);
                    p.trust_offers
                });
                if offers > MAX_TRUST_OFFERS {
                    return Err(PeerError::Protocol(
                        "sends more trust documents than a chain holds",
                    ));
                }
                self.events
                    .push_back(SwarmEvent::TrustOffered { peer, bytes });
            }
            Message::ManifestOffer(bytes) => {
                // One per gossip session from an honest peer; a flood of them (each up
                // to 1 MiB to verify) is paid from the allowance.
                self.noise(peer, now)?;
                self.events
                    .push_back(SwarmEvent::ManifestOffered { peer, bytes });
            }
            Message::IndexRequest {
                index,
                offset,
                length,
            } => {
                self.events.push_back(SwarmEvent::IndexRequested {
                    peer,
                    index,
                    offset,
                    length,
                });
            }
            Message::IndexData {
                index,
                offset,
                data,
            } => {
                self.events.push_back(SwarmEvent::IndexReceived {
                    peer,
                    index,
                    offset,
                    data,
                });
            }
            Message::Stats(summary) => {
                let last = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.last_stats.replace(now));
                if last.is_some_and(|t| now < t + STATS_NOISE) {
                    return self.noise(peer, now);
                }
                self.events
                    .push_back(SwarmEvent::PeerStats { peer, summary });
            }
        }
        Ok(())
    }

    /// `peer` sent a message that carries nothing new: it spends its allowance, and
    /// breaks the protocol once that is gone ([`NOISE_BURST`]).
    pub(super) fn noise(&mut self, peer: PeerId, now: Duration) -> Result<(), PeerError> {
        let spent = self
            .peers
            .get_mut(&peer)
            .is_some_and(|p| !p.noise.spend(now));
        if spent {
            return Err(PeerError::Protocol(
                "floods messages that carry nothing (KeepAlive, repeated Have, Stats)",
            ));
        }
        Ok(())
    }

    pub(super) fn on_request(
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
            Some(pe)
                if usize::from(pe.uploads) + pe.queued.len()
                    >= usize::from(self.cfg.grant_window) =>
            {
                Some(RejectReason::Overloaded)
            }
            _ if !self.tracker.has(p) => Some(RejectReason::NotHeld),
            _ => None,
        };
        let reason = reason.or_else(|| self.note_started(peer, block));
        if let Some(reason) = reason {
            self.send(peer, Message::Reject { block, reason }, now);
            return Ok(());
        }
        if let Some(pe) = self.peers.get_mut(&peer) {
            pe.queued.push_back(block);
        }
        self.serve_uploads();
        Ok(())
    }

    pub(super) fn on_piece(
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
            let requested = before != pe.outstanding.len();
            if requested {
                // A block (of the size we asked for) forgives its chokes: a slow
                // downlink may not finish a piece within one turn of an uploader's slot.
                pe.flaps = 0;
            }
            if !requested {
                // One that crossed our withdrawal is dropped quietly; others count.
                match pe.voided.iter().position(|b| *b == block) {
                    Some(i) => {
                        pe.voided.remove(i);
                    }
                    None => pe.unasked = pe.unasked.saturating_add(1),
                }
            }
            requested
        });
        let unasked = self.peers.get(&peer).map_or(0, |pe| pe.unasked);
        if unasked > UNASKED_BLOCKS * u32::from(self.cfg.request_window.max(1)) {
            return Err(PeerError::Protocol("sends blocks nobody asked for"));
        }
        if requested {
            let more = self.peers.values().any(|pe| !pe.outstanding.is_empty());
            self.downlink.done(data.len() as u64, more, now);
        }
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
        self.blocks_accepted += 1;
        a.last_progress = now;
        if !a.complete() {
            return Ok(());
        }
        let buf = std::mem::take(&mut a.buf);
        if let Some(pe) = self.peers.get_mut(&peer) {
            pe.pieces.retain(|x| *x != p);
        }
        // The attempt ends here; the bytes count for nothing until the agent reports
        // their hash (`handle_piece_checked`). Meanwhile the piece is not started again
        // (an endgame copy already under way may still finish: the first good one wins).
        self.tracker.abort(p, Source::Peer(peer), now);
        *self.checking.entry(p).or_insert(0) += 1;
        self.events.push_back(SwarmEvent::CheckPiece {
            piece: PieceNumber(p),
            source: Source::Peer(peer),
            data: buf,
        });
        Ok(())
    }
}
