//! A lying peer for adversarial tests: it knows the release (so it passes the
//! handshake), claims every piece, and answers every request with garbage.

use shoal_protocol::Digest;
use shoal_protocol::wire::{
    Capabilities, FrameDecoder, Hello, Message, PROTOCOL_VERSION, PeerId, Role, join_proof,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn next(s: &mut TcpStream, d: &mut FrameDecoder) -> Option<Message> {
    let mut buf = [0u8; 65536];
    loop {
        if let Ok(Some(m)) = d.next_message() {
            return Some(m);
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        d.push(&buf[..n]);
    }
}

/// Plays, on `s`, a peer that knows the release (so it passes the handshake), claims
/// every piece and answers every request with garbage. Returns the blocks it served.
pub async fn liar(s: TcpStream, release: Digest, pieces: u32) -> usize {
    let mut served = 0;
    let _ = play(s, release, pieces, &mut served).await;
    served
}

/// The liar's side of the conversation; `None` once the victim hangs up (it bans liars).
async fn play(mut s: TcpStream, release: Digest, pieces: u32, served: &mut usize) -> Option<()> {
    let mut d = FrameDecoder::new();
    let Message::Hello(theirs) = next(&mut s, &mut d).await? else {
        return None;
    };
    let nonce = [9u8; 32];
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED,
        peer_id: PeerId([0xee; 16]),
        nonce,
    });
    s.write_all(&hello.to_frame()).await.ok()?;
    let Message::Join { .. } = next(&mut s, &mut d).await? else {
        return None;
    };
    let proof = join_proof(Role::Responder, &release, &theirs.nonce, &nonce);
    s.write_all(&Message::Join { proof }.to_frame())
        .await
        .ok()?;
    let mut bits = vec![0xffu8; pieces.div_ceil(8) as usize];
    if !pieces.is_multiple_of(8) {
        *bits.last_mut()? &= 0xffu8 << (8 - pieces % 8);
    }
    let map = Message::PieceMap {
        piece_count: pieces,
        bits,
    };
    s.write_all(&map.to_frame()).await.ok()?;
    s.write_all(&Message::Unchoke { max_requests: 64 }.to_frame())
        .await
        .ok()?;
    loop {
        if let Message::Request(b) = next(&mut s, &mut d).await? {
            let garbage = Message::Piece {
                piece: b.piece,
                offset: b.offset,
                data: vec![0x42; b.length as usize],
            };
            s.write_all(&garbage.to_frame()).await.ok()?;
            *served += 1;
        }
    }
}
