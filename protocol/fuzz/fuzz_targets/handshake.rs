//! Arbitrary frames from a peer through both roles of the handshake state machine: it
//! must never panic, must end (joined or refused) within two messages, and may only
//! join a release whose proof it was actually given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::Digest;
use shoal_protocol::wire::{
    Capabilities, FrameDecoder, Handshake, Hello, Joined, PROTOCOL_VERSION, PeerId, Role,
};

fuzz_target!(|data: &[u8]| {
    let release = Digest::of(b"current");
    let older = vec![(Digest::of(b"older"), 3)];
    for role in [Role::Initiator, Role::Responder] {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            capabilities: Capabilities::SEED | Capabilities::MANIFEST_GOSSIP,
            peer_id: PeerId([1; 16]),
            nonce: [2; 32],
        };
        let (mut hs, _) = Handshake::new(role, hello, release, older.clone());
        // As a connection reads them: only Hello and Join until joined.
        let mut dec = FrameDecoder::for_handshake();
        dec.push(data);
        let mut handled = 0;
        while let Ok(Some(msg)) = dec.next_message() {
            handled += 1;
            match hs.handle(msg) {
                Ok(step) => {
                    if let Some(joined) = step.joined {
                        // Joining takes exactly Hello then Join.
                        assert_eq!(handled, 2);
                        if let Joined::Older { piece_count, .. } = joined {
                            assert_eq!(role, Role::Responder);
                            assert_eq!(piece_count, 3);
                        }
                        break;
                    }
                    assert_eq!(handled, 1, "the handshake must end by the second message");
                }
                Err(_) => break,
            }
        }
    }
});
