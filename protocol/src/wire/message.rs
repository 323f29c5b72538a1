//! The peer messages and their payload layouts.
//!
//! Each message is one frame: `u32` body length (big-endian), then the body, which is a
//! one-byte type followed by the type's payload. All integers are big-endian. Every
//! payload has a fixed length or a named maximum, listed in [`MessageType::payload_bounds`]
//! and checked before the payload is buffered.

use bitflags::bitflags;

use crate::limits::{
    MAX_BLOCK_LEN, MAX_MANIFEST_LEN, MAX_PEER_NAME_LEN, MAX_PIECES_PER_RELEASE, MAX_TRUST_LEN,
};

/// The protocol version this crate speaks, sent in [`Hello`].
pub const PROTOCOL_VERSION: u16 = 1;
/// The first four bytes of every `Hello` payload: lets both ends drop a stranger at once.
pub const HELLO_MAGIC: [u8; 4] = *b"SHOL";

bitflags! {
    /// What a peer can do, announced in [`Hello`]. Unknown bits are kept and ignored.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Capabilities: u32 {
        /// Serves piece data to others (a peer without it only downloads).
        const SEED = 1 << 0;
        /// Sends and accepts `ManifestOffer`.
        const MANIFEST_GOSSIP = 1 << 1;
        /// Sends and accepts `Stats`.
        const STATS = 1 << 2;
        /// The sender runs this connection inside a private swarm's secure channel
        /// (PROTOCOL.md §6.8); informational, the channel is set up before any `Hello`.
        const ENCRYPTED_TRANSPORT = 1 << 3;
        /// Sends and accepts `TrustOffer` (a peer without it closes on the unknown type).
        const TRUST_GOSSIP = 1 << 4;
    }
}

/// A peer's random 16-byte identity, fresh on each agent start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub [u8; 16]);

/// A piece's number within a release: pieces of all artifacts, numbered in manifest order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PieceNumber(pub u32);

/// Opens a connection, sent by both ends first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// What the sender can do.
    pub capabilities: Capabilities,
    /// The sender's id.
    pub peer_id: PeerId,
    /// 32 fresh random bytes; both nonces go into the `Join` proofs.
    pub nonce: [u8; 32],
}

/// A byte range of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Which piece.
    pub piece: PieceNumber,
    /// Offset inside the piece.
    pub offset: u32,
    /// Length, 1 to `MAX_BLOCK_LEN`.
    pub length: u32,
}

/// Why a request was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The sender does not hold that piece (any more).
    NotHeld = 1,
    /// The requester is choked.
    Choked = 2,
    /// Too many requests outstanding.
    Overloaded = 3,
    /// The range lies outside the piece or the piece number outside the release.
    Invalid = 4,
}

impl RejectReason {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::NotHeld,
            2 => Self::Choked,
            3 => Self::Overloaded,
            4 => Self::Invalid,
            _ => return None,
        })
    }
}

/// A peer's view of its own progress, for the admins' swarm view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSummary {
    /// A display name the owner chose (may be empty), UTF-8, at most `MAX_PEER_NAME_LEN`.
    pub name: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Verified pieces held of this release.
    pub pieces_held: u32,
    /// Pieces in this release.
    pub piece_count: u32,
    /// Bytes of this release received from peers.
    pub bytes_from_peers: u64,
    /// Bytes of this release received from the origin.
    pub bytes_from_origin: u64,
    /// Bytes of this release sent to peers.
    pub bytes_uploaded: u64,
}

/// Every message of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Handshake, part 1.
    Hello(Hello),
    /// Handshake, part 2: proof that the sender knows the release (see `join_proof`).
    Join {
        /// The proof.
        proof: [u8; 32],
    },
    /// The full set of verified pieces the sender holds.
    PieceMap {
        /// Pieces in the release; must equal the receiver's count.
        piece_count: u32,
        /// `ceil(piece_count / 8)` bytes, piece 0 in the high bit of byte 0; bits past
        /// `piece_count` are zero.
        bits: Vec<u8>,
    },
    /// The sender has verified one more piece.
    Have(PieceNumber),
    /// Asks for a block.
    Request(BlockRef),
    /// Block data answering a `Request`.
    Piece {
        /// Which piece.
        piece: PieceNumber,
        /// Offset inside the piece.
        offset: u32,
        /// 1 to `MAX_BLOCK_LEN` bytes.
        data: Vec<u8>,
    },
    /// A request that will not be served.
    Reject {
        /// The block asked for.
        block: BlockRef,
        /// Why.
        reason: RejectReason,
    },
    /// Withdraws a request.
    Cancel(BlockRef),
    /// The sender will serve no requests until `Unchoke`.
    Choke,
    /// The sender will serve up to `max_requests` outstanding requests.
    Unchoke {
        /// Request window granted, 1 or more.
        max_requests: u16,
    },
    /// Nothing to say; keeps the connection from timing out.
    KeepAlive,
    /// A signed manifest of the same channel that the sender believes newer.
    ManifestOffer(Vec<u8>),
    /// A trust document of the product (its exact bytes), sent before a
    /// `ManifestOffer` so a receiver that cannot reach the origin can follow a key
    /// rotation: it adopts the document only as a signed successor of its own.
    TrustOffer(Vec<u8>),
    /// The sender's progress on this release.
    Stats(StatsSummary),
    /// Asks for a range of a piece index file, named by its SHA-256 (after a
    /// `ManifestOffer`, so a newer release can start without the origin).
    IndexRequest {
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// Bytes wanted, 1 to `MAX_BLOCK_LEN`.
        length: u32,
    },
    /// Index file bytes answering an `IndexRequest`; empty when the sender does not
    /// hold that index.
    IndexData {
        /// SHA-256 of the index file.
        index: [u8; 32],
        /// Offset in the file.
        offset: u32,
        /// 0 to `MAX_BLOCK_LEN` bytes.
        data: Vec<u8>,
    },
}

/// The one-byte message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// [`Message::Hello`]
    Hello = 0x01,
    /// [`Message::Join`]
    Join = 0x02,
    /// [`Message::PieceMap`]
    PieceMap = 0x03,
    /// [`Message::Have`]
    Have = 0x04,
    /// [`Message::Request`]
    Request = 0x05,
    /// [`Message::Piece`]
    Piece = 0x06,
    /// [`Message::Reject`]
    Reject = 0x07,
    /// [`Message::Cancel`]
    Cancel = 0x08,
    /// [`Message::Choke`]
    Choke = 0x09,
    /// [`Message::Unchoke`]
    Unchoke = 0x0a,
    /// [`Message::KeepAlive`]
    KeepAlive = 0x0b,
    /// [`Message::ManifestOffer`]
    ManifestOffer = 0x0c,
    /// [`Message::Stats`]
    Stats = 0x0d,
    /// [`Message::IndexRequest`]
    IndexRequest = 0x0e,
    /// [`Message::IndexData`]
    IndexData = 0x0f,
    /// [`Message::TrustOffer`]
    TrustOffer = 0x10,
}

const STATS_FIXED_LEN: u32 = 8 + 4 + 4 + 8 + 8 + 8 + 1;

impl MessageType {
    /// Reads a type byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        use MessageType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => Join,
            0x03 => PieceMap,
            0x04 => Have,
            0x05 => Request,
            0x06 => Piece,
            0x07 => Reject,
            0x08 => Cancel,
            0x09 => Choke,
            0x0a => Unchoke,
            0x0b => KeepAlive,
            0x0c => ManifestOffer,
            0x0d => Stats,
            0x0e => IndexRequest,
            0x0f => IndexData,
            0x10 => TrustOffer,
            _ => return None,
        })
    }

    /// Smallest and largest payload length (after the type byte) of this type.
    pub fn payload_bounds(self) -> (u32, u32) {
        use MessageType::*;
        match self {
            Hello => (58, 58),
            Join => (32, 32),
            PieceMap => (4, 4 + MAX_PIECES_PER_RELEASE.div_ceil(8)),
            Have => (4, 4),
            Request | Cancel => (12, 12),
            Piece => (9, 8 + MAX_BLOCK_LEN),
            Reject => (13, 13),
            Choke | KeepAlive => (0, 0),
            Unchoke => (2, 2),
            ManifestOffer => (1, MAX_MANIFEST_LEN as u32),
            Stats => (STATS_FIXED_LEN, STATS_FIXED_LEN + MAX_PEER_NAME_LEN as u32),
            IndexRequest => (40, 40),
            IndexData => (36, 36 + MAX_BLOCK_LEN),
            TrustOffer => (1, MAX_TRUST_LEN as u32),
        }
    }
}

impl Message {
    /// This message's type byte.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Join { .. } => MessageType::Join,
            Message::PieceMap { .. } => MessageType::PieceMap,
            Message::Have(_) => MessageType::Have,
            Message::Request(_) => MessageType::Request,
            Message::Piece { .. } => MessageType::Piece,
            Message::Reject { .. } => MessageType::Reject,
            Message::Cancel(_) => MessageType::Cancel,
            Message::Choke => MessageType::Choke,
            Message::Unchoke { .. } => MessageType::Unchoke,
            Message::KeepAlive => MessageType::KeepAlive,
            Message::ManifestOffer(_) => MessageType::ManifestOffer,
            Message::TrustOffer(_) => MessageType::TrustOffer,
            Message::Stats(_) => MessageType::Stats,
            Message::IndexRequest { .. } => MessageType::IndexRequest,
            Message::IndexData { .. } => MessageType::IndexData,
        }
    }

    /// Appends the payload (without length and type) to `out`.
    pub(super) fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello(h) => {
                out.extend_from_slice(&HELLO_MAGIC);
                out.extend_from_slice(&h.version.to_be_bytes());
                out.extend_from_slice(&h.capabilities.bits().to_be_bytes());
                out.extend_from_slice(&h.peer_id.0);
                out.extend_from_slice(&h.nonce);
            }
            Message::Join { proof } => out.extend_from_slice(proof),
            Message::PieceMap { piece_count, bits } => {
                out.extend_from_slice(&piece_count.to_be_bytes());
                out.extend_from_slice(bits);
            }
            Message::Have(p) => out.extend_from_slice(&p.0.to_be_bytes()),
            Message::Request(b) | Message::Cancel(b) => put_block(out, b),
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                out.extend_from_slice(&piece.0.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
            Message::Reject { block, reason } => {
                put_block(out, block);
                out.push(*reason as u8);
            }
            Message::Choke | Message::KeepAlive => {}
            Message::Unchoke { max_requests } => out.extend_from_slice(&max_requests.to_be_bytes()),
            Message::ManifestOffer(m) | Message::TrustOffer(m) => out.extend_from_slice(m),
            Message::Stats(s) => {
                out.extend_from_slice(&s.uptime_secs.to_be_bytes());
                out.extend_from_slice(&s.pieces_held.to_be_bytes());
                out.extend_from_slice(&s.piece_count.to_be_bytes());
                out.extend_from_slice(&s.bytes_from_peers.to_be_bytes());
                out.extend_from_slice(&s.bytes_from_origin.to_be_bytes());
                out.extend_from_slice(&s.bytes_uploaded.to_be_bytes());
                out.push(s.name.len() as u8);
                out.extend_from_slice(s.name.as_bytes());
            }
            Message::IndexRequest {
                index,
                offset,
                length,
            } => {
                out.extend_from_slice(index);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
            }
            Message::IndexData {
                index,
                offset,
                data,
            } => {
                out.extend_from_slice(index);
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }

    /// Parses a payload whose length already passed [`MessageType::payload_bounds`].
    pub(super) fn decode_payload(ty: MessageType, p: &[u8]) -> Result<Message, &'static str> {
        let mut r = Reader(p);
        let msg = match ty {
            MessageType::Hello => {
                if r.array::<4>()? != HELLO_MAGIC {
                    return Err("hello does not start with the protocol magic");
                }
                Message::Hello(Hello {
                    version: r.u16()?,
                    capabilities: Capabilities::from_bits_retain(r.u32()?),
                    peer_id: PeerId(r.array()?),
                    nonce: r.array()?,
                })
            }
            MessageType::Join => Message::Join { proof: r.array()? },
            MessageType::PieceMap => {
                let piece_count = r.u32()?;
                if piece_count > MAX_PIECES_PER_RELEASE {
                    return Err("piece map counts more pieces than a release may hold");
                }
                let bits = r.rest();
                if bits.len() != piece_count.div_ceil(8) as usize {
                    return Err("piece map length does not match its piece count");
                }
                let spare = (8 - piece_count % 8) % 8;
                if spare > 0 && bits.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0) {
                    return Err("piece map sets bits past its piece count");
                }
                Message::PieceMap {
                    piece_count,
                    bits: bits.to_vec(),
                }
            }
            MessageType::Have => Message::Have(PieceNumber(r.u32()?)),
            MessageType::Request => Message::Request(block(&mut r)?),
            MessageType::Cancel => Message::Cancel(block(&mut r)?),
            MessageType::Piece => Message::Piece {
                piece: PieceNumber(r.u32()?),
                offset: r.u32()?,
                data: r.rest().to_vec(),
            },
            MessageType::Reject => {
                let block = block(&mut r)?;
                let reason = RejectReason::from_u8(r.u8()?).ok_or("unknown reject reason")?;
                Message::Reject { block, reason }
            }
            MessageType::Choke => Message::Choke,
            MessageType::KeepAlive => Message::KeepAlive,
            MessageType::Unchoke => {
                let max_requests = r.u16()?;
                if max_requests == 0 {
                    return Err("unchoke grants a window of zero requests");
                }
                Message::Unchoke { max_requests }
            }
            MessageType::ManifestOffer => Message::ManifestOffer(r.rest().to_vec()),
            MessageType::TrustOffer => Message::TrustOffer(r.rest().to_vec()),
            MessageType::Stats => {
                let uptime_secs = r.u64()?;
                let pieces_held = r.u32()?;
                let piece_count = r.u32()?;
                let bytes_from_peers = r.u64()?;
                let bytes_from_origin = r.u64()?;
                let bytes_uploaded = r.u64()?;
                let name_len = r.u8()? as usize;
                let name = r.rest();
                if name.len() != name_len {
                    return Err("stats name length does not match");
                }
                let name = std::str::from_utf8(name).map_err(|_| "stats name is not UTF-8")?;
                if pieces_held > piece_count {
                    return Err("stats claim more pieces held than exist");
                }
                Message::Stats(StatsSummary {
                    name: name.to_owned(),
                    uptime_secs,
                    pieces_held,
                    piece_count,
                    bytes_from_peers,
                    bytes_from_origin,
                    bytes_uploaded,
                })
            }
            MessageType::IndexRequest => {
                let index = r.array()?;
                let offset = r.u32()?;
                let length = r.u32()?;
                if length == 0 || length > MAX_BLOCK_LEN {
                    return Err("index request length outside 1..=MAX_BLOCK_LEN");
                }
                Message::IndexRequest {
                    index,
                    offset,
                    length,
                }
            }
            MessageType::IndexData => Message::IndexData {
                index: r.array()?,
                offset: r.u32()?,
                data: r.rest().to_vec(),
            },
        };
        if !r.0.is_empty() {
            return Err("payload has trailing bytes");
        }
        Ok(msg)
    }
}

fn put_block(out: &mut Vec<u8>, b: &BlockRef) {
    out.extend_from_slice(&b.piece.0.to_be_bytes());
    out.extend_from_slice(&b.offset.to_be_bytes());
    out.extend_from_slice(&b.length.to_be_bytes());
}

fn block(r: &mut Reader<'_>) -> Result<BlockRef, &'static str> {
    let b = BlockRef {
        piece: PieceNumber(r.u32()?),
        offset: r.u32()?,
        length: r.u32()?,
    };
    if b.length == 0 || b.length > MAX_BLOCK_LEN {
        return Err("block length outside 1..=MAX_BLOCK_LEN");
    }
    Ok(b)
}

/// A cursor over a payload; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("payload is too short");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}
