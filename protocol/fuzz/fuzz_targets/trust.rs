//! Arbitrary bytes as a trust document, as an anchor and as a successor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::VerifiedTrust;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = VerifiedTrust::anchor(data) {
        let _ = t.successor(data);
        let _ = t.check_fresh(0);
    }
});
