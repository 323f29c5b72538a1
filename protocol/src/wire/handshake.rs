//! The handshake and the connection rules, as a sans-IO state machine.
//!
//! [`Handshake`] takes the messages a connection receives before it is bound to a
//! release and says what to send and when the connection is joined; the agent only moves
//! bytes. It keeps these rules (`docs/PROTOCOL.md` §6.3):
//!
//! - both ends send [`Hello`] first; a `Hello` with another version, or our own peer id
//!   (we dialled ourselves), ends the handshake;
//! - the initiator sends `Join` with its proof for the release it wants; the responder
//!   answers with its own proof when the release is its current one;
//! - a responder that delivered an *older* release of the channel earlier, and whose peer
//!   announced [`Capabilities::MANIFEST_GOSSIP`], also accepts a proof for that older
//!   release, so that it can hand the peer the newer manifest ([`Joined::Older`]);
//! - anything else before the connection is joined ends it.
//!
//! [`keeps_own_connection`] is the rule for two connections between the same two peers.

use super::{Capabilities, Hello, Message, PROTOCOL_VERSION, PeerId, Role, join_proof};
use crate::digest::Digest;

/// Why a handshake ended without a joined connection. The peer is a stranger, is
/// misconfigured or broke the protocol; none of this is fatal to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first message was not `Hello`, or the second not `Join`.
    #[error("expected {0} during the handshake")]
    Unexpected(&'static str),
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this agent {PROTOCOL_VERSION}")]
    Version(u16),
    /// The peer has our own id: we dialled ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// The peer's proof matches no release we hold.
    #[error("peer does not know this release")]
    UnknownRelease,
    /// A message arrived after the handshake ended.
    #[error("handshake already ended")]
    Finished,
}

/// What a finished handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The peer joined our current release.
    Current {
        /// The peer's id.
        peer: PeerId,
        /// What the peer announced it can do.
        capabilities: Capabilities,
    },
    /// The peer joined an older release of the channel that we delivered: hand it the
    /// current manifest (and its indexes), nothing else.
    Older {
        /// The peer's id.
        peer: PeerId,
        /// Pieces in that older release (for the empty piece map we send).
        piece_count: u32,
        /// What the peer announced it can do (whether to send it trust documents).
        capabilities: Capabilities,
    },
}

/// What to do after a message: send `send` (if any); the handshake is over when
/// `joined` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// A message to send now.
    pub send: Option<Message>,
    /// The outcome, once the handshake is complete.
    pub joined: Option<Joined>,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitJoin { theirs: Hello },
    Done,
}

/// One connection's handshake (see the module docs).
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    ours: Hello,
    release: Digest,
    older: Vec<(Digest, u32)>,
    state: State,
}

impl Handshake {
    /// A handshake for `release` as `role`, with our `hello` (fresh nonce). `older`
    /// lists releases of the channel we delivered earlier (id, piece count), accepted
    /// from a responder's side only. Returns the `Hello` to send first.
    pub fn new(
        role: Role,
        hello: Hello,
        release: Digest,
        older: Vec<(Digest, u32)>,
    ) -> (Self, Message) {
        let first = Message::Hello(hello.clone());
        let hs = Handshake {
            role,
            ours: hello,
            release,
            older,
            state: State::AwaitHello,
        };
        (hs, first)
    }

    /// Takes the next message from the peer.
    pub fn handle(&mut self, msg: Message) -> Result<Step, HandshakeError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitHello => {
                let Message::Hello(theirs) = msg else {
                    return Err(HandshakeError::Unexpected("Hello"));
                };
                if theirs.version != PROTOCOL_VERSION {
                    return Err(HandshakeError::Version(theirs.version));
                }
                if theirs.peer_id == self.ours.peer_id {
                    return Err(HandshakeError::SelfConnection);
                }
                let send = (self.role == Role::Initiator).then(|| Message::Join {
                    proof: self.proof(Role::Initiator, &self.release, &theirs),
                });
                self.state = State::AwaitJoin { theirs };
                Ok(Step { send, joined: None })
            }
            State::AwaitJoin { theirs } => {
                let Message::Join { proof } = msg else {
                    return Err(HandshakeError::Unexpected("Join"));
                };
                self.on_join(&theirs, proof)
            }
            State::Done => Err(HandshakeError::Finished),
        }
    }

    fn on_join(&self, theirs: &Hello, proof: [u8; 32]) -> Result<Step, HandshakeError> {
        let other = match self.role {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        };
        if proof == self.proof(other, &self.release, theirs) {
            let send = (self.role == Role::Responder).then(|| Message::Join {
                proof: self.proof(Role::Responder, &self.release, theirs),
            });
            let joined = Joined::Current {
                peer: theirs.peer_id,
                capabilities: theirs.capabilities,
            };
            return Ok(Step {
                send,
                joined: Some(joined),
            });
        }
        let gossip = self.role == Role::Responder
            && theirs.capabilities.contains(Capabilities::MANIFEST_GOSSIP);
        let older = self
            .older
            .iter()
            .filter(|_| gossip)
            .find(|(id, _)| proof == self.proof(Role::Initiator, id, theirs));
        let Some((old, piece_count)) = older else {
            return Err(HandshakeError::UnknownRelease);
        };
        Ok(Step {
            send: Some(Message::Join {
                proof: self.proof(Role::Responder, old, theirs),
            }),
            joined: Some(Joined::Older {
                peer: theirs.peer_id,
                piece_count: *piece_count,
                capabilities: theirs.capabilities,
            }),
        })
    }

    /// `role`'s proof for `release` on this connection.
    fn proof(&self, role: Role, release: &Digest, theirs: &Hello) -> [u8; 32] {
        let (ni, nr) = match self.role {
            Role::Initiator => (&self.ours.nonce, &theirs.nonce),
            Role::Responder => (&theirs.nonce, &self.ours.nonce),
        };
        join_proof(role, release, ni, nr)
    }
}

/// Two agents that dial each other at once end up with two connections. Both keep the
/// one opened by the smaller peer id, so both reach the same choice without a message:
/// this says whether that is the connection `me` opened.
pub fn keeps_own_connection(me: &PeerId, peer: &PeerId) -> bool {
    me < peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: u8, nonce: u8, caps: Capabilities) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            capabilities: caps,
            peer_id: PeerId([id; 16]),
            nonce: [nonce; 32],
        }
    }

    /// Runs both ends against each other; returns what each side concluded.
    fn run(
        init: (Hello, Digest),
        resp: (Hello, Digest, Vec<(Digest, u32)>),
    ) -> (
        Result<Joined, HandshakeError>,
        Result<Joined, HandshakeError>,
    ) {
        let (mut i, i_hello) = Handshake::new(Role::Initiator, init.0, init.1, Vec::new());
        let (mut r, r_hello) = Handshake::new(Role::Responder, resp.0, resp.1, resp.2);
        let join = i.handle(r_hello).unwrap().send.unwrap();
        assert!(r.handle(i_hello).unwrap().send.is_none());
        let step = match r.handle(join) {
            Ok(s) => s,
            Err(e) => return (Err(HandshakeError::UnknownRelease), Err(e)),
        };
        let r_joined = step.joined.unwrap();
        let i_joined = i.handle(step.send.unwrap()).map(|s| s.joined.unwrap());
        (i_joined, Ok(r_joined))
    }

    #[test]
    fn both_ends_join_the_same_release() {
        let rel = Digest::of(b"manifest");
        let (i, r) = run(
            (hello(1, 1, Capabilities::SEED), rel),
            (hello(2, 2, Capabilities::SEED), rel, Vec::new()),
        );
        assert!(matches!(i, Ok(Joined::Current { peer, .. }) if peer == PeerId([2; 16])));
        assert!(matches!(r, Ok(Joined::Current { peer, .. }) if peer == PeerId([1; 16])));
    }

    #[test]
    fn a_stranger_is_refused() {
        let (_, r) = run(
            (hello(1, 1, Capabilities::SEED), Digest::of(b"guess")),
            (
                hello(2, 2, Capabilities::SEED),
                Digest::of(b"manifest"),
                Vec::new(),
            ),
        );
        assert_eq!(r, Err(HandshakeError::UnknownRelease));
    }

    #[test]
    fn an_older_release_is_accepted_only_from_a_gossiping_peer() {
        let (old, new) = (Digest::of(b"v1"), Digest::of(b"v2"));
        let (i, r) = run(
            (hello(1, 1, Capabilities::MANIFEST_GOSSIP), old),
            (hello(2, 2, Capabilities::SEED), new, vec![(old, 7)]),
        );
        assert_eq!(
            r,
            Ok(Joined::Older {
                peer: PeerId([1; 16]),
                piece_count: 7,
                capabilities: Capabilities::MANIFEST_GOSSIP,
            })
        );
        // The initiator sees a normal join of the release it asked for.
        assert!(matches!(i, Ok(Joined::Current { .. })));
        let (_, r) = run(
            (hello(1, 1, Capabilities::SEED), old),
            (hello(2, 2, Capabilities::SEED), new, vec![(old, 7)]),
        );
        assert_eq!(r, Err(HandshakeError::UnknownRelease));
    }

    fn responder(release: Digest) -> Handshake {
        Handshake::new(
            Role::Responder,
            hello(1, 1, Capabilities::SEED),
            release,
            vec![],
        )
        .0
    }

    #[test]
    fn wrong_order_versions_and_self_connections_end_the_handshake() {
        let rel = Digest::of(b"m");
        let mut h = responder(rel);
        assert_eq!(
            h.handle(Message::KeepAlive),
            Err(HandshakeError::Unexpected("Hello"))
        );
        let mut h = responder(rel);
        assert_eq!(
            h.handle(Message::Hello(hello(1, 9, Capabilities::SEED))),
            Err(HandshakeError::SelfConnection)
        );
        let mut h = responder(rel);
        let mut other = hello(2, 2, Capabilities::SEED);
        other.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            h.handle(Message::Hello(other)),
            Err(HandshakeError::Version(PROTOCOL_VERSION + 1))
        );
        let mut h = responder(rel);
        h.handle(Message::Hello(hello(2, 2, Capabilities::SEED)))
            .unwrap();
        assert_eq!(
            h.handle(Message::KeepAlive),
            Err(HandshakeError::Unexpected("Join"))
        );
        assert_eq!(h.handle(Message::KeepAlive), Err(HandshakeError::Finished));
    }

    #[test]
    fn both_ends_keep_the_same_duplicate() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        // Exactly one of the two keeps the connection it opened.
        assert_ne!(keeps_own_connection(&a, &b), keeps_own_connection(&b, &a));
    }
}
