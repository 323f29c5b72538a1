//! LAN discovery over mDNS/DNS-SD: service `_shoal._tcp.local.`.
//!
//! Each agent registers an instance named `shoal-<peer id>-<tag>` (PROTOCOL.md §6.6): the
//! peer id is random and fresh per start, the same id its `Hello` carries; the tag is a
//! MAC of the id under the agent's discovery key
//! ([`shoal_protocol::discovery::DiscoveryKey`]), derived from the vendor's product and
//! the group, or in a private swarm from the swarm key, the product and the group. Agents that share
//! the key recognise each other; to anyone else a name is random. The TXT record holds
//! only `v=1`. Nothing in an announcement names the vendor, the group or a release.

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
use shoal_protocol::discovery::{DiscoveryKey, parse_name};
use shoal_protocol::wire::PeerId;
use tokio::sync::mpsc;

use crate::error::{Error, Result, exit};

/// The DNS-SD service type.
pub use shoal_protocol::discovery::SERVICE;
/// The TXT protocol version this agent speaks.
const TXT_VERSION: &str = "1";

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Interfaces to use; empty means all.
    pub interfaces: Vec<String>,
    /// The keys announcements are recognised under; the first tags our own. Agents meet
    /// only agents that share one.
    pub keys: Vec<DiscoveryKey>,
}

impl DiscoveryConfig {
    /// The settings of an agent of `product` in `group`: in a private swarm (`private`)
    /// its keys are derived from the swarm keys (the first tags our announcement), else
    /// from the product.
    pub fn new(
        interfaces: Vec<String>,
        product: &str,
        group: &str,
        private: Option<&crate::secure::SwarmKeys>,
    ) -> Self {
        let keys = match private {
            Some(keys) => keys
                .all()
                .iter()
                .map(|k| k.discovery(product, group))
                .collect(),
            None => vec![DiscoveryKey::public(product, group)],
        };
        DiscoveryConfig { interfaces, keys }
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
        /// Which of our keys recognised it (a private swarm dials with that key).
        key: usize,
    },
    /// The agent with this id withdrew its announcement (or it expired).
    Gone(PeerId),
}

/// Which of `keys` recognises the instance `fullname`, and the peer id it announces.
pub fn recognise(keys: &[DiscoveryKey], fullname: &str) -> Option<(PeerId, usize)> {
    let (id, tag) = parse_name(fullname)?;
    let key = keys.iter().position(|k| k.recognises(&id, &tag))?;
    Some((id, key))
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
        let Some(own_key) = cfg.keys.first() else {
            return Err(mdns_error("no discovery key"));
        };
        let name = own_key.instance_name(me);
        let info = ServiceInfo::new(
            SERVICE,
            &name,
            &format!("{name}.local."),
            "",
            port,
            &[("v", TXT_VERSION)][..],
        )
        .map_err(mdns_error)?
        .enable_addr_auto();
        let own = info.get_fullname().to_owned();
        daemon.register(info).map_err(mdns_error)?;
        let events = daemon.browse(SERVICE).map_err(mdns_error)?;
        let keys = cfg.keys.clone();
        // The id in a name we recognise (not our own), and under which key.
        let ours = move |name: &str| recognise(&keys, name).filter(|_| name != own);
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
                        Some((id, _)) if report(Found::Member(id)).is_err() => return,
                        _ => continue,
                    },
                    ServiceEvent::ServiceRemoved(_, name) => match ours(&name) {
                        Some((id, _)) if report(Found::Gone(id)).is_err() => return,
                        _ => continue,
                    },
                    _ => continue,
                };
                let Some((id, key)) = ours(s.get_fullname()) else {
                    continue;
                };
                if s.get_property_val_str("v") != Some(TXT_VERSION) {
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
                        key,
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
    use shoal_protocol::discovery::SwarmKey;

    #[test]
    fn names_are_recognised_under_the_key_that_tags_them() {
        let id = PeerId(*b"0123456789abcdef");
        let full = |k: &DiscoveryKey| format!("{}.{SERVICE}", k.instance_name(&id));
        let public = DiscoveryConfig::new(vec![], "acme-driver", "default", None);
        assert_eq!(
            recognise(&public.keys, &full(&public.keys[0])),
            Some((id, 0))
        );
        // Another vendor's agents are not ours.
        let other = DiscoveryConfig::new(vec![], "other-driver", "default", None);
        assert_eq!(recognise(&public.keys, &full(&other.keys[0])), None);
        // Mid-rotation, an agent holding [new, old] recognises both, and says which.
        let (old, new) = (SwarmKey::from_bytes([1; 32]), SwarmKey::from_bytes([2; 32]));
        let both = crate::secure::SwarmKeys::new(vec![new.clone(), old.clone()]).unwrap();
        let private = DiscoveryConfig::new(vec![], "acme-driver", "default", Some(&both));
        assert_eq!(
            recognise(
                &private.keys,
                &full(&old.discovery("acme-driver", "default"))
            ),
            Some((id, 1))
        );
        assert_eq!(
            recognise(
                &private.keys,
                &full(&new.discovery("acme-driver", "default"))
            ),
            Some((id, 0))
        );
        assert_eq!(recognise(&private.keys, &full(&public.keys[0])), None);
        assert_eq!(recognise(&private.keys, "printer._ipp._tcp.local."), None);
    }
}
