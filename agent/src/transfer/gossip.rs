//! The offering side of manifest gossip: a peer that joined with an older release of
//! the channel is handed the trust documents the current manifest was verified through
//! (if it announced TRUST_GOSSIP), the manifest and its indexes, and may ask for index
//! ranges again, until it goes quiet. Nothing else is said on such a connection.
//!
//! The receiving side is the node (it passes offered documents up as [`GossipEvent`]s)
//! and the daemon, which verifies them (`PROTOCOL.md` §6.3).
//!
//! [`GossipEvent`]: super::GossipEvent

use std::time::Duration;

use shoal_protocol::limits::MAX_BLOCK_LEN;
use shoal_protocol::wire::{Capabilities, Message};

use super::conn::{Reader, Writer, write_within};

/// How long a gossip session waits for the peer's next request.
const GOSSIP_IDLE: Duration = Duration::from_secs(30);

/// The current release, as handed to peers that join with an older one.
#[derive(Debug)]
pub struct GossipOffer {
    /// Older releases of the channel we delivered: id and piece count.
    pub older: Vec<(shoal_protocol::Digest, u32)>,
    /// The trust documents the manifest was verified through, the anchor first (sent
    /// before it to peers that announce TRUST_GOSSIP).
    pub trust: Vec<Vec<u8>>,
    /// The current manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// The current release's index files: SHA-256 and bytes.
    pub indexes: Vec<([u8; 32], Vec<u8>)>,
}

impl GossipOffer {
    fn index_range(&self, index: &[u8; 32], offset: u32, length: u32) -> Vec<u8> {
        let Some((_, b)) = self.indexes.iter().find(|(i, _)| i == index) else {
            return Vec::new();
        };
        let start = (offset as usize).min(b.len());
        b[start..start.saturating_add(length as usize).min(b.len())].to_vec()
    }
}

/// Hands a peer on an older release the current manifest and its indexes, then answers
/// its index requests until it goes quiet. Each write must finish within `write_timeout`,
/// and a request is read only after the previous answer was written, so a peer that
/// does not read holds at most one answer.
pub(super) async fn offer_newer(
    rd: &mut Reader,
    wr: &mut Writer,
    offer: &GossipOffer,
    piece_count: u32,
    capabilities: Capabilities,
    write_timeout: Duration,
) -> std::io::Result<()> {
    let empty = shoal_protocol::swarm::Bitfield::new(piece_count);
    let first = Message::PieceMap {
        piece_count,
        bits: empty.as_wire().to_vec(),
    };
    write_within(wr, &first.to_frame(), write_timeout).await?;
    // The trust chain first: a peer that missed a key rotation verifies the manifest
    // only under the trust it learns here.
    if capabilities.contains(Capabilities::TRUST_GOSSIP) {
        for doc in &offer.trust {
            let m = Message::TrustOffer(doc.clone());
            write_within(wr, &m.to_frame(), write_timeout).await?;
        }
    }
    let offer_msg = Message::ManifestOffer(offer.manifest.clone());
    write_within(wr, &offer_msg.to_frame(), write_timeout).await?;
    for (index, bytes) in &offer.indexes {
        for (k, chunk) in bytes.chunks(MAX_BLOCK_LEN as usize).enumerate() {
            let data = Message::IndexData {
                index: *index,
                offset: (k * MAX_BLOCK_LEN as usize) as u32,
                data: chunk.to_vec(),
            };
            write_within(wr, &data.to_frame(), write_timeout).await?;
        }
    }
    loop {
        let msg = tokio::time::timeout(GOSSIP_IDLE, rd.next())
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if let Message::IndexRequest {
            index,
            offset,
            length,
        } = msg
        {
            let data = offer.index_range(&index, offset, length);
            let reply = Message::IndexData {
                index,
                offset,
                data,
            };
            write_within(wr, &reply.to_frame(), write_timeout).await?;
        }
    }
}
