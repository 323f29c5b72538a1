//! What the daemon knows about itself, for the status API, `/metrics` and the dashboard:
//! the facts the daemon records as it goes ([`StatusHub`]), and the two views built from
//! them on request, [`AgentStatus`] (this agent) and [`SwarmView`] (every agent this one
//! hears of, per release).
//!
//! Counters only grow for the life of the process: a transfer that ends folds its last
//! snapshot into the totals. Ratios are computed from byte counts that are each clamped
//! to the release's size, so they cannot pass 100 %; peers' numbers are shown, never
//! used.

mod swarm;

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::transfer::TransferSnapshot;
use shoal_cli::unix_now;
pub use swarm::{SwarmAgent, SwarmRelease, SwarmView};

/// Finished transfers whose last snapshot stays in the swarm view.
pub const EARLIER_KEPT: usize = 4;

/// Releases listed as kept at most.
pub const KEPT_LISTED: usize = 16;

/// Facts recorded by the daemon; shared with the API.
pub struct StatusHub {
    started: Instant,
    started_at: u64,
    name: String,
    channel: String,
    origin: String,
    money: Money,
    swarm_keys: Vec<String>,
    facts: Mutex<Facts>,
}

/// The price of a GB from the origin, to show what the swarm saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Money {
    /// Price of 10^9 bytes sent by the origin.
    pub price_per_gb: f64,
    /// Its currency, e.g. `USD`.
    pub currency: String,
}

#[derive(Default)]
struct Facts {
    current: Option<watch::Receiver<TransferSnapshot>>,
    earlier: Vec<TransferSnapshot>,
    past: Totals,
    kept: Vec<KeptRelease>,
    polls_ok: u64,
    polls_failed: u64,
    last_poll: Option<PollRecord>,
    next_poll_at: Option<u64>,
    last_error: Option<ErrorRecord>,
    delivered: u64,
    /// Orders polls and errors recorded in the same second.
    seq: u64,
}

/// Byte and event counters since the agent started.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Verified bytes received from peers.
    pub bytes_from_peers: u64,
    /// Verified bytes received from the origin.
    pub bytes_from_origin: u64,
    /// Bytes handed to peer connections for sending.
    pub bytes_uploaded: u64,
    /// Bytes received and thrown away.
    pub bytes_wasted: u64,
    /// Origin fetches started.
    pub origin_fetches: u64,
    /// Origin fetches that failed.
    pub origin_failures: u64,
    /// Peers banned.
    pub bans: u64,
}

impl Totals {
    fn add(&mut self, s: &TransferSnapshot) {
        self.bytes_from_peers += s.bytes_from_peers;
        self.bytes_from_origin += s.bytes_from_origin;
        self.bytes_uploaded += s.bytes_uploaded;
        self.bytes_wasted += s.bytes_wasted;
        self.origin_fetches += s.origin_fetches;
        self.origin_failures += s.origin_failures;
        self.bans += s.bans_total;
    }
}

/// A release delivered and kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeptRelease {
    /// Its label.
    pub release: String,
    /// Its version number.
    pub version: u64,
    /// Unix time it was delivered (or found delivered at start).
    pub delivered_at: u64,
}

/// The last channel check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PollRecord {
    /// Unix time it ended.
    pub at: u64,
    /// Its place among the polls and errors recorded (a later one has a larger number).
    #[serde(default)]
    pub seq: u64,
    /// It succeeded.
    pub ok: bool,
    /// What it found, or why it failed.
    pub message: String,
}

/// The last error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorRecord {
    /// Unix time.
    pub at: u64,
    /// Its place among the polls and errors recorded.
    #[serde(default)]
    pub seq: u64,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub note: String,
}

/// `GET /api/v1/status`: this agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    /// Display name (sent to peers in `Stats`).
    pub name: String,
    /// The agent's version.
    pub agent_version: String,
    /// Unix time the agent started.
    pub started_at: u64,
    /// Seconds since.
    pub uptime_secs: u64,
    /// The followed channel.
    pub channel: String,
    /// The origin's base URL.
    pub origin: String,
    /// The release being fetched or seeded now.
    pub current: Option<TransferSnapshot>,
    /// Releases delivered and kept, newest last.
    pub kept: Vec<KeptRelease>,
    /// Channel checks that succeeded.
    pub polls_ok: u64,
    /// Channel checks that failed.
    pub polls_failed: u64,
    /// The last channel check.
    pub last_poll: Option<PollRecord>,
    /// Unix time of the next check.
    pub next_poll_at: Option<u64>,
    /// The last error, if any.
    pub last_error: Option<ErrorRecord>,
    /// Releases delivered since start.
    pub releases_delivered: u64,
    /// Counters since start, every release together.
    pub totals: Totals,
    /// Share of received bytes that came from peers, 0 to 1.
    pub peer_share: f64,
    /// In a private swarm, the fingerprints of its swarm keys (the one in use first);
    /// empty in a public swarm.
    #[serde(default)]
    pub swarm_keys: Vec<String>,
}

impl StatusHub {
    /// A hub for an agent called `name` following `channel` on `origin`.
    pub fn new(name: &str, channel: &str, origin: &str, money: Money) -> Self {
        StatusHub {
            started: Instant::now(),
            started_at: unix_now(),
            name: name.to_owned(),
            channel: channel.to_owned(),
            origin: origin.to_owned(),
            money,
            swarm_keys: Vec::new(),
            facts: Mutex::new(Facts::default()),
        }
    }

    /// The hub of an agent in a private swarm, with its keys' fingerprints (the one in
    /// use first).
    pub fn with_swarm_keys(mut self, fingerprints: Vec<String>) -> Self {
        self.swarm_keys = fingerprints;
        self
    }

    /// When the agent started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A transfer started; the one before (if any) is folded into the totals.
    pub fn transfer_started(&self, snapshots: watch::Receiver<TransferSnapshot>) {
        let mut f = self.facts();
        fold(&mut f);
        f.current = Some(snapshots);
    }

    /// The current transfer stopped and no other replaces it.
    pub fn transfer_stopped(&self) {
        fold(&mut self.facts());
    }

    /// A channel check ended.
    pub fn polled(&self, result: std::result::Result<String, &crate::error::Error>) {
        let mut f = self.facts();
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(e) => (false, e.message.clone()),
        };
        if ok {
            f.polls_ok += 1;
        } else {
            f.polls_failed += 1;
        }
        f.seq += 1;
        f.last_poll = Some(PollRecord {
            at: unix_now(),
            seq: f.seq,
            ok,
            message,
        });
    }

    /// The next channel check is due at `at` (unix time).
    pub fn next_poll(&self, at: u64) {
        self.facts().next_poll_at = Some(at);
    }

    /// Something failed.
    pub fn error(&self, e: &crate::error::Error) {
        let mut f = self.facts();
        f.seq += 1;
        f.last_error = Some(ErrorRecord {
            at: unix_now(),
            seq: f.seq,
            message: e.message.clone(),
            note: e.note.clone(),
        });
    }

    /// `release` is delivered (now, or found delivered at start); `keep` releases stay.
    pub fn delivered(&self, release: &str, version: u64, fresh: bool, keep: usize) {
        let mut f = self.facts();
        if fresh {
            f.delivered += 1;
        }
        f.kept.retain(|k| k.version != version);
        f.kept.push(KeptRelease {
            release: release.to_owned(),
            version,
            delivered_at: unix_now(),
        });
        let excess = f.kept.len().saturating_sub(keep.clamp(1, KEPT_LISTED));
        f.kept.drain(..excess);
    }

    /// This agent now.
    pub fn status(&self) -> AgentStatus {
        let f = self.facts();
        let current = f.current.as_ref().map(|rx| rx.borrow().clone());
        let mut totals = f.past;
        if let Some(c) = &current {
            totals.add(c);
        }
        AgentStatus {
            name: self.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            channel: self.channel.clone(),
            origin: self.origin.clone(),
            current,
            kept: f.kept.clone(),
            polls_ok: f.polls_ok,
            polls_failed: f.polls_failed,
            last_poll: f.last_poll.clone(),
            next_poll_at: f.next_poll_at,
            last_error: f.last_error.clone(),
            releases_delivered: f.delivered,
            peer_share: share(totals.bytes_from_peers, totals.bytes_from_origin),
            totals,
            swarm_keys: self.swarm_keys.clone(),
        }
    }

    /// Every agent this one hears of, per release.
    pub fn swarm(&self) -> SwarmView {
        let f = self.facts();
        let current = f.current.as_ref().map(|rx| rx.borrow().clone());
        // A release restarted after a failure is the current one, not an earlier one.
        let snapshots: Vec<(&TransferSnapshot, bool)> = current
            .iter()
            .map(|s| (s, true))
            .chain(
                f.earlier
                    .iter()
                    .rev()
                    .filter(|e| current.as_ref().is_none_or(|c| c.release != e.release))
                    .map(|s| (s, false)),
            )
            .collect();
        swarm::swarm_view(&self.name, &snapshots, self.money.clone())
    }
}

/// Folds the current transfer's last snapshot into the totals and the earlier ones.
fn fold(f: &mut Facts) {
    if let Some(rx) = f.current.take() {
        let last = rx.borrow().clone();
        f.past.add(&last);
        f.earlier.retain(|s| s.release != last.release);
        f.earlier.push(last);
        let excess = f.earlier.len().saturating_sub(EARLIER_KEPT);
        f.earlier.drain(..excess);
    }
}

/// `a / (a + b)`, 0 when both are 0; never above 1.
pub fn share(a: u64, b: u64) -> f64 {
    let total = a as f64 + b as f64;
    if total == 0.0 {
        0.0
    } else {
        (a as f64 / total).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of 10 pieces and 1,000 bytes (the swarm view's tests use it too).
    pub(in crate::status) fn snapshot(
        release: &str,
        held: u32,
        peers: u64,
        origin: u64,
    ) -> TransferSnapshot {
        TransferSnapshot {
            release: release.into(),
            version: 1,
            bytes: 1000,
            pieces_held: held,
            piece_count: 10,
            bytes_from_peers: peers,
            bytes_from_origin: origin,
            ..TransferSnapshot::default()
        }
    }

    #[test]
    fn totals_only_grow_across_transfers() {
        let hub = StatusHub::new(
            "me",
            "stable",
            "https://o",
            Money {
                price_per_gb: 0.0,
                currency: String::new(),
            },
        );
        let (tx, rx) = watch::channel(snapshot("1.0", 10, 300, 700));
        hub.transfer_started(rx);
        assert_eq!(hub.status().totals.bytes_from_origin, 700);
        let (tx2, rx2) = watch::channel(snapshot("2.0", 0, 0, 0));
        hub.transfer_started(rx2);
        drop(tx);
        let st = hub.status();
        assert_eq!(st.totals.bytes_from_origin, 700);
        assert_eq!(st.current.as_ref().unwrap().release, "2.0");
        tx2.send_replace(snapshot("2.0", 5, 100, 0));
        let st = hub.status();
        assert_eq!(
            (st.totals.bytes_from_peers, st.totals.bytes_from_origin),
            (400, 700)
        );
        assert!((st.peer_share - 0.4 / 1.1).abs() < 1e-9);
        // The swarm view shows both releases, the live one first.
        let v = hub.swarm();
        let labels: Vec<&str> = v.releases.iter().map(|r| r.release.as_str()).collect();
        assert_eq!(labels, ["2.0", "1.0"]);
        hub.transfer_stopped();
        assert_eq!(hub.status().totals.bytes_from_peers, 400);
        assert!(hub.status().current.is_none());
    }
}
