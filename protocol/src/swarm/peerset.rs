//! Which LAN agents an agent connects to: the overlay rule.
//!
//! An office LAN has hundreds of agents; a full mesh would cost every agent hundreds of
//! connections and every piece hundreds of `Have`s. Instead each agent *dials* the
//! [`PeerSetConfig::dial`] members it knows with the highest [`link_score`], a hash of the
//! two peer ids that both ends compute alike, and *accepts* inbound connections up to
//! [`PeerSetConfig::max_peers`] in all. The result is a random graph: every agent has
//! between `dial` and about `2 × dial` neighbours, which keeps the overlay connected with a
//! small diameter (about `log N / log dial` hops: 2 at 250 agents, 3 at 1,000), and a
//! piece spreads in a few hops. The choice does not depend on the order agents are
//! discovered in (first-come neighbours would cluster agents that started together), and
//! a restart with a new peer id lands the agent somewhere else in the graph. On a LAN of
//! at most `dial + 1` agents it is the full mesh.
//!
//! Why 20 and 56: 20 neighbours chosen at random already make the graph connected with
//! overwhelming probability at 1,000 agents (connectivity needs about `ln N` ≈ 7), and
//! give rarest-first enough choice; a piece reaches 1,000 agents in 3 hops. The cap of 56
//! leaves room for the expected ~20 inbound connections plus the tail of the
//! distribution (at 1,000 agents fewer than one in 10⁶ agents would be picked by more
//! than 45 others), so inbound connections are almost never refused, while one agent's
//! memory and `Have` traffic stay bounded whatever the size of the LAN.

use crate::digest::Digest;
use crate::wire::PeerId;

/// The overlay's two numbers (see the module docs for the reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSetConfig {
    /// Members this agent dials (the highest link scores).
    pub dial: usize,
    /// Connections this agent keeps at most, dialled and accepted together.
    pub max_peers: usize,
}

impl Default for PeerSetConfig {
    fn default() -> Self {
        PeerSetConfig {
            dial: 20,
            max_peers: 56,
        }
    }
}

impl PeerSetConfig {
    /// The members `me` should be connected to by its own dialling: the `dial` with the
    /// highest [`link_score`] among `members` (`me` itself is skipped), best first.
    pub fn dial_targets<'a>(
        &self,
        me: &PeerId,
        members: impl IntoIterator<Item = &'a PeerId>,
    ) -> Vec<PeerId> {
        let mut scored: Vec<(u64, PeerId)> = members
            .into_iter()
            .filter(|m| *m != me)
            .map(|m| (link_score(me, m), *m))
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.dedup_by_key(|(_, id)| *id);
        scored.truncate(self.dial);
        scored.into_iter().map(|(_, id)| id).collect()
    }

    /// Whether an agent with `connected` connections open may take one more.
    pub fn has_room(&self, connected: usize) -> bool {
        connected < self.max_peers
    }
}

/// The score of the link between `a` and `b`; the same from both ends.
pub fn link_score(a: &PeerId, b: &PeerId) -> u64 {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let d = Digest::of_parts(&[b"SHOAL-LINK-V1\0", &lo.0, &hi.0]);
    u64::from_be_bytes(d.0[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, VecDeque};

    fn id(i: u32) -> PeerId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        PeerId(b)
    }

    #[test]
    fn the_score_is_symmetric_and_the_choice_order_free() {
        assert_eq!(link_score(&id(1), &id(2)), link_score(&id(2), &id(1)));
        let cfg = PeerSetConfig::default();
        let members: Vec<PeerId> = (0..100).map(id).collect();
        let mut reversed = members.clone();
        reversed.reverse();
        let a = cfg.dial_targets(&id(7), &members);
        assert_eq!(a, cfg.dial_targets(&id(7), &reversed));
        assert_eq!(a.len(), cfg.dial);
        assert!(!a.contains(&id(7)));
    }

    #[test]
    fn a_small_lan_is_a_full_mesh() {
        let cfg = PeerSetConfig::default();
        let members: Vec<PeerId> = (0..=cfg.dial as u32).map(id).collect();
        for m in &members {
            assert_eq!(cfg.dial_targets(m, &members).len(), cfg.dial);
        }
    }

    /// The overlay over 1,000 agents: connected, every degree within the cap, and a
    /// diameter of a few hops.
    #[test]
    fn a_thousand_agents_form_a_connected_small_world() {
        let cfg = PeerSetConfig::default();
        let n = 1000u32;
        let members: Vec<PeerId> = (0..n).map(id).collect();
        let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n as usize];
        for (i, m) in members.iter().enumerate() {
            for t in cfg.dial_targets(m, &members) {
                let j = u32::from_be_bytes(t.0[..4].try_into().unwrap()) as usize;
                adj[i].insert(j);
                adj[j].insert(i);
            }
        }
        let max = adj.iter().map(BTreeSet::len).max().unwrap();
        assert!(max <= cfg.max_peers, "an agent has {max} links");
        let mut dist = vec![usize::MAX; n as usize];
        let mut queue = VecDeque::from([0usize]);
        dist[0] = 0;
        while let Some(i) = queue.pop_front() {
            for &j in &adj[i] {
                if dist[j] == usize::MAX {
                    dist[j] = dist[i] + 1;
                    queue.push_back(j);
                }
            }
        }
        let far = dist.iter().max().unwrap();
        assert!(*far <= 4, "an agent is {far} hops away (or unreachable)");
    }
}
