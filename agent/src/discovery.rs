//! LAN discovery over mDNS/DNS-SD: service `_shoal._tcp.local.`.
//!
//! Each agent registers an instance named after its peer id (`shoal-<32 hex digits>`,
//! random and fresh per start, the same id its `Hello` carries), its peer port, and a TXT
//! record with only `v` (protocol version) and `g` (an opaque group tag, so unrelated
//! Shoal deployments on one LAN can keep apart). Nothing in it reveals which releases the
//! host holds: the handshake's proof does that job, and only for peers that know the
//! release. Every resolved instance with the same version and group is reported as a
//! [`Found::Peer`] (its id, when the name carries one, and an address to dial); an
//! instance that goes away as [`Found::Gone`]. The ids let every agent split the origin
//! work over the whole LAN and pick its neighbours by the overlay rule without
//! connecting to everyone.
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
    /// An agent of our group at `addr`; `id` when its instance name carries one.
    Peer {
        /// Its peer id.
        id: Option<PeerId>,
        /// Where to dial it.
        addr: SocketAddr,
    },
    /// The agent with this id withdrew its announcement (or it expired).
    Gone(PeerId),
}

/// The instance name that announces `id`.
fn instance_name(id: &PeerId) -> String {
    format!("shoal-{}", hex_encode(&id.0))
}

/// The peer id in an instance's full name (`shoal-<hex>._shoal._tcp.local.`), if any.
pub fn id_in_name(fullname: &str) -> Option<PeerId> {
    let hex = fullname.strip_prefix("shoal-")?.split('.').next()?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(PeerId(id))
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
        if !cfg.interfaces.is_empty() {
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            let names: Vec<IfKind> = cfg
                .interfaces
                .iter()
                .map(|n| IfKind::Name(n.clone()))
                .collect();
            daemon.enable_interface(names).map_err(mdns_error)?;
        }
        let name = instance_name(me);
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
        tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                let s = match event {
                    ServiceEvent::ServiceResolved(s) => s,
                    ServiceEvent::ServiceRemoved(_, name) => {
                        if let Some(id) = id_in_name(&name)
                            && name != own
                            && let Err(mpsc::error::TrySendError::Closed(_)) =
                                found.try_send(Found::Gone(id))
                        {
                            return;
                        }
                        continue;
                    }
                    _ => continue,
                };
                if s.get_fullname() == own
                    || s.get_property_val_str("v") != Some(TXT_VERSION)
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
                    // A full queue drops the address: only a flood of announcements
                    // fills it (the dialer drains it at once).
                    let peer = Found::Peer {
                        id: id_in_name(s.get_fullname()),
                        addr: SocketAddr::new(ip, s.get_port()),
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = found.try_send(peer) {
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
    fn the_instance_name_carries_the_peer_id() {
        let id = PeerId(*b"0123456789abcdef");
        let full = format!("{}.{SERVICE}", instance_name(&id));
        assert_eq!(id_in_name(&full), Some(id));
        assert_eq!(
            id_in_name("shoal-0011223344556677._shoal._tcp.local."),
            None
        );
        assert_eq!(
            id_in_name("shoal-zz112233445566778899aabbccddeeff._shoal._tcp.local."),
            None
        );
        assert_eq!(id_in_name("printer._ipp._tcp.local."), None);
    }
}
