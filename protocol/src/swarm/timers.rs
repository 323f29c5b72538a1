//! Time: what the core does when time passes (stalled attempts, origin deadlines, idle
//! and quiet peers, passed-over fetchers) and when it next needs to be told.

use super::*;

impl Swarm {
    /// Time passed: stalls, keep-alives, idle peers, origin deadlines.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = self.now.max(now);
        if !self.complete_sent {
            self.pass_over_silent_fetchers(now);
        }
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
            // Its pieces stop being held back once it has served nothing for this long
            // (`held_back_by_claims`): decide then, not on the next input.
            if let Some(g) = p.gave_at {
                at(g + self.cfg.holder_patience);
            }
        }
        for since in self.origin_in_flight.values() {
            at(*since + self.cfg.origin_timeout);
        }
        if !self.complete_sent {
            at(self.started + self.cfg.origin_grace);
            if let Some(j) = self.last_join {
                at(j + self.cfg.origin_settle);
            }
            at(self.origin_retry_at);
            at(self.lan_progress + self.cfg.origin_stall);
            if let Some(due) = self.next_pass_over() {
                at(due);
            }
            // A claim that runs out frees its piece for its owner (`holder_patience`),
            // and later for helpers.
            for wait in [
                self.cfg.holder_patience,
                self.cfg.holder_patience + self.cfg.origin_stall,
            ] {
                // Claims that started after `now - wait` expire after now.
                let from = now
                    .checked_sub(wait)
                    .map_or(Duration::ZERO, |d| d + Duration::from_nanos(1));
                if let Some((t, _)) = self.claim_starts.range(from..).next() {
                    at(*t + wait);
                }
            }
        }
        if self.slots_need_rotation() {
            // Due already (no input came since): soon, and then every `rotate_every`.
            at(self.next_rotation.max(now + Duration::from_millis(1)));
        }
        t
    }
}
