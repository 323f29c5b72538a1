//! Documents peers hand over (PROTOCOL.md §6.3): trust documents, manifests and the
//! index parts that follow a manifest, passed up to whoever decides about releases
//! (the daemon verifies them) as [`GossipEvent`]s, each kind bounded.

use std::time::Instant;

use shoal_protocol::Digest;
use shoal_protocol::wire::PeerId;

use super::{MAX_RECENT_OFFERS, Node, OFFER_AGAIN};
use crate::transfer::GossipEvent;

impl Node {
    /// A manifest: passed up once per [`OFFER_AGAIN`], whoever offers it.
    pub(super) fn on_manifest_offered(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let digest = Digest::of(&bytes);
        self.offers.retain(|(_, _, at)| at.elapsed() < OFFER_AGAIN);
        if self.offers.iter().any(|(d, _, _)| *d == digest) {
            return;
        }
        if let Some(g) = &self.p.gossip
            && g.try_send(GossipEvent::Manifest { peer, bytes }).is_ok()
        {
            if self.offers.len() >= MAX_RECENT_OFFERS {
                self.offers.remove(0);
            }
            self.offers.push((digest, peer, Instant::now()));
        }
    }

    /// A trust document: passed up once per [`OFFER_AGAIN`] (a peer on an older release
    /// is handed the whole chain on every connection); a peer's flood of them is paid
    /// from its noise allowance in the core.
    pub(super) fn on_trust_offered(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let digest = Digest::of(&bytes);
        self.trust_seen.retain(|(_, at)| at.elapsed() < OFFER_AGAIN);
        if self.trust_seen.iter().any(|(d, _)| *d == digest) {
            return;
        }
        if let Some(g) = &self.p.gossip
            && g.try_send(GossipEvent::Trust { peer, bytes }).is_ok()
        {
            if self.trust_seen.len() >= MAX_RECENT_OFFERS {
                self.trust_seen.remove(0);
            }
            self.trust_seen.push((digest, Instant::now()));
        }
    }

    /// Index data: only from a peer whose manifest was passed up (another peer cannot
    /// spoil the assembly).
    pub(super) fn on_index_received(
        &mut self,
        peer: PeerId,
        index: [u8; 32],
        offset: u32,
        data: Vec<u8>,
    ) {
        let offered = self.offers.iter().any(|(_, p, _)| *p == peer);
        if offered && let Some(g) = &self.p.gossip {
            let _ = g.try_send(GossipEvent::Index {
                peer,
                index,
                offset,
                data,
            });
        }
    }
}
