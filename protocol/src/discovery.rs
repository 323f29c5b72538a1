//! Who may recognise whom on a LAN (PROTOCOL.md §6.6 and §6.8): the instance names agents
//! announce over DNS-SD, the discovery key behind them, and the organisation's swarm key.
//!
//! An instance name is `shoal-<peer id>-<tag>`: the peer id is random and fresh per start,
//! and the tag is a MAC of it under a [`DiscoveryKey`]. Agents that share the key (the same
//! vendor and group in public mode, the same swarm key and group in private mode) recognise
//! each other's names; to anyone else a name is random bytes that change at every start.
//! Nothing here is secret in public mode (the product name is in every manifest): the tag
//! keeps vendors apart, it does not hide them from someone who knows the product. In
//! private mode the key derives from the [`SwarmKey`], which only the organisation holds.

use std::fmt;

use crate::digest::{Digest, hex_decode_into, hex_encode, hmac};
use crate::wire::PeerId;

/// Bytes of a discovery tag (16 hex digits in a name).
pub const TAG_LEN: usize = 8;

/// The key under which an agent's announcements are tagged and recognised.
#[derive(Clone, PartialEq, Eq)]
pub struct DiscoveryKey([u8; 32]);

impl fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiscoveryKey(..)")
    }
}

impl DiscoveryKey {
    /// Public mode: agents of one product (the trust document's `product`) and group.
    pub fn public(product: &str, group: &str) -> Self {
        let d = hmac(
            b"SHOAL-DISCOVERY-PUBLIC-V1",
            &[product.as_bytes(), b"\0", group.as_bytes()],
        );
        DiscoveryKey(d.0)
    }

    /// The tag that announces `id`.
    pub fn tag(&self, id: &PeerId) -> [u8; TAG_LEN] {
        let d = hmac(&self.0, &[b"SHOAL-TAG-V1\0", &id.0]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&d.0[..TAG_LEN]);
        tag
    }

    /// Whether `tag` announces `id` under this key (compared in constant time).
    pub fn recognises(&self, id: &PeerId, tag: &[u8; TAG_LEN]) -> bool {
        let want = self.tag(id);
        want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The DNS-SD instance label that announces `id`: `shoal-<32 hex>-<16 hex>`.
    pub fn instance_name(&self, id: &PeerId) -> String {
        format!("shoal-{}-{}", hex_encode(&id.0), hex_encode(&self.tag(id)))
    }
}

/// The DNS-SD service instances are announced under.
pub const SERVICE: &str = "_shoal._tcp.local.";

/// The peer id and tag in an instance's label or full name
/// (`shoal-<32 hex>-<16 hex>`, alone or followed by `.` and [`SERVICE`]), if it has
/// exactly that form (lower-case hex only, so one agent has one name).
pub fn parse_name(fullname: &str) -> Option<(PeerId, [u8; TAG_LEN])> {
    let name = fullname.strip_prefix("shoal-")?;
    let label = match name.split_once('.') {
        None => name,
        Some((label, SERVICE)) => label,
        Some(_) => return None,
    };
    let (id_hex, tag_hex) = label.split_once('-')?;
    let mut id = [0u8; 16];
    hex_decode_into(id_hex, &mut id)?;
    let mut tag = [0u8; TAG_LEN];
    hex_decode_into(tag_hex, &mut tag)?;
    Some((PeerId(id), tag))
}

/// Bytes of a swarm key.
pub const SWARM_KEY_LEN: usize = 32;

/// The text form's prefix: `shoal-swarm-key-1:` and 64 lower-case hex digits.
pub const SWARM_KEY_PREFIX: &str = "shoal-swarm-key-1:";

/// An organisation's swarm key (private mode): 32 random bytes that every agent of the
/// organisation holds. The key itself is never sent or logged; what is derived from it
/// is: the Noise pre-shared key ([`SwarmKey::psk`]), discovery keys per group, and a
/// fingerprint for logs ([`SwarmKey::fingerprint`]).
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; SWARM_KEY_LEN]);

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

impl SwarmKey {
    /// A key from 32 random bytes (the caller draws them).
    pub fn from_bytes(bytes: [u8; SWARM_KEY_LEN]) -> Self {
        SwarmKey(bytes)
    }

    /// Parses the text form, surrounding whitespace allowed.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.trim().strip_prefix(SWARM_KEY_PREFIX)?;
        let mut key = [0u8; SWARM_KEY_LEN];
        hex_decode_into(hex, &mut key)?;
        Some(SwarmKey(key))
    }

    /// The text form (a secret: write it only where the key belongs).
    pub fn to_text(&self) -> String {
        format!("{SWARM_KEY_PREFIX}{}", hex_encode(&self.0))
    }

    /// The pre-shared key of the Noise handshake (§6.8).
    pub fn psk(&self) -> [u8; 32] {
        hmac(&self.0, &[b"SHOAL-NOISE-PSK-V1"]).0
    }

    /// The discovery key of `product`'s agents in `group` in private mode (one
    /// organisation's key may serve several vendors' agents: they keep apart too).
    pub fn discovery(&self, product: &str, group: &str) -> DiscoveryKey {
        let d = hmac(
            &self.0,
            &[
                b"SHOAL-DISCOVERY-PRIVATE-V1\0",
                product.as_bytes(),
                b"\0",
                group.as_bytes(),
            ],
        );
        DiscoveryKey(d.0)
    }

    /// A short public name of the key for logs and status (8 hex digits): tells keys
    /// apart without revealing them.
    pub fn fingerprint(&self) -> String {
        let d: Digest = hmac(&self.0, &[b"SHOAL-KEY-FINGERPRINT-V1"]);
        hex_encode(&d.0[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recognised_only_under_their_key() {
        let id = PeerId(*b"0123456789abcdef");
        let acme = DiscoveryKey::public("acme-driver", "default");
        let name = acme.instance_name(&id);
        assert_eq!(name.len(), 6 + 32 + 1 + 2 * TAG_LEN);
        assert!(name.len() <= 63, "one DNS label");
        let (parsed, tag) = parse_name(&format!("{name}._shoal._tcp.local.")).unwrap();
        assert_eq!(parsed, id);
        assert!(acme.recognises(&id, &tag));
        // Another product, another group, another id, a private key: not recognised.
        assert!(!DiscoveryKey::public("other", "default").recognises(&id, &tag));
        assert!(!DiscoveryKey::public("acme-driver", "lab").recognises(&id, &tag));
        assert!(!acme.recognises(&PeerId(*b"0123456789abcdeg"), &tag));
        let key = SwarmKey::from_bytes([7; 32]);
        assert!(
            !key.discovery("acme-driver", "default")
                .recognises(&id, &tag)
        );
        // The name says nothing in clear.
        assert!(!name.contains("acme") && !name.contains("default"));
        let (variant, udp) = (
            format!("{name}.x._shoal._tcp.local."),
            format!("{name}._shoal._udp.local."),
        );
        for bad in [
            "shoal-0011223344556677._shoal._tcp.local.",
            "shoal-00112233445566778899aabbccddeeff._shoal._tcp.local.",
            "shoal-00112233445566778899aabbccddeeff-00000000._shoal._tcp.local.",
            "shoal-zz112233445566778899aabbccddeeff-0000000000000000._shoal._tcp.local.",
            "shoal-00112233445566778899AABBCCDDEEFF-0000000000000000._shoal._tcp.local.",
            "printer._ipp._tcp.local.",
            // A member's label under another name: not the same instance.
            variant.as_str(),
            udp.as_str(),
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    /// PROTOCOL.md §7 (checked against an independent HMAC implementation).
    #[test]
    fn golden_vectors() {
        let id = PeerId([0x11; 16]);
        assert_eq!(
            DiscoveryKey::public("acme", "default").instance_name(&id),
            "shoal-11111111111111111111111111111111-3ed20d01d0dfbf57"
        );
        let k = SwarmKey::from_bytes([0x42; 32]);
        assert_eq!(
            k.to_text(),
            "shoal-swarm-key-1:4242424242424242424242424242424242424242424242424242424242424242"
        );
        assert_eq!(
            hex_encode(&k.psk()),
            "93fea050385f0ca4c815c29e05c44a30301c2fdc8202a0ee7524bf460dec6b32"
        );
        assert_eq!(k.fingerprint(), "f5c1acb4");
        assert_eq!(
            k.discovery("acme", "default").instance_name(&id),
            "shoal-11111111111111111111111111111111-27167767c72397bc"
        );
    }

    #[test]
    fn swarm_keys_round_trip_and_never_print() {
        let key = SwarmKey::from_bytes([0xab; 32]);
        let text = key.to_text();
        assert!(text.starts_with(SWARM_KEY_PREFIX));
        assert_eq!(SwarmKey::parse(&format!("  {text}\n")), Some(key.clone()));
        assert_eq!(SwarmKey::parse(&text.to_uppercase()), None);
        assert_eq!(SwarmKey::parse(&text[..text.len() - 2]), None);
        assert_eq!(SwarmKey::parse(&hex_encode(&[0xab; 32])), None);
        assert!(!format!("{key:?}").contains("abab"));
        assert_eq!(key.fingerprint().len(), 8);
        assert_ne!(key.psk(), SwarmKey::from_bytes([0xac; 32]).psk());
        assert_ne!(key.discovery("p", "a"), key.discovery("p", "b"));
        assert_ne!(key.discovery("p", "a"), key.discovery("q", "a"));
    }
}
