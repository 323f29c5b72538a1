//! LAN discovery over mDNS/DNS-SD: service `_shoal._tcp.local.`.
//!
//! Each agent registers an instance with a random name (fresh per start), its peer port,
//! and a TXT record with only `v` (protocol version) and `g` (an opaque group tag, so
//! unrelated Shoal deployments on one LAN can keep apart). Nothing in it reveals which
//! releases the host holds: the handshake's proof does that job, and only for peers that
//! know the release. Every resolved instance with the same version and group is reported
//! as a socket address to dial.
//!
//! Interface allow-list: with a non-empty list only those interfaces send and receive
//! mDNS. A limitation of `mdns-sd` 0.21: the daemon joins the multicast group on every
//! interface when it is created, before the list applies (IGMP membership only; no mDNS
//! packet leaves a disabled interface). Tests therefore run discovery inside network
//! namespaces.

use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use shoal_protocol::digest::hex_encode;
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
    /// Announces this agent on `port` and reports every compatible peer found to `found`.
    pub fn start(
        cfg: &DiscoveryConfig,
        port: u16,
        instance: [u8; 8],
        found: mpsc::Sender<SocketAddr>,
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
        let name = format!("shoal-{}", hex_encode(&instance));
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
                let ServiceEvent::ServiceResolved(s) = event else {
                    continue;
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
                    if let Err(mpsc::error::TrySendError::Closed(_)) =
                        found.try_send(SocketAddr::new(ip, s.get_port()))
                    {
                        return;
                    }
                }
            }
        });
        Ok(Discovery { daemon })
    }
}
