//! Who is on the LAN: members reported by discovery, peers joining and leaving, and what
//! leaving does to the swarm's state (availability, attempts, upload slots, the origin
//! split).

use super::*;

impl Swarm {
    /// Discovery reports an agent of the LAN (connected or not). Origin work is split
    /// over every agent known, so agents that are not connected to each other still
    /// fetch different pieces.
    pub fn handle_member(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        if peer == self.me || self.banned.contains(&peer) {
            return;
        }
        self.named.insert(peer);
        if self.members.contains_key(&peer) {
            return;
        }
        self.last_join = Some(now);
        if self.add_member(peer) && self.recompute_ownership() {
            self.schedule(now);
        }
    }

    /// Discovery no longer sees `peer` (its announcement ended or expired). A joined
    /// peer stays a member until its connection closes.
    pub fn handle_member_gone(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        self.named.remove(&peer);
        // A joined peer stays a member until its connection ends.
        if self.peers.contains_key(&peer) || !self.members.contains_key(&peer) {
            return;
        }
        if self.remove_member(&peer) && self.recompute_ownership() {
            self.schedule(now);
        }
    }

    /// The agents of the LAN known (joined or discovered), without us.
    pub fn members(&self) -> usize {
        self.members.len()
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
        self.last_join = Some(now);
        let fetchers_may_change = self.add_member(peer);
        let unchoked = self.slots_held() < self.upload_slots();
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
                slot_since: now,
                uploads: 0,
                queued: VecDeque::new(),
                started: Vec::new(),
                winding_down: None,
                wind_rejects: 0,
                winding_us_down: false,
                snubbed_until: Duration::ZERO,
                flaps: 0,
                voided: VecDeque::new(),
                unasked: 0,
                noise: Noise::new(now),
                last_stats: None,
                trust_offers: 0,
                free_cancels: 0,
                refusals: 0,
                gave_at: None,
                last_recv: now,
                last_sent: now,
            },
        );
        self.send(
            peer,
            Message::PieceMap {
                piece_count: self.held.len(),
                bits: self.held.as_wire().to_vec(),
            },
            now,
        );
        if unchoked {
            let w = self.cfg.grant_window;
            self.send(peer, Message::Unchoke { max_requests: w }, now);
        }
        if fetchers_may_change {
            self.recompute_ownership();
        }
        self.schedule(now);
    }

    /// The connection to `peer` closed.
    pub fn handle_disconnected(&mut self, peer: PeerId, now: Duration) {
        self.now = self.now.max(now);
        self.remove_peer(peer, now);
        self.schedule(now);
    }

    pub(super) fn drop_peer(&mut self, peer: PeerId, reason: PeerError, ban: bool, now: Duration) {
        if ban {
            self.banned.insert(peer);
        }
        self.remove_peer(peer, now);
        self.events
            .push_back(SwarmEvent::Disconnect { peer, reason, ban });
    }

    pub(super) fn remove_peer(&mut self, peer: PeerId, now: Duration) {
        let Some(pe) = self.peers.remove(&peer) else {
            return;
        };
        for i in pe.have.iter() {
            // A claim's clock survives its claimants leaving for a while: ids that take
            // turns must not restart it.
            self.availability[i as usize] -= 1;
            if self.availability[i as usize] == 0 {
                self.unclaimed_at[i as usize] = Some(now);
            }
        }
        for p in pe.pieces {
            self.tracker.abort(p, Source::Peer(peer), now);
        }
        self.transmits.retain(|(to, _)| *to != peer);
        // A member discovery names stays one: a connection that ends says little about
        // the agent (our peer set changed, say); discovery says when it is gone, and a
        // fetcher that stops delivering is passed over (`note_new_piece`). One known only
        // from its connection (a static peer, or a name discovery withdrew meanwhile)
        // stops being a member.
        if pe.unchoked {
            self.fill_upload_slots(now);
        }
        if !self.named.contains(&peer) && self.remove_member(&peer) {
            self.recompute_ownership();
        }
    }
}
