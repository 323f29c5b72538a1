//! Bans by address: a banned peer's addresses are banned too (it may come back under
//! another id), and the addresses of departed peers are remembered for a while so a
//! piece checked after its sender left can still ban them.

use shoal_protocol::wire::PeerId;

use super::{DEPARTED, Node};

impl Node {
    /// Bans the addresses `peer` connected from (it may come back under another id), and
    /// closes every other peer's connection from them; returns the addresses.
    pub(super) fn ban_addresses(&mut self, peer: PeerId) -> Vec<std::net::IpAddr> {
        let mut addrs = self.addresses(peer);
        self.departed.retain(|(p, a)| {
            if *p == peer {
                addrs.extend(a);
            }
            *p != peer
        });
        addrs.sort_unstable();
        addrs.dedup();
        for a in &addrs {
            self.p.gate.ban(*a);
        }
        let others: Vec<PeerId> = self
            .peers
            .keys()
            .copied()
            .filter(|p| *p != peer && self.addresses(*p).iter().any(|a| self.p.gate.is_banned(*a)))
            .collect();
        let now = self.now();
        for p in others {
            tracing::warn!(peer = ?p, "closed: its address is banned");
            self.p.swarm.handle_disconnected(p, now);
            self.forget(p);
        }
        addrs
    }

    /// The addresses of `peer`'s connections.
    pub(super) fn addresses(&self, peer: PeerId) -> Vec<std::net::IpAddr> {
        self.peers
            .get(&peer)
            .map(|pc| {
                std::iter::once(&pc.current)
                    .chain(&pc.others)
                    .filter_map(|c| c.addr)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers the addresses of `peer`, whose connections end (see `departed`).
    pub(super) fn remember_departed(&mut self, peer: PeerId) {
        let addrs = self.addresses(peer);
        if !addrs.is_empty() {
            if self.departed.len() >= DEPARTED {
                self.departed.pop_front();
            }
            self.departed.push_back((peer, addrs));
        }
    }
}
