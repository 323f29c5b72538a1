//! Arbitrary mDNS instance names and swarm-key texts (what any LAN host can announce,
//! what an admin may paste into a key file): parsing never panics, and a name that
//! parses is recognised only under the key that tagged it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_protocol::discovery::{DiscoveryKey, SwarmKey, parse_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = SwarmKey::parse(text);
    if let Some((peer, tag)) = parse_name(text) {
        let key = DiscoveryKey::public("acme", "default");
        // A made-up tag may match only by a 2^-64 accident; recognition must not panic.
        let _ = key.recognises(&peer, &tag);
    }
});
