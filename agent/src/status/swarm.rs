//! The swarm view: every agent this one hears of, per release, built from this
//! agent's transfer snapshots and the reports peers sent (display only; see the
//! parent module for why its ratios cannot pass 100 %).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Money, share};
use crate::transfer::TransferSnapshot;
use crate::transfer::report::PeerReport;
use shoal_cli::unix_now;

/// One agent on one release in the swarm view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwarmAgent {
    /// Its display name, or `peer <id>` when it gave none.
    pub name: String,
    /// Its peer id on that release (hex).
    pub peer: String,
    /// It is this agent.
    pub this_agent: bool,
    /// Live: this agent on its current release, or a peer connected to it now.
    pub connected: bool,
    /// The release label.
    pub release: String,
    /// Verified pieces it holds.
    pub pieces_held: u32,
    /// Pieces in the release.
    pub piece_count: u32,
    /// Percent complete, 0 to 100.
    pub percent: f64,
    /// Bytes it received from peers.
    pub bytes_from_peers: u64,
    /// Bytes it received from the origin.
    pub bytes_from_origin: u64,
    /// Bytes it handed to its peer connections for sending (its own report).
    pub bytes_uploaded: u64,
    /// Seconds since it was last heard of.
    pub age_secs: u64,
}

/// One release in the swarm view, with what it cost the origin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwarmRelease {
    /// Label.
    pub release: String,
    /// Version number.
    pub version: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// Agents heard of on it.
    pub agents: usize,
    /// Of those, the ones that hold all of it.
    pub complete_agents: usize,
    /// What they received from peers.
    pub bytes_from_peers: u64,
    /// What they received from the origin.
    pub bytes_from_origin: u64,
    /// Percent of their bytes that came from peers, 0 to 100.
    pub offload_percent: f64,
}

/// `GET /api/v1/swarm`: every agent this one hears of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwarmView {
    /// This agent's name.
    pub name: String,
    /// Releases, newest first.
    pub releases: Vec<SwarmRelease>,
    /// Agents, by name then release.
    pub agents: Vec<SwarmAgent>,
    /// Bytes all of them received from peers: what the origin did not send.
    pub origin_bytes_saved: u64,
    /// Bytes all of them received from the origin.
    pub bytes_from_origin: u64,
    /// Percent of all their bytes that came from peers, 0 to 100.
    pub offload_percent: f64,
    /// `origin_bytes_saved` priced.
    pub money_saved: f64,
    /// The price used.
    pub money: Money,
}

fn percent(held: u32, count: u32) -> f64 {
    if count == 0 {
        return 0.0;
    }
    (100.0 * f64::from(held.min(count)) / f64::from(count)).clamp(0.0, 100.0)
}

/// The swarm view from this agent's snapshots, `(snapshot, live)`, newest first.
pub(super) fn swarm_view(
    name: &str,
    snapshots: &[(&TransferSnapshot, bool)],
    money: Money,
) -> SwarmView {
    let now = unix_now();
    let mut agents = Vec::new();
    let mut releases = Vec::new();
    for (s, live) in snapshots {
        let before = agents.len();
        agents.push(SwarmAgent {
            name: name.to_owned(),
            peer: String::new(),
            this_agent: true,
            connected: *live,
            release: s.release.clone(),
            pieces_held: s.pieces_held,
            piece_count: s.piece_count,
            percent: percent(s.pieces_held, s.piece_count),
            bytes_from_peers: s.bytes_from_peers.min(s.bytes),
            bytes_from_origin: s.bytes_from_origin.min(s.bytes),
            bytes_uploaded: s.bytes_uploaded,
            age_secs: 0,
        });
        // A connected peer's pieces are known from its `Have`s, fresher than its last
        // report (sent every 10 s); peers that sent no report yet are listed too.
        let observed: BTreeMap<&str, u32> = s
            .peers
            .iter()
            .map(|p| (p.peer.as_str(), p.pieces_held))
            .collect();
        // A finished transfer's peers are history: only reports of the last 10 minutes.
        let silent = s
            .peers
            .iter()
            .filter(|_| *live)
            .filter(|p| !s.reports.iter().any(|r| r.peer == p.peer))
            .map(|p| PeerReport {
                peer: p.peer.clone(),
                name: String::new(),
                pieces_held: p.pieces_held,
                piece_count: s.piece_count,
                bytes_from_peers: 0,
                bytes_from_origin: 0,
                bytes_uploaded: 0,
                uptime_secs: 0,
                heard_at: now,
                connected: true,
            });
        let fresh = |r: &&PeerReport| {
            *live
                || now.saturating_sub(r.heard_at)
                    < crate::transfer::report::REPORT_KEPT_FOR.as_secs()
        };
        let reports: Vec<PeerReport> = s
            .reports
            .iter()
            .filter(fresh)
            .cloned()
            .chain(silent)
            .collect();
        for r in &reports {
            let display = if r.name.is_empty() {
                format!("peer {}", &r.peer[..8.min(r.peer.len())])
            } else {
                r.name.clone()
            };
            let held = match observed.get(r.peer.as_str()) {
                Some(h) if r.connected => *h,
                _ => r.pieces_held,
            };
            agents.push(SwarmAgent {
                name: display,
                peer: r.peer.clone(),
                this_agent: false,
                connected: *live && r.connected,
                release: s.release.clone(),
                pieces_held: held,
                piece_count: r.piece_count,
                percent: percent(held, r.piece_count),
                bytes_from_peers: r.bytes_from_peers.min(s.bytes),
                bytes_from_origin: r.bytes_from_origin.min(s.bytes),
                bytes_uploaded: r.bytes_uploaded,
                age_secs: now.saturating_sub(r.heard_at),
            });
        }
        let on_it = &agents[before..];
        let (peers, origin) = on_it.iter().fold((0u64, 0u64), |(p, o), a| {
            (
                p.saturating_add(a.bytes_from_peers),
                o.saturating_add(a.bytes_from_origin),
            )
        });
        releases.push(SwarmRelease {
            release: s.release.clone(),
            version: s.version,
            bytes: s.bytes,
            agents: on_it.len(),
            complete_agents: on_it
                .iter()
                .filter(|a| a.pieces_held >= a.piece_count)
                .count(),
            bytes_from_peers: peers,
            bytes_from_origin: origin,
            offload_percent: 100.0 * share(peers, origin),
        });
    }
    disambiguate(&mut agents);
    agents.sort_by(|a, b| {
        (!a.this_agent, &a.name, &a.release).cmp(&(!b.this_agent, &b.name, &b.release))
    });
    let saved: u64 = releases
        .iter()
        .map(|r| r.bytes_from_peers)
        .fold(0, u64::saturating_add);
    let from_origin: u64 = releases
        .iter()
        .map(|r| r.bytes_from_origin)
        .fold(0, u64::saturating_add);
    SwarmView {
        name: name.to_owned(),
        releases,
        agents,
        origin_bytes_saved: saved,
        bytes_from_origin: from_origin,
        offload_percent: 100.0 * share(saved, from_origin),
        money_saved: saved as f64 / 1e9 * money.price_per_gb,
        money,
    }
}

/// Two agents that gave the same name on one release get their peer ids added.
fn disambiguate(agents: &mut [SwarmAgent]) {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for a in agents.iter() {
        *seen.entry((a.name.clone(), a.release.clone())).or_default() += 1;
    }
    for a in agents.iter_mut() {
        if seen[&(a.name.clone(), a.release.clone())] > 1 && !a.this_agent {
            a.name = format!("{} ({})", a.name, &a.peer[..8.min(a.peer.len())]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::snapshot;

    fn report(peer: &str, name: &str, held: u32, peers: u64, origin: u64) -> PeerReport {
        PeerReport {
            peer: peer.into(),
            name: name.into(),
            pieces_held: held,
            piece_count: 10,
            bytes_from_peers: peers,
            bytes_from_origin: origin,
            bytes_uploaded: 0,
            uptime_secs: 1,
            heard_at: unix_now(),
            connected: true,
        }
    }

    #[test]
    fn offload_never_passes_100_percent_even_when_peers_lie() {
        let mut s = snapshot("1.0", 10, 600, 400);
        // A liar claims far more than the release holds; its bytes are clamped.
        s.reports.push(report("aa", "liar", 10, u64::MAX, 0));
        s.reports.push(report("bb", "honest", 5, 500, 0));
        let money = Money {
            price_per_gb: 10.0,
            currency: "EUR".into(),
        };
        let v = swarm_view("me", &[(&s, true)], money);
        assert!(v.offload_percent <= 100.0);
        assert!(v.releases[0].offload_percent <= 100.0);
        assert_eq!(v.origin_bytes_saved, 600 + 1000 + 500);
        assert_eq!(v.bytes_from_origin, 400);
        assert!((v.offload_percent - 100.0 * 2100.0 / 2500.0).abs() < 1e-9);
        assert_eq!(v.releases[0].agents, 3);
        assert_eq!(v.releases[0].complete_agents, 2);
        assert!((v.money_saved - 2100.0 / 1e9 * 10.0).abs() < 1e-12);
        assert_eq!(v.agents[0].name, "me");
        assert!(v.agents[0].this_agent);
    }

    #[test]
    fn same_names_are_told_apart_and_nameless_peers_get_their_id() {
        let mut s = snapshot("1.0", 1, 0, 0);
        s.reports.push(report("aaaaaaaa11", "pc", 1, 0, 0));
        s.reports.push(report("bbbbbbbb22", "pc", 1, 0, 0));
        s.reports.push(report("cccccccc33", "", 1, 0, 0));
        let v = swarm_view(
            "me",
            &[(&s, true)],
            Money {
                price_per_gb: 0.0,
                currency: String::new(),
            },
        );
        let names: Vec<&str> = v.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["me", "pc (aaaaaaaa)", "pc (bbbbbbbb)", "peer cccccccc"]
        );
    }
}
