//! LAN discovery over mDNS/DNS-SD: service `_shoal._tcp.local.`.
//!
//! Each agent registers an instance named after its peer id and group
//! (`shoal-<32 hex digits>-<8 hex digits>`: the id is random and fresh per start, the same
//! id its `Hello` carries; the second part is a hash of the group, see [`group_tag`]), its
//! peer port, and a TXT record with only `v` (protocol version) and `g` (an opaque group
//! tag, so unrelated Shoal deployments on one LAN can keep apart). Nothing in it reveals
//! which releases the host holds: the handshake's proof does that job, and only for peers
//! that know the release.
//!
//! Reports: an instance of our group is a [`Found::Member`] as soon as its name is seen
//! (the PTR record alone), and a [`Found::Peer`] with an address to dial once resolved
//! (SRV, TXT and address records, with the same version and group); one that goes away
//! is [`Found::Gone`]. Members come from names because resolving is slow on a large LAN:
//! with 48 agents on one link, `mdns-sd` resolved only 13-14 instances per agent over a
//! whole 36 s run, while the names all arrive with the first answers. Members let every
//! agent split the origin work over the whole LAN, and the overlay rule picks which of
//! them to dial, without connecting to everyone.
//!
//! Interface allow-list: with a non-empty list only those interfaces send and receive
//! mDNS. A limitation of `mdns-sd` 0.21: the daemon joins the multicast group on every
//! interface when it is created, before the list applies (IGMP membership only; no mDNS
//! packet leaves a disabled interface). Tests therefore run discovery inside network
//! namespaces.

use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use shoal_protocol::digest::hex_encode;
use shoal_protocol::wire::PeerId;
use tokio::sync::mpsc;

use crate::error::{Error, Result, exit};

/// The DNS-SD service type.
pub const SERVICE: &str = "_shoal._tcp.local.";
/// The TXT protocol version this agent speaks.
const TXT_VERSION: &str = "1";

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Interfaces to use; empty means all.
    pub interfaces: Vec<String>,
    /// Opaque group tag; agents only meet agents with the same tag.
    pub group: String,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            interfaces: Vec::new(),
            group: "default".into(),
        }
    }
}

/// What discovery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An agent of our group exists (its address is not known yet).
    Member(PeerId),
    /// An agent of our group at `addr`.
    Peer {
        /// Its peer id.
        id: PeerId,
        /// Where to dial it.
        addr: SocketAddr,
    },
    /// The agent with this id withdrew its announcement (or it expired).
    Gone(PeerId),
}

/// The short tag of a group in instance names: the first 4 bytes of
/// `SHA-256("SHOAL-GROUP-V1\0" || group)`, hex.
pub fn group_tag(group: &str) -> String {
    let d = shoal_protocol::Digest::of_parts(&[b"SHOAL-GROUP-V1\0", group.as_bytes()]);
    hex_encode(&d.0[..4])
}

/// The instance name that announces `id` in `group`.
fn instance_name(id: &PeerId, group: &str) -> String {
    format!("shoal-{}-{}", hex_encode(&id.0), group_tag(group))
}

/// The peer id and group tag in an instance's full name
/// (`shoal-<32 hex>-<8 hex>._shoal._tcp.local.`), if it has that form.
pub fn parse_name(fullname: &str) -> Option<(PeerId, &str)> {
    let label = fullname.strip_prefix("shoal-")?.split('.').next()?;
    let (hex, tag) = label.split_once('-')?;
    // Lowercase only: one agent has one name (a variant spelling of a real agent's id
    // must not redirect or withdraw it).
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !is_hex(hex, 32) || !is_hex(tag, 8) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((PeerId(id), tag))
}

/// A running announcement and browse; stops when dropped.
pub struct Discovery {
    daemon: ServiceDaemon,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

fn mdns_error(e: impl std::fmt::Display) -> Error {
    Error::new(
        exit::IO,
        format!("mDNS discovery: {e}"),
        "pass --no-mdns and list peers with --peer on networks without multicast",
    )
}

impl Discovery {
    /// Announces this agent (`me`) on `port` and reports every compatible peer found,
    /// and every one gone, to `found`.
    pub fn start(
        cfg: &DiscoveryConfig,
        port: u16,
        me: &PeerId,
        found: mpsc::Sender<Found>,
    ) -> Result<Discovery> {
        let daemon = ServiceDaemon::new().map_err(mdns_error)?;
        // Cache answers to other agents' queries too: on a LAN of dozens of agents most
        // queries are suppressed as duplicates (RFC 6762 7.3), and an agent that drops
        // the answers to questions it did not send itself resolves only a few peers.
        daemon.accept_unsolicited(true).map_err(mdns_error)?;
        if !cfg.interfaces.is_empty() {
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            let names: Vec<IfKind> = cfg
                .interfaces
                .iter()
                .map(|n| IfKind::Name(n.clone()))
                .collect();
            daemon.enable_interface(names).map_err(mdns_error)?;
        }
        let name = instance_name(me, &cfg.group);
        let info = ServiceInfo::new(
            SERVICE,
            &name,
            &format!("{name}.local."),
            "",
            port,
            &[("v", TXT_VERSION), ("g", cfg.group.as_str())][..],
        )
        .map_err(mdns_error)?
        .enable_addr_auto();
        let own = info.get_fullname().to_owned();
        daemon.register(info).map_err(mdns_error)?;
        let events = daemon.browse(SERVICE).map_err(mdns_error)?;
        let group = cfg.group.clone();
        let tag = group_tag(&group);
        // The id in a name of our group (not our own).
        let ours = move |name: &str| {
            parse_name(name)
                .filter(|(_, t)| *t == tag && name != own)
                .map(|(id, _)| id)
        };
        tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                // A full queue drops the report: only a flood of announcements fills
                // it (the dialer drains it at once).
                let report = |f: Found| match found.try_send(f) {
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                    _ => Ok(()),
                };
                let s = match event {
                    ServiceEvent::ServiceResolved(s) => s,
                    ServiceEvent::ServiceFound(_, name) => match ours(&name) {
                        Some(id) if report(Found::Member(id)).is_err() => return,
                        _ => continue,
                    },
                    ServiceEvent::ServiceRemoved(_, name) => match ours(&name) {
                        Some(id) if report(Found::Gone(id)).is_err() => return,
                        _ => continue,
                    },
                    _ => continue,
                };
                let Some(id) = ours(s.get_fullname()) else {
                    continue;
                };
                if s.get_property_val_str("v") != Some(TXT_VERSION)
                    || s.get_property_val_str("g") != Some(group.as_str())
                {
                    continue;
                }
                for ip in s.get_addresses() {
                    let ip: IpAddr = ip.to_ip_addr();
                    // A link-local IPv6 address is useless without its scope.
                    if let IpAddr::V6(v6) = ip
                        && (v6.segments()[0] & 0xffc0) == 0xfe80
                    {
                        continue;
                    }
                    tracing::debug!(%ip, port = s.get_port(), "peer discovered");
                    let peer = Found::Peer {
                        id,
                        addr: SocketAddr::new(ip, s.get_port()),
                    };
                    if report(peer).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Discovery { daemon })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_name_carries_the_peer_id_and_group_tag() {
        let id = PeerId(*b"0123456789abcdef");
        let full = format!("{}.{SERVICE}", instance_name(&id, "default"));
        let tag = group_tag("default");
        assert_eq!(parse_name(&full), Some((id, tag.as_str())));
        assert_ne!(group_tag("default"), group_tag("acme"));
        for bad in [
            "shoal-0011223344556677._shoal._tcp.local.",
            "shoal-00112233445566778899aabbccddeeff._shoal._tcp.local.",
            "shoal-zz112233445566778899aabbccddeeff-00000000._shoal._tcp.local.",
            "shoal-+0112233445566778899aabbccddeeff-00000000._shoal._tcp.local.",
            "shoal-00112233445566778899AABBCCDDEEFF-00000000._shoal._tcp.local.",
            "printer._ipp._tcp.local.",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
