//! Arbitrary bytes as a piece index: parse never panics, and what parses re-encodes to
//! exactly the same bytes (one encoding per index).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::index::PieceIndex;

fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = PieceIndex::parse(data) {
        assert_eq!(idx.encode(), data);
    }
});
