//! One TCP connection to a LAN peer: the handshake, then frames in both directions.
//!
//! The task owns the socket; the node owns policy. After the handshake the task hands
//! the node a sender for outgoing messages and forwards every decoded incoming message.
//! When the node drops the sender (it disconnected or banned the peer) the task closes
//! the socket; when the socket ends the task tells the node. A peer that breaks framing
//! or the handshake is dropped here without ever reaching the node.

use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_protocol::limits::MAX_BLOCK_LEN;
use shoal_protocol::wire::{
    Capabilities, FrameDecoder, Hello, Message, PROTOCOL_VERSION, PeerId, Role, join_proof,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Identifies one connection (a peer may briefly have two: only one is used).
pub type ConnId = u64;

/// What connection tasks tell the node.
#[derive(Debug)]
pub enum NodeInput {
    /// Handshake done; send messages to the peer through `tx`.
    Joined {
        /// Connection.
        conn: ConnId,
        /// The peer's id.
        peer: PeerId,
        /// Whether we opened the connection.
        initiated: bool,
        /// Outgoing messages.
        tx: mpsc::UnboundedSender<Message>,
    },
    /// A message from the peer.
    Message {
        /// Connection.
        conn: ConnId,
        /// The message.
        msg: Message,
    },
    /// The connection ended.
    Closed {
        /// Connection.
        conn: ConnId,
    },
    /// Close a redundant connection (a second one to a peer already joined).
    Retire {
        /// Connection.
        conn: ConnId,
    },
    /// An origin fetch finished.
    Origin {
        /// Piece number.
        piece: u32,
        /// The bytes, or `None` on failure.
        data: Option<Vec<u8>>,
    },
    /// A verified piece's write to the store finished (off the node task).
    Stored {
        /// Piece number.
        piece: u32,
        /// Whether the write succeeded.
        ok: bool,
    },
}

/// What a connection needs to know to handshake.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// Our peer id.
    pub me: PeerId,
    /// The release we serve and fetch.
    pub release: Digest,
    /// For peers still on an older release of the channel: the newer one to hand over.
    pub gossip: Option<Arc<GossipOffer>>,
}

/// The current release, as handed to peers that join with an older one.
#[derive(Debug)]
pub struct GossipOffer {
    /// Older releases of the channel we delivered: id and piece count.
    pub older: Vec<(Digest, u32)>,
    /// The current manifest's exact bytes.
    pub manifest: Vec<u8>,
    /// The current release's index files: SHA-256 and bytes.
    pub indexes: Vec<([u8; 32], Vec<u8>)>,
}

/// How long a gossip session waits for the peer's next request.
const GOSSIP_IDLE: Duration = Duration::from_secs(30);

/// What the handshake established.
enum Joined {
    /// The peer joined our current release.
    Current(PeerId),
    /// The peer joined an older release we know: hand it the newer one.
    Older {
        /// Pieces in that older release (for the empty piece map).
        piece_count: u32,
    },
}

/// The reading half of a connection: whole frames, decoded with one read buffer for the
/// connection's lifetime, never buffering past one legal frame.
struct Reader {
    rd: OwnedReadHalf,
    dec: FrameDecoder,
    buf: Vec<u8>,
}

impl Reader {
    fn new(rd: OwnedReadHalf) -> Self {
        Reader {
            rd,
            dec: FrameDecoder::new(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    async fn next(&mut self) -> std::io::Result<Message> {
        let bad = |e| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        loop {
            if let Some(m) = self.dec.next_message().map_err(bad)? {
                return Ok(m);
            }
            let want = self.dec.wanted().map_err(bad)?.min(self.buf.len());
            let n = self.rd.read(&mut self.buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.dec.push(&self.buf[..n]);
        }
    }
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

async fn handshake(
    rd: &mut Reader,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    info: &HandshakeInfo,
    role: Role,
) -> std::io::Result<Joined> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|_| invalid("no randomness"))?;
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED | Capabilities::STATS | Capabilities::MANIFEST_GOSSIP,
        peer_id: info.me,
        nonce,
    });
    wr.write_all(&hello.to_frame()).await?;
    let Message::Hello(theirs) = rd.next().await? else {
        return Err(invalid("first message is not Hello"));
    };
    if theirs.version != PROTOCOL_VERSION {
        return Err(invalid("unsupported protocol version"));
    }
    if theirs.peer_id == info.me {
        return Err(invalid("connected to ourselves"));
    }
    let (ni, nr) = match role {
        Role::Initiator => (nonce, theirs.nonce),
        Role::Responder => (theirs.nonce, nonce),
    };
    let mine = join_proof(role, &info.release, &ni, &nr);
    let other = match role {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    };
    let expected = join_proof(other, &info.release, &ni, &nr);
    if role == Role::Initiator {
        wr.write_all(&Message::Join { proof: mine }.to_frame())
            .await?;
    }
    let Message::Join { proof } = rd.next().await? else {
        return Err(invalid("second message is not Join"));
    };
    if proof == expected {
        if role == Role::Responder {
            wr.write_all(&Message::Join { proof: mine }.to_frame())
                .await?;
        }
        return Ok(Joined::Current(theirs.peer_id));
    }
    // A responder may accept a release it delivered earlier, to hand over the newer one.
    let gossip_ok =
        role == Role::Responder && theirs.capabilities.contains(Capabilities::MANIFEST_GOSSIP);
    let older = info.gossip.as_ref().filter(|_| gossip_ok).and_then(|g| {
        g.older
            .iter()
            .find(|(id, _)| proof == join_proof(Role::Initiator, id, &ni, &nr))
            .copied()
    });
    let Some((old, piece_count)) = older else {
        return Err(invalid("peer does not know this release"));
    };
    let answer = join_proof(Role::Responder, &old, &ni, &nr);
    wr.write_all(&Message::Join { proof: answer }.to_frame())
        .await?;
    Ok(Joined::Older { piece_count })
}

/// Hands a peer on an older release the current manifest and its indexes, then answers
/// its index requests until it goes quiet.
async fn offer_newer(
    rd: &mut Reader,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    offer: &GossipOffer,
    piece_count: u32,
) -> std::io::Result<()> {
    let empty = shoal_protocol::swarm::Bitfield::new(piece_count);
    let mut out = Message::PieceMap {
        piece_count,
        bits: empty.as_wire().to_vec(),
    }
    .to_frame();
    Message::ManifestOffer(offer.manifest.clone()).encode(&mut out);
    for (index, bytes) in &offer.indexes {
        for (k, chunk) in bytes.chunks(MAX_BLOCK_LEN as usize).enumerate() {
            let data = Message::IndexData {
                index: *index,
                offset: (k * MAX_BLOCK_LEN as usize) as u32,
                data: chunk.to_vec(),
            };
            data.encode(&mut out);
        }
    }
    wr.write_all(&out).await?;
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
            let data = offer
                .indexes
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, b)| {
                    let start = (offset as usize).min(b.len());
                    b[start..start.saturating_add(length as usize).min(b.len())].to_vec()
                })
                .unwrap_or_default();
            let reply = Message::IndexData {
                index,
                offset,
                data,
            };
            wr.write_all(&reply.to_frame()).await?;
        }
    }
}

/// Runs one connection until either side ends it.
pub async fn run(
    stream: TcpStream,
    role: Role,
    info: HandshakeInfo,
    conn: ConnId,
    node: mpsc::Sender<NodeInput>,
) {
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().ok();
    let (rd, mut wr) = stream.into_split();
    let mut rd = Reader::new(rd);
    let joined =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut rd, &mut wr, &info, role))
            .await
        {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                tracing::debug!(?addr, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?addr, "handshake timed out");
                return;
            }
        };
    let peer = match joined {
        Joined::Current(peer) => peer,
        Joined::Older { piece_count } => {
            if let Some(offer) = &info.gossip {
                let r = offer_newer(&mut rd, &mut wr, offer, piece_count).await;
                tracing::debug!(?addr, ?r, "handed a newer manifest to a peer");
            }
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let initiated = role == Role::Initiator;
    if node
        .send(NodeInput::Joined {
            conn,
            peer,
            initiated,
            tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let reader = async {
        loop {
            match rd.next().await {
                Ok(msg) => {
                    if node.send(NodeInput::Message { conn, msg }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(?addr, error = %e, "peer connection ended");
                    return;
                }
            }
        }
    };
    let writer = async {
        let mut out = Vec::new();
        while let Some(msg) = rx.recv().await {
            out.clear();
            msg.encode(&mut out);
            while let Ok(more) = rx.try_recv() {
                more.encode(&mut out);
                if out.len() > 1 << 20 {
                    break;
                }
            }
            if wr.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    let _ = node.send(NodeInput::Closed { conn }).await;
}
