//! One TCP connection to a LAN peer: in a private swarm the Noise handshake first
//! ([`crate::secure`]: every byte after it goes through records), then the Shoal
//! handshake, then frames in both directions.
//!
//! The task owns the socket; the node owns policy, and the handshake's rules live in
//! `shoal_protocol::wire::Handshake`. After the handshake the task hands the node a
//! sender for [`Outbound`] items and forwards every decoded incoming message.
//!
//! Bounds, so that a peer that stops reading costs a fixed amount of memory:
//! - the outbound queue holds at most [`OUTBOUND_QUEUE`] items, and items are small:
//!   blocks and index ranges are queued as *references* and read just before the write;
//!   the node drops a peer whose queue is full (it is not reading);
//! - a write that does not finish within the transfer's write timeout ends the
//!   connection;
//! - an upload counts as done (and frees its slot in the core) only once its bytes were
//!   handed to the socket.
//!
//! When the node forgets the peer (it disconnected or banned it, or its queue is full)
//! the task closes the socket at once, without writing what is still queued; a retired
//! duplicate only loses its queue's sender, so it writes what it holds, then closes.
//! When the socket ends the task tells the node. A peer that breaks framing
//! or the handshake is dropped here without ever reaching the node.

use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::Digest;
use shoal_protocol::limits::MAX_BLOCK_LEN;
use shoal_protocol::wire::{
    BlockRef, Capabilities, FrameDecoder, Handshake, Hello, Joined, Message, PROTOCOL_VERSION,
    PeerId, Role,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::disk::Disk;
use super::gossip::{self, GossipOffer};
use super::{ConnId, NodeInput};
use crate::secure::{self, Opener, Refusal, Sealer, SwarmKeys};

/// How long a peer has to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Items queued for one peer at most. An item is a message without bulk data (control
/// messages, `Have`s, one piece map) or a reference to a block or index range, so this
/// bounds a connection's queue to a few hundred KiB.
pub const OUTBOUND_QUEUE: usize = 1024;

/// A connection's read buffer at most (the first reads of a handshake need a few bytes).
const READ_BUF: usize = 64 * 1024;

/// Bytes gathered into one socket write at most (plus one block).
const WRITE_BATCH: usize = 256 * 1024;

/// Something to send a peer.
#[derive(Debug)]
pub enum Outbound {
    /// A message as it is.
    Message(Message),
    /// A `Piece` message with this block, read from the disk just before the write.
    Block(BlockRef),
    /// An `IndexData` message with this range of one of the release's index files.
    Index {
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// Bytes wanted (clipped to the file).
        length: u32,
    },
}

/// What every connection of one transfer shares.
pub struct ConnContext {
    /// Our peer id.
    pub me: PeerId,
    /// The release we serve and fetch.
    pub release: Digest,
    /// For peers still on an older release of the channel: the newer one to hand over.
    pub gossip: Option<Arc<GossipOffer>>,
    /// Reads blocks for uploads.
    pub disk: Disk,
    /// A write that takes longer than this ends the connection.
    pub write_timeout: Duration,
    /// The node's inputs.
    pub node: mpsc::Sender<NodeInput>,
    /// Bytes of peer messages queued for the node at once, at most (see [`charge`]).
    pub input_budget: Arc<Semaphore>,
    /// The peers joined now (kept by the node): a dialler does not open a second
    /// connection to a member that already has one, e.g. one it opened to us.
    pub joined: Arc<std::sync::Mutex<std::collections::HashSet<PeerId>>>,
    /// Banned addresses and inbound connections per address.
    pub gate: Arc<super::gate::Gate>,
    /// A private swarm's keys: every connection starts with their Noise handshake.
    pub private: Option<SwarmKeys>,
}

/// How a connection ended, for the dialler's and the acceptor's backoff.
#[derive(Debug)]
pub enum Ended {
    /// The Shoal handshake was reached (whatever happened after).
    Spoke,
    /// The peer proved it is not of our private swarm (another key, none, or a forged
    /// handshake).
    Stranger,
    /// The connection failed or ended before that could be told.
    Failed,
}

/// What a message queued for the node costs of the input budget: its bulk bytes, at
/// least 64 (so a flood of small messages is bounded too).
pub fn charge(msg: &Message) -> u32 {
    let bulk = match msg {
        Message::Piece { data, .. } | Message::IndexData { data, .. } => data.len(),
        Message::ManifestOffer(bytes) | Message::TrustOffer(bytes) => bytes.len(),
        Message::PieceMap { bits, .. } => bits.len(),
        _ => 0,
    };
    u32::try_from(bulk).unwrap_or(u32::MAX).max(64)
}

/// The reading half of a connection: whole frames, decoded with one read buffer for the
/// connection's lifetime, never buffering past one legal frame.
/// In a private swarm, records are opened first: the decoder then holds at most one
/// frame plus one record's plaintext.
pub(super) struct Reader {
    rd: OwnedReadHalf,
    dec: FrameDecoder,
    buf: Vec<u8>,
    opener: Option<Opener>,
    plain: Vec<u8>,
}

impl Reader {
    fn new(rd: OwnedReadHalf) -> Self {
        Reader {
            rd,
            dec: FrameDecoder::for_handshake(),
            // Grown as frames need it (to READ_BUF): a handshake costs a few bytes.
            buf: Vec::new(),
            opener: None,
            plain: Vec::new(),
        }
    }

    pub(super) async fn next(&mut self) -> std::io::Result<Message> {
        loop {
            if let Some(m) = self.dec.next_message().map_err(invalid)? {
                return Ok(m);
            }
            // The frame header's checks run on what is buffered, before reading more.
            let want = self.dec.wanted().map_err(invalid)?;
            let want = match &self.opener {
                Some(op) => op.wanted(),
                None => want,
            }
            .min(READ_BUF);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let n = self.rd.read(&mut self.buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match &mut self.opener {
                None => self.dec.push(&self.buf[..n]),
                Some(op) => {
                    self.plain.clear();
                    let opened = op.push(&self.buf[..n], &mut self.plain);
                    if opened
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                    {
                        self.dec.push(&self.plain);
                    }
                }
            }
        }
    }
}

/// The writing half of a connection: bytes as they are, or sealed into records.
pub(super) struct Writer {
    wr: OwnedWriteHalf,
    sealer: Option<Sealer>,
}

impl Writer {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.sealer {
            None => self.wr.write_all(bytes).await,
            Some(sealer) => {
                for chunk in bytes.chunks(secure::MAX_RECORD_PLAIN) {
                    self.wr.write_all(sealer.seal(chunk)).await?;
                }
                Ok(())
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Writes `bytes`, or fails once `limit` has passed: a peer that does not drain its
/// socket is not waited for.
pub(super) async fn write_within(
    wr: &mut Writer,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(limit, wr.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("peer did not read for {limit:?}"),
        )),
    }
}

/// Runs the Noise handshake of a private swarm (with the key at `key` of ours, as the
/// initiator) and switches both halves to records.
async fn seal(
    rd: &mut Reader,
    wr: &mut Writer,
    keys: &SwarmKeys,
    role: Role,
    key: usize,
) -> Result<(), Refusal> {
    let channel = match role {
        Role::Initiator => {
            let key = keys.all().get(key).unwrap_or(keys.primary());
            secure::initiate(&mut rd.rd, &mut wr.wr, key).await?
        }
        Role::Responder => secure::respond(&mut rd.rd, &mut wr.wr, keys).await?.0,
    };
    rd.opener = Some(channel.opener);
    wr.sealer = Some(channel.sealer);
    Ok(())
}

async fn handshake(
    rd: &mut Reader,
    wr: &mut Writer,
    ctx: &ConnContext,
    role: Role,
) -> std::io::Result<Joined> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(invalid)?;
    let mut capabilities = Capabilities::SEED
        | Capabilities::STATS
        | Capabilities::MANIFEST_GOSSIP
        | Capabilities::TRUST_GOSSIP;
    if ctx.private.is_some() {
        capabilities |= Capabilities::ENCRYPTED_TRANSPORT;
    }
    let hello = Hello {
        version: PROTOCOL_VERSION,
        capabilities,
        peer_id: ctx.me,
        nonce,
    };
    let older = ctx
        .gossip
        .as_ref()
        .map(|g| g.older.clone())
        .unwrap_or_default();
    let (mut hs, first) = Handshake::new(role, hello, ctx.release, older);
    wr.write_all(&first.to_frame()).await?;
    loop {
        let step = hs.handle(rd.next().await?).map_err(invalid)?;
        if let Some(m) = step.send {
            wr.write_all(&m.to_frame()).await?;
        }
        if let Some(joined) = step.joined {
            rd.dec.joined();
            return Ok(joined);
        }
    }
}

/// What the handshakes gave.
enum Shaken {
    Joined(Joined),
    Refused(Refusal),
    Failed(std::io::Error),
}

/// Both handshakes: Noise first in a private swarm, then Shoal's.
async fn shake(
    rd: &mut Reader,
    wr: &mut Writer,
    ctx: &ConnContext,
    role: Role,
    key: usize,
) -> Shaken {
    if let Some(keys) = &ctx.private
        && let Err(refusal) = seal(rd, wr, keys, role, key).await
    {
        return Shaken::Refused(refusal);
    }
    match handshake(rd, wr, ctx, role).await {
        Ok(joined) => Shaken::Joined(joined),
        // In a private swarm the responder learns here that the initiator is live: its
        // first record does not open after a replayed first message.
        Err(e) if e.get_ref().is_some_and(|e| e.is::<secure::BadRecord>()) => {
            Shaken::Refused(Refusal::NotOurKey)
        }
        Err(e) => Shaken::Failed(e),
    }
}

/// Runs one connection until either side ends it. As the initiator of a private
/// swarm's connection, `key` picks which of our keys to use (the one the peer's
/// announcement was recognised under).
pub async fn run(
    stream: TcpStream,
    role: Role,
    ctx: Arc<ConnContext>,
    conn: ConnId,
    key: usize,
) -> Ended {
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr().ok();
    let (rd, wr) = stream.into_split();
    let mut rd = Reader::new(rd);
    let mut wr = Writer { wr, sealer: None };
    let shook = tokio::time::timeout(HANDSHAKE_TIMEOUT, shake(&mut rd, &mut wr, &ctx, role, key));
    let (peer, capabilities) = match shook.await {
        Ok(Shaken::Joined(Joined::Current { peer, capabilities })) => (peer, capabilities),
        Ok(Shaken::Joined(Joined::Older {
            piece_count,
            capabilities,
            ..
        })) => {
            if let Some(offer) = &ctx.gossip {
                let r = gossip::offer_newer(
                    &mut rd,
                    &mut wr,
                    offer,
                    piece_count,
                    capabilities,
                    ctx.write_timeout,
                )
                .await;
                tracing::debug!(?addr, ?r, "handed a newer manifest to a peer");
            }
            return Ended::Spoke;
        }
        Ok(Shaken::Refused(refusal)) => {
            let stranger = refusal.is_stranger();
            if stranger {
                tracing::info!(?addr, ?role, "private swarm: refused a peer: {refusal}");
                return Ended::Stranger;
            }
            tracing::debug!(?addr, "private handshake failed: {refusal}");
            return Ended::Failed;
        }
        Ok(Shaken::Failed(e)) => {
            tracing::debug!(?addr, error = %e, "handshake failed");
            return Ended::Failed;
        }
        // A private swarm's peer that dialled us and sent no authentic record in time
        // proved nothing (silent, stalled, or a replayed message 1): backed off like a
        // refused one. (A peer we dialled that is slow to answer is merely slow.)
        Err(_)
            if role == Role::Responder
                && ctx.private.is_some()
                && !rd.opener.as_ref().is_some_and(|o| o.opened_any()) =>
        {
            tracing::info!(
                ?addr,
                ?role,
                "private swarm: a peer did not finish the handshake"
            );
            return Ended::Stranger;
        }
        Err(_) => {
            tracing::debug!(?addr, "handshake timed out");
            return Ended::Failed;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let (close, closed) = oneshot::channel();
    let initiated = role == Role::Initiator;
    let joined = NodeInput::Joined {
        conn,
        peer,
        initiated,
        addr: addr.map(|a| a.ip()),
        tx,
        close,
        capabilities,
    };
    if ctx.node.send(joined).await.is_err() {
        return Ended::Spoke;
    }
    // Blocks taken off the queue whose write has not been confirmed to the node.
    let mut unconfirmed = 0u16;
    let reader = async {
        loop {
            match rd.next().await {
                Ok(msg) => {
                    // Wait for room in the node's byte budget before queueing.
                    let budget = ctx.input_budget.clone().acquire_many_owned(charge(&msg));
                    let Ok(budget) = budget.await else {
                        return;
                    };
                    let input = NodeInput::Message { conn, msg, budget };
                    if ctx.node.send(input).await.is_err() {
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
    let writer = write_queue(&mut wr, &mut rx, &ctx, conn, &mut unconfirmed);
    tokio::select! {
        () = reader => {}
        // The node dropped the peer (banned, or its queue is full): close now, without
        // writing what is still queued.
        _ = closed => {}
        r = writer => {
            if let Err(e) = r {
                tracing::debug!(?addr, error = %e, "dropping a peer we cannot write to");
            }
        }
    }
    // Uploads that never reached the socket free their slots in the core too.
    rx.close();
    while let Ok(item) = rx.try_recv() {
        if matches!(item, Outbound::Block(_)) {
            unconfirmed = unconfirmed.saturating_add(1);
        }
    }
    let _ = ctx
        .node
        .send(NodeInput::Closed {
            conn,
            peer,
            unsent: unconfirmed,
        })
        .await;
    Ended::Spoke
}

/// Sends queued items until the node drops the queue or a write fails or stalls.
async fn write_queue(
    wr: &mut Writer,
    rx: &mut mpsc::Receiver<Outbound>,
    ctx: &ConnContext,
    conn: ConnId,
    unconfirmed: &mut u16,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(WRITE_BATCH + MAX_BLOCK_LEN as usize);
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Gather a batch (about WRITE_BATCH bytes), read all its blocks in one trip to a
        // blocking thread, then write it: one thread hop per batch, not per block.
        batch.clear();
        let mut bytes = 0usize;
        let mut item = Some(first);
        while let Some(it) = item {
            bytes += match &it {
                Outbound::Block(b) => b.length as usize,
                Outbound::Index { length, .. } => *length as usize,
                Outbound::Message(_) => 64,
            };
            batch.push(it);
            if bytes >= WRITE_BATCH {
                break;
            }
            item = rx.try_recv().ok();
        }
        let blocks: Vec<BlockRef> = batch
            .iter()
            .filter_map(|it| match it {
                Outbound::Block(b) => Some(*b),
                _ => None,
            })
            .collect();
        *unconfirmed = unconfirmed.saturating_add(blocks.len() as u16);
        let mut data = ctx.disk.read_blocks(blocks).await.into_iter();
        out.clear();
        for it in batch.drain(..) {
            encode(it, &mut out, ctx, &mut data);
        }
        write_within(wr, &out, ctx.write_timeout).await?;
        if *unconfirmed > 0 {
            // Cleared only once the node has the report: if this task is dropped while
            // waiting, the blocks are counted in `Closed` instead.
            let blocks = *unconfirmed;
            if ctx
                .node
                .send(NodeInput::Uploaded { conn, blocks })
                .await
                .is_err()
            {
                return Ok(());
            }
            *unconfirmed = 0;
        }
    }
    Ok(())
}

/// Appends `item`'s frame to `out`; a block takes the next of `data` (read in order).
fn encode(
    item: Outbound,
    out: &mut Vec<u8>,
    ctx: &ConnContext,
    data: &mut impl Iterator<Item = crate::error::Result<Vec<u8>>>,
) {
    match item {
        Outbound::Message(m) => m.encode(out),
        Outbound::Block(b) => match data.next() {
            Some(Ok(data)) => Message::Piece {
                piece: b.piece,
                offset: b.offset,
                data,
            }
            .encode(out),
            // The peer's attempt stalls and moves elsewhere; our slot is freed.
            Some(Err(e)) => {
                tracing::warn!(piece = b.piece.0, error = %e, "cannot read a block to upload")
            }
            None => {}
        },
        Outbound::Index {
            index,
            offset,
            length,
        } => Message::IndexData {
            index,
            offset,
            data: ctx.disk.index_range(&index, offset, length),
        }
        .encode(out),
    }
}
