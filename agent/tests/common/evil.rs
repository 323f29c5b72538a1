//! An evil peer for the table-driven harness (`evil_peers.rs`): it listens where the
//! agent under test is told a peer is, passes the handshake as a real peer would (it
//! knows the release), then plays one [`Act`] on every connection the agent makes, and
//! records what the agent did about it.
//!
//! It speaks the protocol through `shoal-protocol`'s codec, and raw bytes where the
//! act is about malformed frames.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_protocol::Digest;
use shoal_protocol::index::Piece;
use shoal_protocol::wire::{
    BlockRef, Capabilities, FrameDecoder, Hello, Message, PROTOCOL_VERSION, PeerId, PieceNumber,
    RejectReason, Role, StatsSummary, join_proof,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the evil peer does once joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Claims every piece and answers requests with the real bytes, one flipped.
    FlipsAByte,
    /// Claims every piece and answers every request with `Reject(not held)`.
    LiesInItsMap,
    /// Claims every piece and answers every request with `Reject(overloaded)`.
    RejectsEverything,
    /// Claims every piece, unchokes, sends a `KeepAlive` each second, answers nothing.
    IgnoresEverything,
    /// Claims every piece; answers each request with `Choke` then `Unchoke`.
    FlapsItsChoke,
    /// Claims every piece, answers four requests, then says nothing at all.
    SilentMidPiece,
    /// Claims every piece, then sends a block frame one byte every 100 ms.
    DripsOneByte,
    /// Claims every piece and sends blocks nobody asked for, as fast as it can.
    SendsUnaskedBlocks,
    /// Claims nothing and sends `Request`s for every block, as fast as it can.
    FloodsRequests,
    /// Claims nothing, requests every block and never reads again.
    RequestsAndNeverReads,
    /// Claims nothing and sends `KeepAlive`s as fast as it can.
    FloodsKeepAlives,
    /// Claims nothing and announces piece 0 with `Have` again and again.
    FloodsHaves,
    /// Claims nothing and sends `Stats` as fast as it can.
    FloodsStats,
    /// Claims nothing and sends `Choke` as fast as it can (the agent is choked already).
    FloodsChokes,
    /// Claims every piece and sends `Unchoke` with the same window as fast as it can.
    FloodsUnchokes,
    /// Claims nothing and cancels requests it never made, as fast as it can.
    FloodsCancels,
    /// Claims nothing and rejects requests the agent never made, as fast as it can.
    FloodsRejects,
    /// Sends a frame header announcing 4 GiB.
    HugeLength,
    /// Sends a frame of length zero.
    ZeroLength,
    /// Sends a frame of an unknown type.
    UnknownType,
    /// Announces a piece past the release.
    HaveOutOfRange,
    /// Sends a second `PieceMap`.
    SecondPieceMap,
    /// Sends half of a frame and then nothing.
    TruncatedFrame,
    /// Announces a `ManifestOffer` of 2 MiB (the limit is 1 MiB).
    OversizedManifest,
}

/// What the agent did, as the evil peer saw it.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Connections the agent made to it.
    pub connections: usize,
    /// Requests it received, all connections together.
    pub requests: usize,
    /// When it first misbehaved.
    pub offended: Option<Instant>,
    /// How long after the first offence the agent closed that connection.
    pub closed_after: Option<Duration>,
}

/// A running evil peer.
pub struct Evil {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

/// What every connection of one evil peer knows.
#[derive(Clone)]
struct Plan {
    act: Act,
    release: Digest,
    pieces: Arc<Vec<Piece>>,
    content: Arc<Vec<u8>>,
    record: Arc<Mutex<Record>>,
}

impl Evil {
    /// Listens on loopback and plays `act` on every connection, for the release
    /// `release` made of `pieces` over `content`.
    pub async fn start(act: Act, release: Digest, pieces: Vec<Piece>, content: Vec<u8>) -> Evil {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let plan = Plan {
            act,
            release,
            pieces: Arc::new(pieces),
            content: Arc::new(content),
            record: record.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                plan.record.lock().unwrap().connections += 1;
                tokio::spawn(play(s, plan.clone()));
            }
        });
        Evil { addr, record, task }
    }

    /// What it saw so far.
    pub fn record(&self) -> Record {
        self.record.lock().unwrap().clone()
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: handshake, then the act, until the agent closes it (or 60 s).
async fn play(s: TcpStream, plan: Plan) {
    let (mut r, mut w) = s.into_split();
    let mut dec = FrameDecoder::new();
    if handshake(&mut r, &mut w, &mut dec, &plan.release)
        .await
        .is_none()
    {
        return;
    }
    // The reader: requests go to the act; the end of the connection is reported.
    let (tx, rx) = mpsc::unbounded_channel();
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    let reads = plan.act != Act::RequestsAndNeverReads;
    let reader = {
        let record = plan.record.clone();
        tokio::spawn(async move {
            if reads {
                read_all(r, dec, tx, record).await;
            } else {
                // Reads nothing more: the end shows as a failed write.
                let _keep = (r, tx);
                std::future::pending::<()>().await;
            }
            let _ = closed_tx.send(());
        })
    };
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::select! {
            // The act stops early only on a failed write: the agent closed the connection.
            _ = act(&mut w, rx, &plan) => {}
            _ = closed => {}
        }
    })
    .await;
    reader.abort();
    if ended.is_err() {
        return;
    }
    let end = Instant::now();
    let mut rec = plan.record.lock().unwrap();
    if let Some(at) = rec.offended
        && rec.closed_after.is_none()
    {
        rec.closed_after = Some(end.saturating_duration_since(at));
    }
}

/// The responder's side of the handshake; `None` if the agent went away.
async fn handshake(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    dec: &mut FrameDecoder,
    release: &Digest,
) -> Option<()> {
    let Message::Hello(theirs) = next(r, dec).await? else {
        return None;
    };
    let nonce = [7u8; 32];
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED | Capabilities::STATS,
        // The high bit clear: not a light (slow-link) peer.
        peer_id: PeerId([0x61; 16]),
        nonce,
    });
    w.write_all(&hello.to_frame()).await.ok()?;
    let Message::Join { .. } = next(r, dec).await? else {
        return None;
    };
    let proof = join_proof(Role::Responder, release, &theirs.nonce, &nonce);
    w.write_all(&Message::Join { proof }.to_frame())
        .await
        .ok()?;
    Some(())
}

async fn next(r: &mut OwnedReadHalf, dec: &mut FrameDecoder) -> Option<Message> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(m) = dec.next_message().ok()? {
            return Some(m);
        }
        let n = r.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        dec.push(&buf[..n]);
    }
}

/// Reads until the agent closes: requests are counted and passed to the act.
async fn read_all(
    mut r: OwnedReadHalf,
    mut dec: FrameDecoder,
    tx: mpsc::UnboundedSender<BlockRef>,
    record: Arc<Mutex<Record>>,
) {
    while let Some(m) = next(&mut r, &mut dec).await {
        if let Message::Request(b) = m {
            record.lock().unwrap().requests += 1;
            let _ = tx.send(b);
        }
    }
}

fn offend(plan: &Plan) {
    plan.record
        .lock()
        .unwrap()
        .offended
        .get_or_insert_with(Instant::now);
}

fn map(pieces: u32, all: bool) -> Message {
    let mut bits = vec![if all { 0xff } else { 0 }; pieces.div_ceil(8) as usize];
    if all && !pieces.is_multiple_of(8) {
        *bits.last_mut().unwrap() &= 0xffu8 << (8 - pieces % 8);
    }
    Message::PieceMap {
        piece_count: pieces,
        bits,
    }
}

/// The real bytes of `b`.
fn block(plan: &Plan, b: &BlockRef) -> Vec<u8> {
    let p = &plan.pieces[b.piece.0 as usize];
    let start = (p.offset + u64::from(b.offset)) as usize;
    plan.content[start..start + b.length as usize].to_vec()
}

/// Plays the act; `None` once a write fails (the agent closed the connection).
async fn act(
    w: &mut OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<BlockRef>,
    plan: &Plan,
) -> Option<()> {
    let n = plan.pieces.len() as u32;
    let claims_all = !matches!(
        plan.act,
        Act::FloodsRequests
            | Act::RequestsAndNeverReads
            | Act::FloodsKeepAlives
            | Act::FloodsHaves
            | Act::FloodsStats
            | Act::FloodsChokes
            | Act::FloodsCancels
            | Act::FloodsRejects
    );
    send(w, &map(n, claims_all)).await?;
    if claims_all {
        send(w, &Message::Unchoke { max_requests: 64 }).await?;
    }
    match plan.act {
        Act::FlipsAByte => {
            while let Some(b) = requests.recv().await {
                let mut data = block(plan, &b);
                data[0] ^= 1;
                offend(plan);
                send(w, &piece(b, data)).await?;
            }
        }
        Act::LiesInItsMap | Act::RejectsEverything => {
            let reason = if plan.act == Act::LiesInItsMap {
                RejectReason::NotHeld
            } else {
                RejectReason::Overloaded
            };
            while let Some(block) = requests.recv().await {
                offend(plan);
                send(w, &Message::Reject { block, reason }).await?;
            }
        }
        Act::IgnoresEverything => loop {
            if requests.try_recv().is_ok() {
                offend(plan);
            }
            send(w, &Message::KeepAlive).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Act::FlapsItsChoke => {
            while requests.recv().await.is_some() {
                offend(plan);
                send(w, &Message::Choke).await?;
                send(w, &Message::Unchoke { max_requests: 64 }).await?;
            }
        }
        Act::SilentMidPiece => {
            for _ in 0..4 {
                let b = requests.recv().await?;
                send(w, &piece(b, block(plan, &b))).await?;
            }
            offend(plan);
            std::future::pending::<()>().await;
        }
        Act::DripsOneByte => {
            let b = BlockRef {
                piece: PieceNumber(0),
                offset: 0,
                length: plan.pieces[0].length.min(128 * 1024),
            };
            let frame = piece(b, block(plan, &b)).to_frame();
            offend(plan);
            for byte in frame {
                w.write_all(&[byte]).await.ok()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Act::SendsUnaskedBlocks => {
            let b = BlockRef {
                piece: PieceNumber(n - 1),
                offset: 0,
                length: plan.pieces[n as usize - 1].length.min(128 * 1024),
            };
            let frame = piece(b, block(plan, &b)).to_frame();
            offend(plan);
            for _ in 0..100_000 {
                w.write_all(&frame).await.ok()?;
            }
        }
        Act::FloodsRequests | Act::RequestsAndNeverReads => {
            let mut flood = Vec::new();
            for (i, p) in plan.pieces.iter().enumerate() {
                let mut offset = 0;
                while offset < p.length {
                    let length = (p.length - offset).min(64 * 1024);
                    Message::Request(BlockRef {
                        piece: PieceNumber(i as u32),
                        offset,
                        length,
                    })
                    .encode(&mut flood);
                    offset += length;
                }
            }
            offend(plan);
            for _ in 0..10_000 {
                w.write_all(&flood).await.ok()?;
            }
        }
        Act::FloodsKeepAlives
        | Act::FloodsHaves
        | Act::FloodsStats
        | Act::FloodsChokes
        | Act::FloodsUnchokes
        | Act::FloodsCancels
        | Act::FloodsRejects => {
            let never = BlockRef {
                piece: PieceNumber(0),
                offset: 0,
                length: 1024,
            };
            let m = match plan.act {
                Act::FloodsKeepAlives => Message::KeepAlive,
                Act::FloodsHaves => Message::Have(PieceNumber(0)),
                Act::FloodsChokes => Message::Choke,
                Act::FloodsUnchokes => Message::Unchoke { max_requests: 64 },
                Act::FloodsCancels => Message::Cancel(never),
                Act::FloodsRejects => Message::Reject {
                    block: never,
                    reason: RejectReason::Overloaded,
                },
                _ => Message::Stats(StatsSummary {
                    name: "evil".into(),
                    uptime_secs: 1,
                    pieces_held: 0,
                    piece_count: n,
                    bytes_from_peers: 0,
                    bytes_from_origin: 0,
                    bytes_uploaded: 0,
                }),
            };
            let mut burst = Vec::new();
            for _ in 0..1024 {
                m.encode(&mut burst);
            }
            offend(plan);
            let began = Instant::now();
            while began.elapsed() < Duration::from_secs(30) {
                w.write_all(&burst).await.ok()?;
                tokio::task::yield_now().await;
            }
        }
        Act::HugeLength => raw(w, plan, &[0xff, 0xff, 0xff, 0xff, 0x06]).await?,
        Act::ZeroLength => raw(w, plan, &[0, 0, 0, 0]).await?,
        Act::UnknownType => raw(w, plan, &[0, 0, 0, 1, 0x7f]).await?,
        Act::HaveOutOfRange => {
            offend(plan);
            send(w, &Message::Have(PieceNumber(n + 5))).await?;
        }
        Act::SecondPieceMap => {
            offend(plan);
            send(w, &map(n, true)).await?;
        }
        Act::TruncatedFrame => {
            let frame = Message::Have(PieceNumber(0)).to_frame();
            raw(w, plan, &frame[..frame.len() - 2]).await?;
        }
        Act::OversizedManifest => raw(w, plan, &[0, 0x20, 0, 1, 0x0c, b'{']).await?,
    }
    // Acts that end wait for the agent to close, keeping the connection open.
    std::future::pending::<()>().await;
    Some(())
}

fn piece(b: BlockRef, data: Vec<u8>) -> Message {
    Message::Piece {
        piece: b.piece,
        offset: b.offset,
        data,
    }
}

async fn send(w: &mut OwnedWriteHalf, m: &Message) -> Option<()> {
    w.write_all(&m.to_frame()).await.ok()
}

async fn raw(w: &mut OwnedWriteHalf, plan: &Plan, bytes: &[u8]) -> Option<()> {
    offend(plan);
    w.write_all(bytes).await.ok()
}
