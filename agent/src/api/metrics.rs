//! The agent's `/metrics` in the Prometheus text format (version 0.0.4): counters end in
//! `_total`, sizes are bytes, times are Unix seconds, every family has HELP and TYPE.
//!
//! Counters cover the life of the process (every release together); gauges describe the
//! current release. The swarm families (`shoal_agent_swarm_*`) repeat what peers told
//! this agent, for display: a fleet dashboard sums the per-agent counters instead.

use std::fmt::Write;

use crate::status::{AgentStatus, SwarmView};

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", shoal_cli::prometheus_label(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    Family { out, name }
}

/// Renders the exposition.
pub fn render(st: &AgentStatus, swarm: &SwarmView) -> String {
    let mut out = String::new();
    let o = &mut out;
    let t = &st.totals;
    family(
        o,
        "shoal_agent_info",
        "gauge",
        "The agent's version, name and channel (always 1).",
    )
    .sample(
        &[
            ("version", &st.agent_version),
            ("name", &st.name),
            ("channel", &st.channel),
        ],
        1,
    );
    family(
        o,
        "shoal_agent_start_time_seconds",
        "gauge",
        "Unix time the agent started.",
    )
    .sample(&[], st.started_at);
    let mut f = family(
        o,
        "shoal_agent_received_bytes_total",
        "counter",
        "Verified release bytes received, by source (peers or origin).",
    );
    f.sample(&[("source", "peers")], t.bytes_from_peers);
    f.sample(&[("source", "origin")], t.bytes_from_origin);
    family(
        o,
        "shoal_agent_uploaded_bytes_total",
        "counter",
        "Release bytes handed to peer connections for sending.",
    )
    .sample(&[], t.bytes_uploaded);
    family(
        o,
        "shoal_agent_wasted_bytes_total",
        "counter",
        "Bytes received and thrown away (bad pieces, duplicates).",
    )
    .sample(&[], t.bytes_wasted);
    family(
        o,
        "shoal_agent_origin_fetches_total",
        "counter",
        "Pieces fetched from the origin because no peer gave them in time.",
    )
    .sample(&[], t.origin_fetches);
    family(
        o,
        "shoal_agent_origin_fetch_failures_total",
        "counter",
        "Origin piece fetches that failed or returned a bad piece.",
    )
    .sample(&[], t.origin_failures);
    family(
        o,
        "shoal_agent_peer_bans_total",
        "counter",
        "Peers banned for breaking the protocol or sending bad data.",
    )
    .sample(&[], t.bans);
    let mut f = family(
        o,
        "shoal_agent_polls_total",
        "counter",
        "Channel checks, by result.",
    );
    f.sample(&[("result", "ok")], st.polls_ok);
    f.sample(&[("result", "error")], st.polls_failed);
    if let Some(p) = &st.last_poll {
        family(
            o,
            "shoal_agent_last_poll_timestamp_seconds",
            "gauge",
            "Unix time the last channel check ended.",
        )
        .sample(&[], p.at);
    }
    family(
        o,
        "shoal_agent_releases_delivered_total",
        "counter",
        "Releases verified and delivered since the agent started.",
    )
    .sample(&[], st.releases_delivered);
    if let Some(c) = &st.current {
        family(
            o,
            "shoal_agent_release_info",
            "gauge",
            "The release being fetched or seeded (always 1).",
        )
        .sample(
            &[("release", &c.release), ("version", &c.version.to_string())],
            1,
        );
        family(
            o,
            "shoal_agent_release_size_bytes",
            "gauge",
            "Bytes in the current release.",
        )
        .sample(&[], c.bytes);
        family(
            o,
            "shoal_agent_release_pieces",
            "gauge",
            "Pieces in the current release.",
        )
        .sample(&[], c.piece_count);
        family(
            o,
            "shoal_agent_release_pieces_held",
            "gauge",
            "Verified pieces of the current release held.",
        )
        .sample(&[], c.pieces_held);
        family(
            o,
            "shoal_agent_release_complete",
            "gauge",
            "1 when every piece of the current release is held and stored.",
        )
        .sample(&[], u8::from(c.complete));
        family(
            o,
            "shoal_agent_peers",
            "gauge",
            "Peers joined on the current release.",
        )
        .sample(&[], c.peers.len());
        family(
            o,
            "shoal_agent_lan_members",
            "gauge",
            "Agents of the LAN that discovery sees.",
        )
        .sample(&[], c.lan_members);
    }
    let mut f = family(
        o,
        "shoal_agent_swarm_agents",
        "gauge",
        "Agents this agent hears of, by release (itself included; peers' reports are display only).",
    );
    for r in &swarm.releases {
        f.sample(&[("release", &r.release)], r.agents);
    }
    let mut f = family(
        o,
        "shoal_agent_swarm_complete_agents",
        "gauge",
        "Of those, the agents that hold the whole release.",
    );
    for r in &swarm.releases {
        f.sample(&[("release", &r.release)], r.complete_agents);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Money, StatusHub};
    use crate::transfer::TransferSnapshot;

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let hub = StatusHub::new(
            "pc \"7\"\n",
            "stable",
            "https://o",
            Money {
                price_per_gb: 0.0,
                currency: String::new(),
            },
        );
        let (_tx, rx) = tokio::sync::watch::channel(TransferSnapshot {
            release: "2.4.1".into(),
            version: 3,
            bytes: 100,
            pieces_held: 1,
            piece_count: 2,
            bytes_from_peers: 60,
            bytes_from_origin: 40,
            ..TransferSnapshot::default()
        });
        hub.transfer_started(rx);
        let text = render(&hub.status(), &hub.swarm());
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                typed.insert(name.to_owned(), kind.to_owned());
            }
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let kind = typed
                .get(name)
                .unwrap_or_else(|| panic!("{name} has no TYPE"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
        }
        assert!(text.contains("shoal_agent_received_bytes_total{source=\"peers\"} 60\n"));
        assert!(text.contains("name=\"pc \\\"7\\\"\\n\""), "{text}");
        assert!(text.contains("shoal_agent_release_info{release=\"2.4.1\",version=\"3\"} 1\n"));
    }
}
