//! What a transfer tells the outside: a [`TransferSnapshot`] for the agent's status API,
//! refreshed once a second, and the `Stats` summary each peer that asked for them
//! (capability STATS) gets every [`STATS_EVERY`].
//!
//! Peers' `Stats` are kept for display only and never trusted for anything else: a
//! report whose piece count is not this release's is dropped, byte counts are clamped to
//! what one agent can receive of the release, control characters are taken out of the
//! name, and reports of departed peers are kept for [`REPORT_KEPT_FOR`], at most
//! [`REPORTS_KEPT`] of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_protocol::digest::hex_encode;
use shoal_protocol::swarm::{Counters, Swarm, is_light};
use shoal_protocol::wire::{Capabilities, Message, PeerId, StatsSummary};

use shoal_cli::unix_now;

/// How often the snapshot is refreshed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// How often a peer gets our `Stats` (PROTOCOL.md §6.3 allows one per 10 s).
pub const STATS_EVERY: Duration = Duration::from_secs(10);

/// How long the report of a departed peer stays in the swarm view.
pub const REPORT_KEPT_FOR: Duration = Duration::from_secs(600);

/// Peer reports kept at most, connected and departed together (the oldest go first).
pub const REPORTS_KEPT: usize = 1024;

/// Bans listed at most (the newest).
pub const BANS_KEPT: usize = 64;

/// One release's transfer as the status API shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TransferSnapshot {
    /// The release label the vendor gave it (e.g. `2.4.1`).
    pub release: String,
    /// The manifest's version number.
    pub version: u64,
    /// The release id (hex).
    pub release_id: String,
    /// Bytes in the release.
    pub bytes: u64,
    /// Verified pieces held.
    pub pieces_held: u32,
    /// Pieces in the release.
    pub piece_count: u32,
    /// Every piece is held and stored.
    pub complete: bool,
    /// Verified piece bytes received from peers.
    pub bytes_from_peers: u64,
    /// Verified piece bytes received from the origin.
    pub bytes_from_origin: u64,
    /// Block bytes handed to peer connections for sending.
    pub bytes_uploaded: u64,
    /// Bytes received and thrown away (bad pieces, duplicates).
    pub bytes_wasted: u64,
    /// Origin fetches started (pieces no peer could give in time).
    pub origin_fetches: u64,
    /// Origin fetches that failed or returned a bad piece.
    pub origin_failures: u64,
    /// Agents of the LAN that discovery sees.
    pub lan_members: usize,
    /// Peers joined now.
    pub peers: Vec<PeerSnapshot>,
    /// What peers reported of themselves (`Stats`), connected or recently departed.
    pub reports: Vec<PeerReport>,
    /// Peers banned, newest last (at most [`BANS_KEPT`]).
    pub bans: Vec<BanRecord>,
    /// Peers banned in all.
    pub bans_total: u64,
}

/// One joined peer, as this agent sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerSnapshot {
    /// Its peer id (hex).
    pub peer: String,
    /// The name it reported (empty before its first `Stats`).
    pub name: String,
    /// Its address.
    pub address: Option<IpAddr>,
    /// It says its link is slow (a light id).
    pub slow_link: bool,
    /// Pieces it holds (from its piece map and `Have`s).
    pub pieces_held: u32,
    /// It chokes us.
    pub chokes_us: bool,
    /// We let it download from us.
    pub unchoked: bool,
    /// Pieces we fetch from it now.
    pub fetching: usize,
    /// Blocks of its requests queued or on their way out.
    pub serving: usize,
}

/// A peer's own account of its progress on this release (display only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    /// Its peer id (hex).
    pub peer: String,
    /// The name it chose (may be empty).
    pub name: String,
    /// Verified pieces it holds.
    pub pieces_held: u32,
    /// Pieces in the release.
    pub piece_count: u32,
    /// Bytes it received from peers.
    pub bytes_from_peers: u64,
    /// Bytes it received from the origin.
    pub bytes_from_origin: u64,
    /// Bytes it handed to its peer connections for sending (its own report).
    pub bytes_uploaded: u64,
    /// Seconds since its agent started.
    pub uptime_secs: u64,
    /// Unix time of the report.
    pub heard_at: u64,
    /// It is connected now.
    pub connected: bool,
}

/// A ban and its reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BanRecord {
    /// The banned peer id (hex).
    pub peer: String,
    /// The addresses banned with it.
    pub addresses: Vec<IpAddr>,
    /// Why.
    pub reason: String,
    /// Unix time of the ban.
    pub at: u64,
}

/// What the release looks like from outside the core.
#[derive(Debug, Clone)]
pub struct ReleaseFacts {
    /// Label.
    pub release: String,
    /// Version number.
    pub version: u64,
    /// Id (hex).
    pub release_id: String,
    /// Bytes in it.
    pub bytes: u64,
    /// Pieces in it.
    pub piece_count: u32,
}

/// Our own `Stats` fields that do not come from the core.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Display name sent to peers (cut to the wire's limit at a character boundary).
    pub name: String,
    /// When the agent started (for the uptime).
    pub started: Instant,
}

struct Heard {
    report: PeerReport,
    at: Instant,
    /// Where it came from: one report per address counts (loopback exempt, as every
    /// agent of one machine shares it).
    addr: Option<IpAddr>,
}

/// Reports from one peer closer together than this are ignored (PROTOCOL.md §6.7 allows
/// one per 10 s).
pub const MIN_REPORT_GAP: Duration = Duration::from_secs(5);

/// The node's reporting state (see the module docs).
pub(super) struct Reporter {
    facts: ReleaseFacts,
    me: Identity,
    /// Peers that accept `Stats`, and when they last got ours.
    wants_stats: HashMap<PeerId, Option<Instant>>,
    /// Peers joined now (reports from others are ignored).
    joined: std::collections::HashSet<PeerId>,
    heard: HashMap<PeerId, Heard>,
    bans: Vec<BanRecord>,
    bans_total: u64,
    origin_fetches: u64,
    origin_failures: u64,
    last_snapshot: Option<Instant>,
}

impl Reporter {
    pub(super) fn new(facts: ReleaseFacts, me: Identity) -> Self {
        let name = cut_name(&clean_name(&me.name));
        Reporter {
            facts,
            me: Identity { name, ..me },
            wants_stats: HashMap::new(),
            joined: std::collections::HashSet::new(),
            heard: HashMap::new(),
            bans: Vec::new(),
            bans_total: 0,
            origin_fetches: 0,
            origin_failures: 0,
            last_snapshot: None,
        }
    }

    /// A peer joined; it gets our `Stats` on the next tick if it accepts them.
    pub(super) fn on_joined(&mut self, peer: PeerId, capabilities: Capabilities) {
        self.joined.insert(peer);
        if capabilities.contains(Capabilities::STATS) {
            self.wants_stats.entry(peer).or_insert(None);
        }
    }

    /// A peer's connections all ended: its report stays for a while, marked departed.
    pub(super) fn on_left(&mut self, peer: PeerId) {
        self.joined.remove(&peer);
        self.wants_stats.remove(&peer);
        if let Some(h) = self.heard.get_mut(&peer) {
            h.report.connected = false;
        }
    }

    /// A peer, connected from `addr`, reported its progress.
    pub(super) fn on_stats(&mut self, peer: PeerId, addr: Option<IpAddr>, s: StatsSummary) {
        if s.piece_count != self.facts.piece_count || !self.joined.contains(&peer) {
            return; // not about this release, or from a peer already gone
        }
        let now = Instant::now();
        // One address is one host (an IPv4-mapped address is its IPv4 one), except
        // loopback, which every agent of one machine dialling another shares.
        let addr = addr.map(|a| a.to_canonical());
        let host = addr.filter(|a| !a.is_loopback());
        let recent = |p: &PeerId, h: &Heard| {
            (*p == peer || (host.is_some() && h.addr == host))
                && now.duration_since(h.at) < MIN_REPORT_GAP
        };
        if self.heard.iter().any(|(p, h)| recent(p, h)) {
            return;
        }
        // A host that reconnects under new ids must not multiply its claims.
        if let Some(a) = host {
            self.heard.retain(|p, h| *p == peer || h.addr != Some(a));
        }
        let cap = self.facts.bytes;
        let report = PeerReport {
            peer: hex_encode(&peer.0),
            name: clean_name(&s.name),
            pieces_held: s.pieces_held,
            piece_count: s.piece_count,
            bytes_from_peers: s.bytes_from_peers.min(cap),
            bytes_from_origin: s.bytes_from_origin.min(cap),
            bytes_uploaded: s.bytes_uploaded,
            uptime_secs: s.uptime_secs,
            heard_at: unix_now(),
            connected: true,
        };
        if !self.heard.contains_key(&peer) && self.heard.len() >= REPORTS_KEPT {
            self.expire(Instant::now());
            if self.heard.len() >= REPORTS_KEPT {
                let oldest = self.heard.iter().min_by_key(|(_, h)| h.at).map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.heard.remove(&p);
                }
            }
        }
        self.heard.insert(
            peer,
            Heard {
                report,
                at: now,
                addr,
            },
        );
    }

    /// An origin fetch started.
    pub(super) fn on_origin_fetch(&mut self) {
        self.origin_fetches += 1;
    }

    /// An origin fetch failed.
    pub(super) fn on_origin_failure(&mut self) {
        self.origin_failures += 1;
    }

    /// The core banned `peer` for `reason`.
    pub(super) fn on_ban(&mut self, peer: PeerId, addresses: Vec<IpAddr>, reason: String) {
        self.bans_total += 1;
        if self.bans.len() >= BANS_KEPT {
            self.bans.remove(0);
        }
        self.bans.push(BanRecord {
            peer: hex_encode(&peer.0),
            addresses,
            reason,
            at: unix_now(),
        });
    }

    /// Makes the next tick due at once (the transfer completed: show it now).
    pub(super) fn due_now(&mut self) {
        self.last_snapshot = None;
    }

    /// When the next tick is due.
    pub(super) fn next_tick(&self) -> Instant {
        self.last_snapshot
            .map_or_else(Instant::now, |t| t + SNAPSHOT_EVERY)
    }

    /// Our `Stats` for the peers whose turn it is, and the snapshot when it is due.
    pub(super) fn tick(
        &mut self,
        swarm: &Swarm,
        addresses: impl Fn(&PeerId) -> Option<IpAddr>,
        complete: bool,
    ) -> (Vec<(PeerId, Message)>, Option<TransferSnapshot>) {
        let now = Instant::now();
        let (have, total) = swarm.progress();
        let c = swarm.counters();
        let mut out = Vec::new();
        let summary = StatsSummary {
            name: self.me.name.clone(),
            uptime_secs: self.me.started.elapsed().as_secs(),
            pieces_held: have,
            piece_count: total,
            bytes_from_peers: c.from_peers,
            bytes_from_origin: c.from_origin,
            bytes_uploaded: c.uploaded,
        };
        for (peer, last) in &mut self.wants_stats {
            if last.is_none_or(|t| now.duration_since(t) >= STATS_EVERY) {
                *last = Some(now);
                out.push((*peer, Message::Stats(summary.clone())));
            }
        }
        if self
            .last_snapshot
            .is_some_and(|t| now.duration_since(t) < SNAPSHOT_EVERY)
        {
            return (out, None);
        }
        self.last_snapshot = Some(now);
        self.expire(now);
        (out, Some(self.snapshot(swarm, &addresses, c, complete)))
    }

    fn expire(&mut self, now: Instant) {
        self.heard
            .retain(|_, h| h.report.connected || now.duration_since(h.at) < REPORT_KEPT_FOR);
    }

    fn snapshot(
        &self,
        swarm: &Swarm,
        addresses: &impl Fn(&PeerId) -> Option<IpAddr>,
        c: Counters,
        complete: bool,
    ) -> TransferSnapshot {
        let (have, total) = swarm.progress();
        let mut peers: Vec<PeerSnapshot> = swarm
            .peers()
            .filter_map(|p| {
                let s = swarm.peer_status(&p)?;
                Some(PeerSnapshot {
                    peer: hex_encode(&p.0),
                    name: self
                        .heard
                        .get(&p)
                        .map(|h| h.report.name.clone())
                        .unwrap_or_default(),
                    address: addresses(&p),
                    slow_link: is_light(&p),
                    pieces_held: s.has,
                    chokes_us: s.chokes_us,
                    unchoked: s.unchoked,
                    fetching: s.fetching,
                    serving: s.serving,
                })
            })
            .collect();
        peers.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut reports: Vec<PeerReport> = self
            .heard
            .iter()
            .map(|(p, h)| PeerReport {
                connected: self.joined.contains(p),
                ..h.report.clone()
            })
            .collect();
        reports.sort_by(|a, b| a.peer.cmp(&b.peer));
        TransferSnapshot {
            release: self.facts.release.clone(),
            version: self.facts.version,
            release_id: self.facts.release_id.clone(),
            bytes: self.facts.bytes,
            pieces_held: have,
            piece_count: total,
            complete,
            bytes_from_peers: c.from_peers,
            bytes_from_origin: c.from_origin,
            bytes_uploaded: c.uploaded,
            bytes_wasted: c.wasted,
            origin_fetches: self.origin_fetches,
            origin_failures: self.origin_failures,
            lan_members: swarm.members(),
            peers,
            reports,
            bans: self.bans.clone(),
            bans_total: self.bans_total,
        }
    }
}

/// `name` without control characters and invisible formatting (bidirectional overrides,
/// zero-width characters): a terminal, a log or a reader must not be steered by a peer.
pub fn clean_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_control() && !is_format(*c))
        .collect()
}

/// Characters that are invisible or change how text around them looks: Unicode format
/// characters (category Cf), line and paragraph separators, and blank fillers a name
/// could hide behind.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// `name` cut to the wire's limit at a character boundary.
fn cut_name(name: &str) -> String {
    let max = shoal_protocol::limits::MAX_PEER_NAME_LEN;
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

impl Identity {
    /// This machine's host name, starting now.
    pub fn this_host() -> Identity {
        Identity {
            name: host_name(),
            started: Instant::now(),
        }
    }
}

/// The machine's host name, or empty when it cannot be read.
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within
        // it or fails.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r != 0 {
            return String::new();
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter() -> Reporter {
        Reporter::new(
            ReleaseFacts {
                release: "1.0".into(),
                version: 1,
                release_id: "00".into(),
                bytes: 1000,
                piece_count: 10,
            },
            Identity {
                name: "é".repeat(40), // 80 bytes: cut to 64 at a character boundary
                started: Instant::now(),
            },
        )
    }

    fn summary(name: &str, pieces: u32, count: u32, from_peers: u64) -> StatsSummary {
        StatsSummary {
            name: name.into(),
            uptime_secs: 1,
            pieces_held: pieces,
            piece_count: count,
            bytes_from_peers: from_peers,
            bytes_from_origin: u64::MAX,
            bytes_uploaded: 7,
        }
    }

    #[test]
    fn reports_are_checked_clamped_cleaned_and_bounded() {
        let mut r = reporter();
        assert_eq!(r.me.name.len(), 64);
        let p = PeerId([1; 16]);
        r.on_stats(p, None, summary("x", 1, 10, 5)); // not joined
        assert!(r.heard.is_empty());
        r.on_joined(p, Capabilities::STATS);
        r.on_stats(p, None, summary("x", 1, 11, 5)); // another release's piece count
        assert!(r.heard.is_empty());
        r.on_stats(
            p,
            None,
            summary("pc\u{1b}[2J\n\u{202e}na\u{e0041}\u{3164}me", 3, 10, 5_000),
        );
        let h = &r.heard[&p].report;
        assert_eq!(h.name, "pc[2Jname");
        assert_eq!((h.bytes_from_peers, h.bytes_from_origin), (1000, 1000));
        // A second report within the gap is ignored.
        r.on_stats(p, None, summary("again", 4, 10, 0));
        assert_eq!(r.heard[&p].report.name, "pc[2Jname");
        r.on_left(p);
        r.on_stats(p, None, summary("late", 9, 10, 0)); // after it left: ignored
        assert_eq!(r.heard[&p].report.pieces_held, 3);
        for i in 0..(REPORTS_KEPT as u32 + 50) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[15] = 9;
            r.on_joined(PeerId(id), Capabilities::empty());
            r.on_stats(PeerId(id), None, summary("n", 0, 10, 0));
        }
        assert_eq!(r.heard.len(), REPORTS_KEPT);
        for i in 0..(BANS_KEPT + 5) {
            r.on_ban(p, Vec::new(), format!("ban {i}"));
        }
        assert_eq!(r.bans.len(), BANS_KEPT);
        assert_eq!(r.bans_total, BANS_KEPT as u64 + 5);
        assert_eq!(
            r.bans.last().unwrap().reason,
            format!("ban {}", BANS_KEPT + 4)
        );
    }

    #[test]
    fn one_address_counts_once_however_many_ids_it_uses() {
        let mut r = reporter();
        let lan: IpAddr = "198.18.0.9".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.9".parse().unwrap();
        for i in 0..5u8 {
            let (a, b) = (PeerId([i; 16]), PeerId([100 + i; 16]));
            r.on_joined(a, Capabilities::STATS);
            r.on_joined(b, Capabilities::STATS);
            let from = if i % 2 == 0 { lan } else { mapped };
            r.on_stats(a, Some(from), summary("liar", 10, 10, 1000));
            r.on_stats(b, Some(lo), summary("local", 10, 10, 1000));
        }
        let from_lan = r.heard.values().filter(|h| h.addr == Some(lan)).count();
        let from_lo = r.heard.values().filter(|h| h.addr == Some(lo)).count();
        assert_eq!((from_lan, from_lo), (1, 5));
        // Its first report stands: the others came within the gap, under other ids.
        assert!(r.heard.contains_key(&PeerId([0; 16])));
    }
}
