//! The peer wire protocol: framing, messages, the handshake proof and the handshake's
//! state machine ([`Handshake`]).
//!
//! A connection is a sequence of frames: a big-endian `u32` body length `L`
//! (1 ≤ `L` ≤ [`MAX_FRAME_LEN`]), then `L` body bytes: a type byte and its payload.
//! [`FrameDecoder`] checks `L` against [`MAX_FRAME_LEN`] and, as soon as the type byte is
//! in, against the type's own bounds, before it buffers the payload: a peer cannot make
//! us allocate more than one legal frame.
//!
//! Handshake: both ends send [`Hello`] first. Then the initiator sends
//! [`Message::Join`] with `join_proof(Role::Initiator, ..)` for the release it wants;
//! the responder looks for a release it holds whose proof matches and answers with its
//! own `Join` (`Role::Responder`), or closes the connection. A stranger who does not know
//! the release's manifest cannot produce a proof, and a proof cannot be replayed because
//! both nonces are fresh per connection. `docs/PROTOCOL.md` has the state rules.

mod handshake;
mod message;

pub use handshake::{Handshake, HandshakeError, Joined, Step, keeps_own_connection};
pub use message::{
    BlockRef, Capabilities, HELLO_MAGIC, Hello, Message, MessageType, PROTOCOL_VERSION, PeerId,
    PieceNumber, RejectReason, StatsSummary,
};

use crate::digest::Digest;
use crate::limits::MAX_FRAME_LEN;

/// Length of the frame header (the body length).
pub const FRAME_HEADER_LEN: usize = 4;

/// A peer sent bytes that break the protocol. The connection must be closed; the peer
/// may be penalised. This is never a fatal error for the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body length is zero.
    #[error("empty frame")]
    EmptyFrame,
    /// The body length is over [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    FrameTooLarge(u32),
    /// The type byte is not a known message type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The payload length is outside the type's bounds.
    #[error("{ty:?} payload of {len} bytes is outside {min}..={max}")]
    BadLength {
        /// The message type.
        ty: MessageType,
        /// Payload length received.
        len: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A message other than `Hello` or `Join` before the handshake ended (refused from
    /// its header: nothing of it is buffered).
    #[error("{0:?} before the handshake ended")]
    BeforeJoin(MessageType),
    /// The payload has the right length but a wrong value.
    #[error("malformed {ty:?}: {reason}")]
    Malformed {
        /// The message type.
        ty: MessageType,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Message {
    /// Appends this message as one whole frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        out.push(self.message_type() as u8);
        self.encode_payload(out);
        let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
        debug_assert!(len <= MAX_FRAME_LEN, "encoded an over-long frame");
        out[start..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// This message as one whole frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Checks the frame header and type byte at the start of `buf`, if they are there.
/// Returns the whole frame's length once it is known to be legal.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge(len));
    }
    let Some(&ty) = buf.get(FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let ty = MessageType::from_u8(ty).ok_or(WireError::UnknownType(ty))?;
    let (min, max) = ty.payload_bounds();
    let payload = len - 1;
    if payload < min || payload > max {
        return Err(WireError::BadLength {
            ty,
            len: payload,
            min,
            max,
        });
    }
    Ok(Some(FRAME_HEADER_LEN + len as usize))
}

/// Decodes one message from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame, and otherwise the
/// message and how many bytes it used. Never panics, whatever `buf` holds.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let ty = MessageType::from_u8(frame[FRAME_HEADER_LEN]).ok_or(WireError::UnknownType(0))?;
    let msg = Message::decode_payload(ty, &frame[FRAME_HEADER_LEN + 1..])
        .map_err(|reason| WireError::Malformed { ty, reason })?;
    Ok(Some((msg, total)))
}

/// Buffers bytes from a stream and yields whole messages.
///
/// [`FrameDecoder::wanted`] says how many more bytes the current frame needs, so a reader
/// never buffers past one legal frame. Bytes pushed in larger pieces (a private swarm's
/// records, §6.8) are decoded in place: decoding costs linear time in what was pushed,
/// however many small frames a piece holds.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the undecoded bytes of `buf` start.
    pos: usize,
    /// Only `Hello` and `Join` are legal (the handshake is under way).
    handshake: bool,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty decoder for a connection whose handshake is to come: until
    /// [`FrameDecoder::joined`], a frame of any other type than `Hello` or `Join` is an
    /// error as soon as its 5-byte header is in, so a stranger cannot make us buffer a
    /// megabyte before it proved anything.
    pub fn for_handshake() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            handshake: true,
        }
    }

    /// The handshake ended: every message type is legal from now on.
    pub fn joined(&mut self) {
        self.handshake = false;
    }

    /// The current frame's length once its header is in and legal here.
    fn frame_len(&self) -> Result<Option<usize>, WireError> {
        let rest = &self.buf[self.pos..];
        let len = frame_len(rest)?;
        if self.handshake
            && let Some(&ty) = rest.get(FRAME_HEADER_LEN)
            && let Some(ty) = MessageType::from_u8(ty)
            && !matches!(ty, MessageType::Hello | MessageType::Join)
        {
            return Err(WireError::BeforeJoin(ty));
        }
        Ok(len)
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        self.frame_len()?;
        match decode_frame(&self.buf[self.pos..])? {
            Some((msg, used)) => {
                self.pos += used;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    /// Bytes still needed to complete the frame being buffered (at least 1), or an error
    /// as soon as its header is known to be illegal.
    pub fn wanted(&self) -> Result<usize, WireError> {
        let need = self.frame_len()?.unwrap_or(FRAME_HEADER_LEN + 1);
        Ok(need.saturating_sub(self.buffered()).max(1))
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Which end of a connection computes a `Join` proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection.
    Initiator,
    /// The end that accepted it.
    Responder,
}

/// The `Join` proof: SHA-256 of `"SHOAL-JOIN-V1\0" || role || release || nonce_i || nonce_r`,
/// where `role` is the byte `I` or `R`, `release` the SHA-256 of the manifest's exact
/// bytes, and the nonces those of the initiator's and the responder's `Hello`.
pub fn join_proof(
    role: Role,
    release: &Digest,
    initiator_nonce: &[u8; 32],
    responder_nonce: &[u8; 32],
) -> [u8; 32] {
    let r: &[u8] = match role {
        Role::Initiator => b"I",
        Role::Responder => b"R",
    };
    Digest::of_parts(&[
        b"SHOAL-JOIN-V1\0",
        r,
        &release.0,
        initiator_nonce,
        responder_nonce,
    ])
    .0
}

#[cfg(test)]
mod tests;
