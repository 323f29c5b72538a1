//! Arbitrary bytes as a release manifest: refused or accepted, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shoal_protocol::envelope::{DocumentKind, sign};
use shoal_protocol::trust::{Role, TrustBody};
use shoal_protocol::{ChannelRef, Name, SecretKey, VerifiedManifest, VerifiedTrust};

fn trust() -> &'static VerifiedTrust {
    static T: OnceLock<VerifiedTrust> = OnceLock::new();
    T.get_or_init(|| {
        let root = SecretKey::from_seed([1; 32]);
        let body = TrustBody {
            product: Name::new("acme").unwrap(),
            version: 1,
            expires: u64::MAX,
            root: Role { threshold: 1, keys: vec![root.public()] },
            release: Role { threshold: 1, keys: vec![SecretKey::from_seed([2; 32]).public()] },
        };
        VerifiedTrust::anchor(&sign(DocumentKind::Trust, &body.to_payload(), &[&root])).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let want = ChannelRef {
        product: Name::new("acme").unwrap(),
        channel: Name::new("stable").unwrap(),
    };
    let _ = VerifiedManifest::verify(data, trust(), &want, 1_800_000_000);
    let _ = shoal_protocol::manifest::read_body_unverified(data);
});
