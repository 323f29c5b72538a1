//! Arbitrary frames from one joined peer into the swarm core (the rules of PROTOCOL.md
//! §6.3 after the handshake: piece maps, requests, blocks, rejects, floods), with time
//! moving on between them: the core never panics and keeps answering.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal_protocol::swarm::{PieceSpec, Swarm, SwarmConfig};
use shoal_protocol::wire::{FrameDecoder, PeerId};

fuzz_target!(|data: &[u8]| {
    let pieces = vec![
        PieceSpec {
            length: 300_000,
            digest: shoal_protocol::Digest::of(b"piece"),
        };
        5
    ];
    let cfg = SwarmConfig::default();
    let mut s = Swarm::new(cfg, PeerId([1; 16]), pieces, &[], 3, Duration::ZERO);
    let peer = PeerId([2; 16]);
    s.handle_joined(peer, Duration::ZERO);
    let mut dec = FrameDecoder::new();
    dec.push(data);
    let mut now = Duration::ZERO;
    while let Ok(Some(msg)) = dec.next_message() {
        now += Duration::from_millis(250);
        s.handle_message(peer, msg, now);
        s.handle_timeout(now);
        while s.poll_event().is_some() {}
        while s.poll_transmit().is_some() {}
    }
});
