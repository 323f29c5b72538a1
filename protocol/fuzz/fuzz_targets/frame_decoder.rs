//! Arbitrary bytes through the streaming frame decoder, fed in two parts: it must never
//! panic, and every message it yields must re-encode to the bytes it came from. The
//! handshake mode must never buffer past a frame header of another type than Hello or
//! Join.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::wire::{FrameDecoder, decode_frame};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut d = FrameDecoder::new();
    d.push(&data[..split]);
    let _ = d.wanted();
    d.push(&data[split..]);
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        assert_eq!(msg.to_frame(), &rest[..used], "decode/encode must round-trip");
        rest = &rest[used..];
        assert!(matches!(d.next_message(), Ok(Some(_))));
    }
    let mut h = FrameDecoder::for_handshake();
    h.push(&data[..split]);
    if let Ok(n) = h.wanted() {
        // Never more than a whole Hello (4-byte length, type, 58 bytes).
        assert!(n <= 63, "asks for {n} more bytes");
    }
    while let Ok(Some(msg)) = h.next_message() {
        use shoal_protocol::wire::Message;
        assert!(matches!(msg, Message::Hello(_) | Message::Join { .. }));
    }
});
