//! Private swarms' secure channel (PROTOCOL.md §6.8): the organisation's swarm keys
//! ([`keys`]: key files), the Noise handshake that proves both ends hold one of them
//! before a byte of the peer protocol is said, and the records that then encrypt and
//! authenticate every byte.
//!
//! The handshake is `Noise_NNpsk0_25519_ChaChaPoly_SHA256` (the `snow` crate): two
//! messages of 48 bytes each, the pre-shared key derived from the swarm key. A responder
//! that holds several keys (a rotation) tries each on the first message; an initiator uses
//! the key under which discovery recognised the peer, or its first key. The responder
//! learns that the initiator is live (not a replay of a recorded first message) when the
//! first record decrypts, which the connection requires before anything else.
//!
//! Bounds: before message 1 proved the key, a connection holds two 50-byte arrays; a
//! replayed message 1 gets message 2 and our `Hello` record, and the peer's first record
//! may then be [`FIRST_RECORD_MAX`] bytes, not more. After that a record is at most
//! 65,537 bytes, and a connection buffers at most one in each direction.

use std::fmt;
use std::io;
use std::sync::Arc;

use shoal_protocol::discovery::SwarmKey;
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod keys;

pub use keys::{MAX_KEYS, SwarmKeys, new_key_file};

/// The Noise protocol name (PROTOCOL.md §6.8).
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// The prologue both sides mix in: binds the handshake to this protocol.
pub const PROLOGUE: &[u8] = b"SHOAL-PRIVATE-V1";
/// Bytes of each handshake message: an ephemeral key (32) and an empty payload's tag (16).
pub const HANDSHAKE_MSG_LEN: usize = 48;
/// Bytes of a record's authentication tag.
pub const TAG_LEN: usize = 16;
/// Ciphertext bytes of a record at most (a Noise message).
pub const MAX_RECORD: usize = 65_535;
/// Plaintext bytes of a record at most.
pub const MAX_RECORD_PLAIN: usize = MAX_RECORD - TAG_LEN;
/// Bytes of each side's first record at most: it carries exactly its `Hello` frame (63
/// bytes) and a tag, so a replayed message 1 cannot make us buffer a full record.
pub const FIRST_RECORD_MAX: usize = 63 + TAG_LEN;

/// Why a private handshake did not complete.
#[derive(Debug)]
pub enum Refusal {
    /// The peer spoke the public protocol (its first bytes are a plaintext frame).
    Plaintext,
    /// The peer proved no key we hold: another organisation, an old key, or a forged or
    /// replayed handshake.
    NotOurKey,
    /// A handshake message of the wrong size.
    Malformed(u16),
    /// The connection failed or closed.
    Io(io::Error),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Plaintext => f.write_str(
                "the peer speaks the public protocol (it has no swarm key); \
                 give every agent of the swarm the same key file",
            ),
            Refusal::NotOurKey => f.write_str(
                "the peer holds none of our swarm keys, or not the one we used (another \
                 organisation, a key rotated out, or a replayed or forged handshake)",
            ),
            Refusal::Malformed(len) => write!(
                f,
                "a handshake message of {len} bytes (expected {HANDSHAKE_MSG_LEN}): not a \
                 Shoal private-swarm peer"
            ),
            Refusal::Io(e) => write!(f, "the connection ended during the handshake: {e}"),
        }
    }
}

impl Refusal {
    /// Whether the peer showed it is not a member of our swarm (as opposed to a
    /// connection that merely ended).
    pub fn is_stranger(&self) -> bool {
        !matches!(self, Refusal::Io(_))
    }
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Refusal::Io(e)
    }
}

/// A completed handshake: the two halves of the record layer.
pub struct Channel {
    /// Encrypts what we send.
    pub sealer: Sealer,
    /// Decrypts what we receive.
    pub opener: Opener,
}

fn builder(psk: &[u8; 32]) -> snow::Builder<'_> {
    let params = NOISE_PARAMS.parse().expect("a valid Noise protocol name");
    snow::Builder::new(params)
        .psk(0, psk)
        .and_then(|b| b.prologue(PROLOGUE))
        .expect("psk and prologue fit the pattern")
}

fn channel(hs: snow::HandshakeState) -> std::result::Result<Channel, Refusal> {
    let state = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(|_| Refusal::NotOurKey)?,
    );
    Ok(Channel {
        sealer: Sealer {
            state: state.clone(),
            nonce: 0,
            out: Vec::new(),
        },
        opener: Opener {
            state,
            nonce: 0,
            buf: Vec::new(),
        },
    })
}

async fn read_message<R: AsyncRead + Unpin>(
    rd: &mut R,
) -> std::result::Result<[u8; HANDSHAKE_MSG_LEN], Refusal> {
    let mut head = [0u8; 2];
    rd.read_exact(&mut head).await?;
    let len = u16::from_be_bytes(head);
    if len == 0 {
        // A public peer's first frame (its Hello, 59 bytes long) has a u32 length whose
        // first two bytes are zero.
        return Err(Refusal::Plaintext);
    }
    if usize::from(len) != HANDSHAKE_MSG_LEN {
        return Err(Refusal::Malformed(len));
    }
    let mut msg = [0u8; HANDSHAKE_MSG_LEN];
    rd.read_exact(&mut msg).await?;
    Ok(msg)
}

fn framed(
    hs: &mut snow::HandshakeState,
) -> std::result::Result<[u8; 2 + HANDSHAKE_MSG_LEN], Refusal> {
    let mut out = [0u8; 2 + HANDSHAKE_MSG_LEN];
    out[..2].copy_from_slice(&(HANDSHAKE_MSG_LEN as u16).to_be_bytes());
    let n = hs
        .write_message(&[], &mut out[2..])
        .map_err(|e| Refusal::Io(io::Error::other(e.to_string())))?;
    debug_assert_eq!(n, HANDSHAKE_MSG_LEN);
    Ok(out)
}

/// Runs the initiator's side with `key`.
pub async fn initiate<R, W>(
    rd: &mut R,
    wr: &mut W,
    key: &SwarmKey,
) -> std::result::Result<Channel, Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let psk = key.psk();
    let mut hs = builder(&psk)
        .build_initiator()
        .map_err(|e| Refusal::Io(io::Error::other(e.to_string())))?;
    wr.write_all(&framed(&mut hs)?).await?;
    let reply = read_message(rd).await?;
    hs.read_message(&reply, &mut [])
        .map_err(|_| Refusal::NotOurKey)?;
    channel(hs)
}

/// Runs the responder's side with any of `keys`; returns the channel and which key the
/// initiator used.
pub async fn respond<R, W>(
    rd: &mut R,
    wr: &mut W,
    keys: &SwarmKeys,
) -> std::result::Result<(Channel, usize), Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let first = read_message(rd).await?;
    for (i, key) in keys.all().iter().enumerate() {
        let psk = key.psk();
        let mut hs = builder(&psk)
            .build_responder()
            .map_err(|e| Refusal::Io(io::Error::other(e.to_string())))?;
        if hs.read_message(&first, &mut []).is_ok() {
            wr.write_all(&framed(&mut hs)?).await?;
            return Ok((channel(hs)?, i));
        }
    }
    // A decoy message 2 (a fresh ephemeral key and 16 random bytes, as a real one looks
    // to anyone without the key): an initiator holding another key of ours learns that
    // this key is refused and tries its next, instead of taking the close for a full
    // listener.
    let _ = wr.write_all(&decoy()).await;
    Err(Refusal::NotOurKey)
}

fn decoy() -> [u8; 2 + HANDSHAKE_MSG_LEN] {
    let mut out = [0u8; 2 + HANDSHAKE_MSG_LEN];
    out[..2].copy_from_slice(&(HANDSHAKE_MSG_LEN as u16).to_be_bytes());
    let params = NOISE_PARAMS.parse().expect("a valid Noise protocol name");
    if let Ok(pair) = snow::Builder::new(params).generate_keypair() {
        out[2..34].copy_from_slice(&pair.public);
    }
    let _ = getrandom::fill(&mut out[34..]);
    out
}

/// Encrypts outgoing bytes into records (`u16` length, ciphertext), one at a time, so a
/// connection holds at most one sealed record.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    out: Vec<u8>,
}

impl Sealer {
    /// The record that carries `plain` (1 ..= [`MAX_RECORD_PLAIN`] bytes; callers split
    /// longer writes with `chunks(MAX_RECORD_PLAIN)`).
    pub fn seal(&mut self, plain: &[u8]) -> &[u8] {
        debug_assert!(!plain.is_empty() && plain.len() <= MAX_RECORD_PLAIN);
        let len = plain.len() + TAG_LEN;
        self.out.clear();
        self.out.extend_from_slice(&(len as u16).to_be_bytes());
        self.out.resize(2 + len, 0);
        let n = self
            .state
            .write_message(self.nonce, plain, &mut self.out[2..])
            .expect("a record fits its buffer");
        debug_assert_eq!(n, len);
        self.nonce += 1;
        &self.out
    }
}

/// Decrypts incoming records; buffers at most one.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    /// Records opened so far (the next one's nonce).
    nonce: u64,
    buf: Vec<u8>,
}

/// A record that does not authenticate, or has an impossible length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord;

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record failed authentication (not from the peer that did the handshake)")
    }
}

impl std::error::Error for BadRecord {}

impl Opener {
    /// Whether a record has opened: the peer holds the key and is live.
    pub fn opened_any(&self) -> bool {
        self.nonce > 0
    }

    /// Bytes to read before the next record is complete (read no more than this).
    pub fn wanted(&self) -> usize {
        match self.buf.get(..2) {
            None => 2 - self.buf.len(),
            Some(h) => 2 + usize::from(u16::from_be_bytes([h[0], h[1]])) - self.buf.len(),
        }
    }

    /// Takes bytes read from the socket (at most [`Opener::wanted`]); when they complete a
    /// record, appends its plaintext to `plain` and returns true.
    pub fn push(
        &mut self,
        bytes: &[u8],
        plain: &mut Vec<u8>,
    ) -> std::result::Result<bool, BadRecord> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < 2 {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        if len <= TAG_LEN || (self.nonce == 0 && len > FIRST_RECORD_MAX) {
            return Err(BadRecord);
        }
        if self.buf.len() < 2 + len {
            return Ok(false);
        }
        if self.buf.len() > 2 + len {
            return Err(BadRecord);
        }
        let at = plain.len();
        plain.resize(at + len - TAG_LEN, 0);
        let n = self
            .state
            .read_message(self.nonce, &self.buf[2..], &mut plain[at..])
            .map_err(|_| BadRecord)?;
        plain.truncate(at + n);
        self.nonce += 1;
        self.buf.clear();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SwarmKey {
        SwarmKey::from_bytes([b; 32])
    }

    fn keys(k: &[u8]) -> SwarmKeys {
        SwarmKeys::new(k.iter().map(|b| key(*b)).collect()).unwrap()
    }

    /// Runs both sides over an in-memory pipe.
    async fn shake(
        initiator: SwarmKey,
        responder: SwarmKeys,
    ) -> (
        std::result::Result<Channel, Refusal>,
        std::result::Result<(Channel, usize), Refusal>,
    ) {
        let (a, b) = tokio::io::duplex(1024);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        // Each side drops its end when done, so the other sees the close.
        tokio::join!(
            async move { initiate(&mut ar, &mut aw, &initiator).await },
            async move { respond(&mut br, &mut bw, &responder).await }
        )
    }

    fn seal_all(from: &mut Sealer, plain: &[u8]) -> Vec<u8> {
        plain
            .chunks(MAX_RECORD_PLAIN)
            .flat_map(|c| from.seal(c).to_vec())
            .collect()
    }

    fn roundtrip(from: &mut Sealer, to: &mut Opener, plain: &[u8]) -> Vec<u8> {
        let sealed = seal_all(from, plain);
        let mut out = Vec::new();
        let mut rest = &sealed[..];
        while !rest.is_empty() {
            let n = to.wanted().min(rest.len()).min(1000);
            to.push(&rest[..n], &mut out).expect("authentic");
            rest = &rest[n..];
        }
        out
    }

    #[tokio::test]
    async fn same_key_talks_both_ways_in_bounded_records() {
        let (i, r) = shake(key(1), keys(&[1])).await;
        let (mut i, (mut r, used)) = (i.unwrap(), r.unwrap());
        assert_eq!(used, 0);
        // The first record is a Hello's size at most.
        let hello = [7u8; 63];
        assert_eq!(roundtrip(&mut i.sealer, &mut r.opener, &hello), hello);
        assert_eq!(roundtrip(&mut r.sealer, &mut i.opener, b"hello"), b"hello");
        let big: Vec<u8> = (0..300_000u32).map(|x| x as u8).collect();
        assert_eq!(roundtrip(&mut i.sealer, &mut r.opener, &big), big);
        assert!(seal_all(&mut i.sealer, &big).len() <= big.len() + 5 * (2 + TAG_LEN));
        // A flipped byte: refused.
        let mut sealed = i.sealer.seal(b"abc").to_vec();
        sealed[4] ^= 1;
        assert_eq!(r.opener.push(&sealed, &mut Vec::new()), Err(BadRecord));
    }

    #[tokio::test]
    async fn a_replayed_or_oversized_first_record_does_not_authenticate() {
        let (i, r) = shake(key(1), keys(&[1])).await;
        let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
        let first = i.sealer.seal(b"one").to_vec();
        assert!(r.opener.push(&first, &mut Vec::new()).unwrap());
        assert_eq!(r.opener.push(&first, &mut Vec::new()), Err(BadRecord));
        // A first record larger than a Hello is refused from its length alone.
        let (i, r) = shake(key(1), keys(&[1])).await;
        let (mut i, (mut r, _)) = (i.unwrap(), r.unwrap());
        let big = i.sealer.seal(&[1u8; 64]).to_vec();
        assert_eq!(r.opener.push(&big[..2], &mut Vec::new()), Err(BadRecord));
    }

    #[tokio::test]
    async fn another_key_is_refused_and_a_rotation_accepts_both() {
        let (i, r) = shake(key(1), keys(&[2])).await;
        assert!(matches!(r, Err(Refusal::NotOurKey)), "{:?}", r.err());
        // The initiator is told by a decoy message 2, not by a bare close (which a full
        // listener gives too), so it can try its next key.
        assert!(matches!(i, Err(Refusal::NotOurKey)), "{:?}", i.err());
        // Mid-rotation: a responder holding [new, old] accepts either.
        let (i, r) = shake(key(1), keys(&[2, 1])).await;
        assert!(i.is_ok());
        assert_eq!(r.unwrap().1, 1);
        let (i, r) = shake(key(2), keys(&[2, 1])).await;
        assert!(i.is_ok());
        assert_eq!(r.unwrap().1, 0);
    }

    #[tokio::test]
    async fn plaintext_truncated_and_oversized_first_messages_are_refused() {
        let respond_to = |bytes: Vec<u8>| async move {
            let (mut a, b) = tokio::io::duplex(4096);
            let (mut br, mut bw) = tokio::io::split(b);
            a.write_all(&bytes).await.unwrap();
            drop(a);
            respond(&mut br, &mut bw, &keys(&[1])).await.err().unwrap()
        };
        // A public agent's Hello frame.
        let hello = [0, 0, 0, 59, 1, b'S', b'H', b'O', b'L'].to_vec();
        assert!(matches!(respond_to(hello).await, Refusal::Plaintext));
        assert!(matches!(
            respond_to(vec![0xff, 0xff, 1, 2]).await,
            Refusal::Malformed(0xffff)
        ));
        let mut cut = vec![0, HANDSHAKE_MSG_LEN as u8];
        cut.extend_from_slice(&[7; 20]);
        assert!(matches!(respond_to(cut).await, Refusal::Io(_)));
        let mut random = vec![0, HANDSHAKE_MSG_LEN as u8];
        random.extend_from_slice(&[7; HANDSHAKE_MSG_LEN]);
        assert!(matches!(respond_to(random).await, Refusal::NotOurKey));
    }

    #[tokio::test]
    async fn a_replayed_first_message_gets_no_usable_channel() {
        // Record an honest initiator's first message, then replay it: the responder
        // answers, but the replayer cannot produce a first record.
        let (a, b) = tokio::io::duplex(4096);
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, bw) = tokio::io::split(b);
        let honest = tokio::spawn(async move {
            let _ = initiate(&mut ar, &mut aw, &key(1)).await;
        });
        let first = read_message(&mut br).await.unwrap();
        drop((br, bw));
        honest.abort();
        let (mut c, d) = tokio::io::duplex(4096);
        let (mut dr, mut dw) = tokio::io::split(d);
        let mut replay = vec![0, HANDSHAKE_MSG_LEN as u8];
        replay.extend_from_slice(&first);
        c.write_all(&replay).await.unwrap();
        let (mut ch, _) = respond(&mut dr, &mut dw, &keys(&[1])).await.unwrap();
        // Whatever the replayer sends next does not open.
        let mut junk = vec![0, 40];
        junk.extend_from_slice(&[9; 40]);
        assert_eq!(ch.opener.push(&junk, &mut Vec::new()), Err(BadRecord));
    }
}
