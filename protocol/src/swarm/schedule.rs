//! Scheduling policy: who owns which origin fetch (rendezvous hashing), which piece to
//! ask which peer for (rarest first, endgame), and when to go to the origin.

use super::*;

impl Swarm {
    /// Which pieces we fetch from the origin first. The LAN's origin fetchers are the
    /// `origin_fetchers` agents known (members and ourselves, less those passed over)
    /// with the highest [`fetcher_score`]; each piece is owned by the fetcher with the
    /// highest [`rendezvous_score`].
    /// Returns whether the fetchers changed.
    pub(super) fn recompute_ownership(&mut self) -> bool {
        let salt = self.release_salt();
        let mut scored: Vec<(u64, PeerId)> = self
            .members
            .iter()
            .filter(|(id, _)| !self.silent.contains(*id))
            .map(|(id, s)| (*s, *id))
            .collect();
        scored.push((fetcher_score(&salt, &self.me), self.me));
        let k = self.cfg.origin_fetchers.max(1).min(scored.len());
        if k < scored.len() {
            scored.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
            scored.truncate(k);
        }
        scored.sort_unstable_by(|a, b| b.cmp(a));
        let fetchers: Vec<PeerId> = scored.into_iter().map(|(_, id)| id).collect();
        if fetchers == self.fetchers {
            return false;
        }
        let now = self.now;
        for f in &fetchers {
            self.fetcher_seen.entry(*f).or_insert(now);
        }
        self.fetcher_seen.retain(|id, _| fetchers.contains(id));
        self.fetchers = fetchers;
        let me = self.me;
        for p in 0..self.tracker.len() {
            let owner = (0..self.fetchers.len())
                .max_by_key(|i| rendezvous_score(p, &self.fetchers[*i]))
                .unwrap_or(0);
            self.owner[p as usize] = owner as u8;
            self.mine[p as usize] = self.fetchers.get(owner) == Some(&me);
        }
        true
    }

    /// A piece nobody near us had appeared: the LAN made progress (the stall clock
    /// restarts), and its owner delivers. A fetcher that has delivered nothing for
    /// `origin_stall`, and still owns pieces no claim holds back, is passed over
    /// for this release (crashed, gone without a goodbye, or a name that is no agent):
    /// its pieces go to the next agent in the election rather than to everyone. This is
    /// checked on each new piece and when the LAN stalls, before everyone helps.
    pub(super) fn note_new_piece(&mut self, p: u32, now: Duration) {
        // Once per piece: ids that come and go re-announcing it are no progress.
        if !self.announced.set(p) {
            return;
        }
        self.lan_progress = now;
        if let Some(f) = self
            .fetchers
            .get(usize::from(self.owner[p as usize]))
            .copied()
            && let Some(seen) = self.fetcher_seen.get_mut(&f)
        {
            if !self.delivered.insert(f) {
                let sample = now.saturating_sub(*seen);
                self.delivery_gap = (self.delivery_gap * 7 + sample) / 8;
            }
            *seen = now;
        }
        self.pass_over_silent_fetchers(now);
    }

    /// Our own origin piece arrived: as a fetcher we delivered.
    pub(super) fn note_own_delivery(&mut self, now: Duration) {
        self.fetcher_seen.insert(self.me, now);
    }

    /// Passes over the fetchers that delivered nothing for `origin_stall` and still own
    /// pieces no claim holds back; returns whether there were any.
    ///
    /// Also checked at the moment a fetcher becomes late (`next_pass_over`), not only on
    /// the next input: agents must pass a fetcher over together. The first to do so
    /// fetches its pieces, and to an agent that has not yet, those pieces look like
    /// the silent fetcher delivering; it would keep the fetcher, its election would
    /// differ from the others', and the pieces both sides leave to someone else would
    /// wait for the stall fallback.
    pub(super) fn pass_over_silent_fetchers(&mut self, now: Duration) -> bool {
        // Late: nothing for the stall time (longer behind a slow origin), while another
        // fetcher delivered since. When every fetcher is late the origin itself is slow
        // or unreachable, and passing fetchers over would only add fetches.
        let wait = self.pass_over_wait();
        let newest = self.fetcher_seen.values().max().copied();
        let late: Vec<PeerId> = self
            .fetcher_seen
            .iter()
            .filter(|(f, seen)| **f != self.me && newest.is_some_and(|n| n > **seen))
            .filter(|(f, seen)| {
                self.fetchable_since(f)
                    .is_some_and(|since| now >= since.max(**seen) + wait)
            })
            .map(|(f, _)| *f)
            .collect();
        if late.is_empty() {
            return false;
        }
        self.silent.extend(late);
        self.recompute_ownership();
        true
    }

    /// How long a fetcher may deliver nothing before it is late.
    fn pass_over_wait(&self) -> Duration {
        self.cfg.origin_stall.max(self.delivery_gap * 3)
    }

    /// When the next fetcher becomes late, if one will: only a fetcher another one
    /// delivered after, that still owns pieces no claim holds back, and whose
    /// moment is still to come (a fetcher that is late already but owns nothing missing
    /// must not hide a later one's moment).
    pub(super) fn next_pass_over(&self) -> Option<Duration> {
        let newest = self.fetcher_seen.values().max().copied()?;
        let wait = self.pass_over_wait();
        self.fetcher_seen
            .iter()
            .filter(|(f, seen)| **f != self.me && newest > **seen)
            .filter_map(|(f, seen)| Some(self.fetchable_since(f)?.max(*seen) + wait))
            .filter(|at| *at > self.now)
            .min()
    }

    /// If fetcher `f` owns pieces we lack that no neighbour's claim holds back (see
    /// `held_back_by_claims`), since when it could have fetched one: the earliest moment
    /// such a piece's claims ran out (zero for a piece nobody claimed, or that only
    /// snubbed peers hold). A fetcher is not late for pieces it was not allowed to fetch.
    fn fetchable_since(&self, f: &PeerId) -> Option<Duration> {
        let i = self.fetchers.iter().position(|x| x == f)?;
        let now = self.now;
        self.tracker
            .states()
            .filter(|(p, s)| {
                usize::from(self.owner[*p as usize]) == i
                    && matches!(s, PieceState::Missing { .. })
                    && !self.held_back_by_claims(*p, now)
            })
            .map(|(p, _)| {
                // Freed by its claims running out; otherwise nobody claimed it, or only
                // snubbed peers hold it, and the fetcher's own clock alone counts.
                self.claimed[p as usize]
                    .map(|t| t + self.cfg.holder_patience)
                    .filter(|t| now >= *t)
                    .unwrap_or(Duration::ZERO)
            })
            .try_fold(None, |best: Option<Duration>, t| {
                // Nothing comes before zero: stop there.
                let best = Some(best.map_or(t, |b| b.min(t)));
                if t.is_zero() { Err(best) } else { Ok(best) }
            })
            .unwrap_or_else(|best| best)
    }

    /// Adds `peer` to the members, with its fetcher score; returns whether the
    /// fetchers may change (a LAN of 1,000 agents adds members below the cut a thousand
    /// times: those cost O(fetchers), not a recount).
    pub(super) fn add_member(&mut self, peer: PeerId) -> bool {
        let salt = self.release_salt();
        if self.members.contains_key(&peer) {
            return false;
        }
        let score = fetcher_score(&salt, &peer);
        self.members.insert(peer, score);
        self.fetchers.len() < self.cfg.origin_fetchers.max(1)
            || self.fetchers.iter().any(|f| self.member_score(f) < score)
    }

    /// Removes `peer` from the members; returns whether it was one of the fetchers.
    pub(super) fn remove_member(&mut self, peer: &PeerId) -> bool {
        self.members.remove(peer).is_some() && self.fetchers.contains(peer)
    }

    fn member_score(&self, id: &PeerId) -> u64 {
        match self.members.get(id) {
            Some(s) => *s,
            None => fetcher_score(&self.release_salt(), id),
        }
    }

    /// What makes the fetcher election differ between releases: the first piece's
    /// digest (any fixed fact of the release would do).
    fn release_salt(&self) -> [u8; 32] {
        self.tracker.spec(0).map_or([0; 32], |s| s.digest.0)
    }

    /// Starts new attempts and requests (see the module docs for the policy).
    pub(super) fn schedule(&mut self, now: Duration) {
        // Uploads go on after we complete; a rotation that came due is done here, on
        // whatever input arrives first.
        self.rotate_uploads(now);
        if self.complete_sent {
            return;
        }
        let mut ids: Vec<PeerId> = self.peers.keys().copied().collect();
        self.rng.shuffle(&mut ids);
        let endgame = !self.tracker.states().any(|(p, s)| {
            matches!(s, PieceState::Missing { .. }) && !self.checking.contains_key(&p)
        });
        let out: usize = self.peers.values().map(|p| p.outstanding.len()).sum();
        if out == 0 {
            self.downlink.idle();
        }
        let patience = self.endgame_patience(out);
        for id in ids {
            self.fill_peer(id, endgame, patience, now);
        }
        self.start_origin(now);
    }

    /// How long an attempt from a peer may run before endgame asks a second peer for
    /// its piece: twice what our downlink needs, at its best measured rate, for
    /// everything we have asked for plus one piece (zero before the rate is measured;
    /// at most `block_timeout`). A slow downlink that is merely busy must not spend
    /// itself on duplicates; an attempt that drips or stalls is still overtaken.
    fn endgame_patience(&self, out: usize) -> Duration {
        let Some(rate) = self.downlink.peak() else {
            return Duration::ZERO;
        };
        let bytes = out as f64 * f64::from(self.cfg.block_len) + f64::from(self.max_piece);
        Duration::from_secs_f64(2.0 * bytes / rate.max(1.0)).min(self.cfg.block_timeout)
    }

    fn fill_peer(&mut self, id: PeerId, endgame: bool, patience: Duration, now: Duration) {
        let Some(pe) = self.peers.get(&id) else {
            return;
        };
        if pe.choked_us || !pe.got_map || pe.snubbed_until > now {
            return;
        }
        // A slot winding down: only the pieces already under way.
        let new_pieces = if pe.winding_us_down {
            0
        } else {
            self.cfg.pieces_per_peer
        };
        // Nothing to start with it and every request window full: the common case on a
        // busy LAN, checked before scanning the pieces.
        let limit = usize::from(pe.window.min(self.cfg.request_window));
        let room = pe.pieces.len() < new_pieces && (pe.have.has_any_not_in(&self.held) || endgame);
        if !room && pe.outstanding.len() >= limit {
            return;
        }
        while self
            .peers
            .get(&id)
            .is_some_and(|p| p.pieces.len() < new_pieces)
        {
            let Some(p) = self.pick_for(id, endgame, patience, now) else {
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
                self.downlink.busy(now);
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
    /// already being fetched from one other source (the origin, or a peer whose attempt
    /// has run for `patience`).
    fn pick_for(
        &mut self,
        id: PeerId,
        endgame: bool,
        patience: Duration,
        now: Duration,
    ) -> Option<u32> {
        let pe = self.peers.get(&id)?;
        let mut best: Vec<u32> = Vec::new();
        let mut best_avail = u32::MAX;
        for (p, state) in self.tracker.states() {
            let eligible = match state {
                PieceState::Missing { .. } => true,
                PieceState::Downloading(a) => {
                    endgame
                        && a.len() == 1
                        && a[0].source != Source::Peer(id)
                        && (a[0].source == Source::Origin || now >= a[0].started + patience)
                }
                PieceState::Have => false,
            };
            if !eligible || !pe.have.get(p) || self.checking.contains_key(&p) {
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
        let settled = self
            .last_join
            .is_some_and(|j| now >= j + self.cfg.origin_settle);
        if (now < self.started + self.cfg.origin_grace && !settled) || now < self.origin_retry_at {
            return;
        }
        // The LAN as a whole keeps about `origin_parallel` fetches in flight: each agent
        // runs its share. Fewer, longer-lived fetches per agent mean origin pieces finish
        // one after another instead of all at once at the end, where every agent would
        // then wait for the last batch to spread over the LAN (lab: a 2 s tail at 16
        // agents with 4 each).
        let share = self
            .cfg
            .origin_parallel
            .div_ceil(self.fetchers.len())
            .max(1);
        let free = share.saturating_sub(self.origin_in_flight.len());
        if free == 0 {
            return;
        }
        let mut stalled = now >= self.lan_progress + self.cfg.origin_stall;
        if stalled && self.pass_over_silent_fetchers(now) {
            // The next agents in the election take over the silent ones' pieces, and get
            // a stall period of their own before everyone helps, but only if pieces came
            // since the last pass-over: names that keep winning and never deliver cannot
            // hold off the fallback.
            if self.lan_progress > self.passed_over_at {
                self.lan_progress = now;
                stalled = false;
            }
            self.passed_over_at = now;
        }
        if !stalled && !self.fetchers.contains(&self.me) {
            return;
        }
        // Missing pieces no usable peer holds: ours first (in piece order, friendly to
        // the origin's read-ahead); when the LAN stalls, others' too, in our own
        // rendezvous order so that helping agents pick different pieces.
        let mut ours = Vec::new();
        let mut others = Vec::new();
        for (p, state) in self.tracker.states() {
            if !matches!(state, PieceState::Missing { .. }) || self.checking.contains_key(&p) {
                continue;
            }
            if self.held_back_by_claims(p, now) {
                continue;
            }
            // A piece whose claims ran out gets its owner's turn (a stall period)
            // before helpers fetch it too.
            let owners_turn = self.claimed[p as usize]
                .is_some_and(|t| now < t + self.cfg.holder_patience + self.cfg.origin_stall);
            if self.mine[p as usize] {
                ours.push(p);
            } else if stalled && !owners_turn {
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
}

impl Swarm {
    /// A peer claims piece `p` (its map or a `Have`): if we lack it, the claim's clock
    /// starts, once: it ends when we get the piece, or when nobody claimed it for
    /// `origin_stall` (a claim after that starts a new clock).
    pub(super) fn note_claim(&mut self, p: u32, now: Duration) {
        if self.tracker.has(p) || p >= self.tracker.len() {
            return;
        }
        let i = p as usize;
        // Nobody claimed it for a while: the old clock (if any) ends, a new one starts.
        if let Some(left) = self.unclaimed_at[i].take()
            && now >= left + self.cfg.origin_stall
            && let Some(t) = self.claimed[i].take()
        {
            self.unclaim(t);
        }
        if self.claimed[i].is_none() {
            self.claimed[i] = Some(now);
            *self.claim_starts.entry(now).or_insert(0) += 1;
        }
    }

    /// A claim that started at `t` ended (its piece arrived).
    pub(super) fn unclaim(&mut self, t: Duration) {
        if let Some(n) = self.claim_starts.get_mut(&t) {
            *n -= 1;
            if *n == 0 {
                self.claim_starts.remove(&t);
            }
        }
    }

    /// Whether a neighbour's claim keeps us from fetching piece `p` from the origin: a
    /// peer that is not snubbed holds it, and the first claim is younger than
    /// `holder_patience`. The clock is the piece's, not a peer's: claimants that take
    /// turns, reconnect under new ids, or send one junk block now and then cannot
    /// restart it; only the piece reaching us ends it.
    ///
    /// A piece also stays held back while a holder that is not snubbed gave us a piece
    /// that verified within `holder_patience`: neighbours that serve us (a late joiner's,
    /// a slow agent's) keep their pieces, however old the claims. Serving real pieces is
    /// what an attacker cannot fake; a peer that unchokes and withholds is snubbed by the
    /// stall, flap and refusal rules.
    pub(super) fn held_back_by_claims(&self, p: u32, now: Duration) -> bool {
        let patience = self.cfg.holder_patience;
        let young = self.claimed[p as usize].is_none_or(|t| now < t + patience);
        self.availability[p as usize] > 0
            && self.peers.values().any(|pe| {
                pe.have.get(p)
                    && pe.snubbed_until <= now
                    && (young || pe.gave_at.is_some_and(|g| now < g + patience))
            })
    }
}

/// The score of `peer` in the election of a release's origin fetchers (highest win);
/// `salt` names the release. A [light](is_light) peer scores below every other, so it
/// fetches from the origin only when too few others are known.
pub fn fetcher_score(salt: &[u8; 32], peer: &PeerId) -> u64 {
    let d = Digest::of_parts(&[b"SHOAL-FETCHER-V2\0", salt, &peer.0]);
    let hash = u64::from_be_bytes(d.0[..8].try_into().unwrap_or_default()) >> 1;
    if is_light(peer) { hash } else { hash | 1 << 63 }
}

/// Whether `peer` is *light*: an agent on a slow link (a Wi-Fi laptop, a thin branch
/// link) says so in the top bit of its otherwise random id, so that every agent can
/// leave the origin fetches to the others from the ids alone (see [`fetcher_score`]).
pub fn is_light(peer: &PeerId) -> bool {
    peer.0[0] & 0x80 != 0
}

/// A peer id from 16 random bytes, marked [light](is_light) or not.
pub fn peer_id(mut random: [u8; 16], light: bool) -> PeerId {
    if light {
        random[0] |= 0x80;
    } else {
        random[0] &= 0x7f;
    }
    PeerId(random)
}

/// The rendezvous score of `peer` for piece `p` (highest wins the origin fetch).
pub fn rendezvous_score(p: u32, peer: &PeerId) -> u64 {
    let d = Digest::of_parts(&[b"SHOAL-RDV-V1\0", &p.to_be_bytes(), &peer.0]);
    u64::from_be_bytes(d.0[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn light_ids_lose_the_fetcher_election_to_every_other() {
        let mut rng = super::super::Rng::new(9);
        let mut random = || {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            b
        };
        let salt = [7u8; 32];
        let light: Vec<PeerId> = (0..200).map(|_| peer_id(random(), true)).collect();
        let full: Vec<PeerId> = (0..200).map(|_| peer_id(random(), false)).collect();
        assert!(light.iter().all(is_light) && !full.iter().any(is_light));
        let best_light = light.iter().map(|p| fetcher_score(&salt, p)).max();
        let worst_full = full.iter().map(|p| fetcher_score(&salt, p)).min();
        assert!(best_light < worst_full);
        // The flag is the only bit that changes.
        let r = random();
        assert_eq!(peer_id(r, true).0[1..], r[1..]);
        assert_eq!(peer_id(r, true).0[0] & 0x7f, peer_id(r, false).0[0]);
    }
}
