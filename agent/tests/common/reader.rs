//! A peer that knows the release (it passes the handshake), asks for data and never reads
//! what it is sent: the attack of the agent-core issue (#8), where such a peer grew an
//! agent to 2.46 GB in seconds.

use std::net::SocketAddr;

use shoal_protocol::Digest;
use shoal_protocol::wire::{
    BlockRef, Capabilities, FrameDecoder, Handshake, Hello, Message, PROTOCOL_VERSION, PeerId,
    PieceNumber, Role,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` with a tiny receive buffer, joins `release` and returns the socket;
/// nothing is read from it after the handshake.
/// Sends an empty piece map of `pieces` pieces (what the agent requires first).
pub async fn join_and_stop_reading(
    addr: SocketAddr,
    release: Digest,
    pieces: u32,
    id: u8,
) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    // A fixed small buffer (no autotuning), so the agent's writes block soon.
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED,
        peer_id: PeerId([id; 16]),
        nonce: [id; 32],
    };
    let (mut hs, first) = Handshake::new(Role::Initiator, hello, release, Vec::new());
    s.write_all(&first.to_frame()).await.unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 256];
    loop {
        // Read byte-sized pieces, so nothing after the agent's Join is taken in.
        let msg = loop {
            if let Some(m) = dec.next_message().unwrap() {
                break m;
            }
            let want = dec.wanted().unwrap().min(buf.len());
            let n = s.read(&mut buf[..want]).await.unwrap();
            assert!(n > 0, "the agent closed the handshake");
            dec.push(&buf[..n]);
        };
        let step = hs.handle(msg).unwrap();
        if let Some(m) = step.send {
            s.write_all(&m.to_frame()).await.unwrap();
        }
        if step.joined.is_some() {
            break;
        }
    }
    let map = Message::PieceMap {
        piece_count: pieces,
        bits: vec![0; pieces.div_ceil(8) as usize],
    };
    s.write_all(&map.to_frame()).await.unwrap();
    s
}

/// What a never-reading peer asks for.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    /// Valid 64 KiB blocks (every piece is at least that long, but the last).
    Blocks,
    /// Blocks past the end of their piece: each is answered by a `Reject`.
    Invalid,
    /// 256 KiB ranges of an index file: each is answered by `IndexData`.
    Index([u8; 32]),
}

/// The frames of `n` requests of kind `ask`, over the first `pieces - 1` pieces.
pub fn requests(n: usize, pieces: u32, ask: Ask) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let piece = PieceNumber(i as u32 % (pieces - 1).max(1));
        let msg = match ask {
            Ask::Blocks => Message::Request(BlockRef {
                piece,
                offset: 0,
                length: 64 * 1024,
            }),
            Ask::Invalid => Message::Request(BlockRef {
                piece,
                offset: 2 * 1024 * 1024,
                length: 1024,
            }),
            Ask::Index(index) => Message::IndexRequest {
                index,
                offset: 0,
                length: 256 * 1024,
            },
        };
        msg.encode(&mut out);
    }
    out
}
