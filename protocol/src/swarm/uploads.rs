//! Serving uploads: the requests a peer with a slot (see `slots`) sent us wait here
//! and go to the agent a few blocks per peer at a time.

use super::*;

impl Swarm {
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
        let window = self.cfg.grant_window;
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
                // The requester may cancel it while it is being sent: one quiet `Cancel`
                // (at most a window's worth saved up).
                pe.free_cancels = (pe.free_cancels + 1).min(window);
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
}
