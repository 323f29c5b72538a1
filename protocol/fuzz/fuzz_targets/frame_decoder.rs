//! Arbitrary bytes through the streaming frame decoder, fed in two parts: it must never
//! panic, and every message it yields must re-encode to the bytes it came from.
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
});
