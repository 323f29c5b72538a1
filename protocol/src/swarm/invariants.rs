//! The core's consistency rules, checked by the simulator after every step.

use super::*;

impl Swarm {
    /// Checks the core's internal consistency; the simulator calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut avail = vec![0u32; self.availability.len()];
        for (id, pe) in &self.peers {
            for i in pe.have.iter() {
                avail[i as usize] += 1;
            }
            if pe.pieces.len() > self.cfg.pieces_per_peer {
                return Err(format!("{id:?} has {} pieces in flight", pe.pieces.len()));
            }
            for p in &pe.pieces {
                if self.attempt(*p, Source::Peer(*id)).is_none() {
                    return Err(format!("{id:?} lists piece {p} with no attempt"));
                }
            }
            if pe.winding_down.is_some() && !pe.unchoked {
                return Err(format!("{id:?} winds down a slot it does not hold"));
            }
            if !pe.unchoked && (!pe.started.is_empty() || !pe.queued.is_empty()) {
                return Err(format!("{id:?} is choked with requests kept"));
            }
            if pe.started.len() > usize::from(self.cfg.grant_window).max(1) {
                return Err(format!("{id:?} has {} started pieces", pe.started.len()));
            }
            if pe.winding_us_down && pe.choked_us {
                return Err(format!("{id:?} winds down a slot it does not give us"));
            }
            for b in &pe.outstanding {
                if !pe.pieces.contains(&b.piece.0) {
                    return Err(format!(
                        "{id:?} has a request for untracked piece {}",
                        b.piece.0
                    ));
                }
            }
        }
        if avail != self.availability {
            return Err("availability counts disagree with peer maps".into());
        }
        let mut have = 0;
        for (p, state) in self.tracker.states() {
            match state {
                PieceState::Have => have += 1,
                PieceState::Downloading(attempts) => {
                    if attempts.is_empty() || attempts.len() > 2 {
                        return Err(format!("piece {p} has {} attempts", attempts.len()));
                    }
                    for a in attempts {
                        match a.source {
                            Source::Origin if !self.origin_in_flight.contains_key(&p) => {
                                return Err(format!("piece {p}: origin attempt not in flight"));
                            }
                            Source::Peer(id)
                                if !self
                                    .peers
                                    .get(&id)
                                    .is_some_and(|pe| pe.pieces.contains(&p)) =>
                            {
                                return Err(format!("piece {p}: attempt by unknown {id:?}"));
                            }
                            _ => {}
                        }
                    }
                }
                PieceState::Missing { .. } => {}
            }
        }
        let mut starts: BTreeMap<Duration, u32> = BTreeMap::new();
        for (p, t) in self.claimed.iter().enumerate() {
            if let Some(t) = t {
                if self.tracker.has(p as u32) {
                    return Err(format!("piece {p} is held and still claimed"));
                }
                *starts.entry(*t).or_insert(0) += 1;
            }
        }
        if starts != self.claim_starts {
            return Err("claim start counts disagree with the claims".into());
        }
        if have != self.tracker.have_count() {
            return Err("have count is off".into());
        }
        if self.origin_in_flight.len() > self.cfg.origin_parallel {
            return Err("too many origin fetches in flight".into());
        }
        Ok(())
    }
}
