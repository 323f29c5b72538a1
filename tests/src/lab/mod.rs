//! The swarm lab: one LAN topology in network namespaces, one payload, and the systems a
//! vendor could use to deliver it, run one after another and measured the same way.
//!
//! Topology ([`Scenario`]): host 0 is the origin, its link shaped to `origin_mbit` (the
//! vendor's uplink u_s); hosts `1..=agents` are endpoints on the same bridge, each link
//! shaped to `host_mbit` (u_i) both ways. Addresses are in 198.18.0.0/15
//! ([`crate::netns::Lan`]). The origin is always a real `shoal-publisher serve` over
//! HTTPS, started fresh for every run, so its byte counters belong to that run.
//!
//! Systems ([`System`]): Shoal's agent with its defaults (mDNS on the host's interface,
//! no peer list); plain HTTPS downloads with curl (the floor: every byte from the
//! origin); aria2 as BitTorrent with local peer discovery and the origin as a web seed
//! (BEP 19), at a chosen piece size.
//!
//! Per run ([`Record`]): every agent's finish time (Shoal: its verified file appears;
//! curl: the process exits successfully; aria2: its "download complete" hook runs, which
//! it calls after checking every piece), bytes the origin's HTTP server sent, bytes on
//! every link, CPU seconds and peak memory of every agent process (from `wait4`), and the
//! Kumar–Ross lower bound for the topology. After the run every copy is compared with
//! the published file.
//!
//! Needs root (namespaces), `curl` and `aria2c`.

mod files;
mod procs;
pub mod report;
mod session;
mod torrent;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

pub use session::Lab;

/// The two binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `shoal-agent`.
    pub agent: PathBuf,
    /// `shoal-publisher`.
    pub publisher: PathBuf,
}

impl Bins {
    /// The binaries in `dir` (a Cargo profile directory such as `target/release`).
    pub fn in_dir(dir: &Path) -> Result<Bins, String> {
        let bins = Bins {
            agent: dir.join("shoal-agent"),
            publisher: dir.join("shoal-publisher"),
        };
        for b in [&bins.agent, &bins.publisher] {
            if !b.is_file() {
                return Err(format!(
                    "{} not found: build it first (cargo build --release -p shoal-agent -p shoal-publisher)",
                    b.display()
                ));
            }
        }
        Ok(bins)
    }

    /// For a test binary in `target/<profile>/deps/`: builds both binaries in that
    /// profile (a no-op when `cargo nextest run --workspace` already did) and returns
    /// them. Building here, rather than trusting whatever sits in the directory, means a
    /// test never measures a stale binary.
    pub fn build_for_test() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("test binary is not in target/<profile>/deps")?;
        let target = profile_dir.parent().ok_or("no target directory")?;
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(p) => p.to_owned(),
            None => return Err("no profile directory".into()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "shoal-agent",
                "-p",
                "shoal-publisher",
            ])
            .args(["--bins", "--profile", &profile, "--target-dir"])
            .arg(target)
            .output()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Bins::in_dir(profile_dir)
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Shoal's agents, default settings, mDNS discovery.
    Shoal,
    /// The same in a private swarm (every agent holds one swarm key: Noise, encrypted
    /// records). Not in the default grid; ask for `shoal-private`.
    ShoalPrivate,
    /// Every endpoint downloads from the origin with curl.
    Https,
    /// aria2 BitTorrent, local peer discovery, origin as web seed, this piece size.
    Aria2 {
        /// Piece size in KiB.
        piece_kib: u32,
    },
}

impl System {
    /// Every system, in the order the lab runs them.
    pub const ALL: [System; 4] = [
        System::Shoal,
        System::Aria2 { piece_kib: 256 },
        System::Aria2 { piece_kib: 1024 },
        System::Https,
    ];

    /// Short name used in records and on the command line.
    pub fn name(&self) -> String {
        match self {
            System::Shoal => "shoal".into(),
            System::ShoalPrivate => "shoal-private".into(),
            System::Https => "https".into(),
            System::Aria2 { piece_kib } if piece_kib % 1024 == 0 => {
                format!("aria2-{}m", piece_kib / 1024)
            }
            System::Aria2 { piece_kib } => format!("aria2-{piece_kib}k"),
        }
    }

    /// Parses a [`System::name`].
    pub fn parse(s: &str) -> Result<System, String> {
        System::ALL
            .into_iter()
            .chain([System::ShoalPrivate])
            .find(|sys| sys.name() == s)
            .or_else(|| {
                let kib = s.strip_prefix("aria2-")?;
                let (n, unit) = kib.split_at(kib.len().checked_sub(1)?);
                let n: u32 = n.parse().ok()?;
                let piece_kib = match unit {
                    "k" => n,
                    "m" => n * 1024,
                    _ => return None,
                };
                (piece_kib >= 16).then_some(System::Aria2 { piece_kib })
            })
            .ok_or_else(|| {
                format!("unknown system {s:?}: use shoal, shoal-private, https, aria2-256k, aria2-1m (any aria2-<N>k|m)")
            })
    }
}

/// Agents that start late.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LateJoin {
    /// How many of the agents (the last ones) start late.
    pub agents: usize,
    /// Seconds after the others.
    pub after_s: f64,
}

/// Agents on slower links than the rest (an office's Wi-Fi laptops beside its wired
/// desktops).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SlowHosts {
    /// How many of the agents (the first ones) are slow.
    pub agents: usize,
    /// Their link, Mbit/s, both directions.
    pub mbit: u32,
    /// Shoal agents among them say so (`--link slow`); otherwise they look like the
    /// others (`--link auto` on a veth, which reads as wired and fast).
    pub marked: bool,
}

/// One topology and payload.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Endpoints.
    pub agents: usize,
    /// Payload bytes (one file).
    pub size: u64,
    /// The origin's uplink, Mbit/s.
    pub origin_mbit: u32,
    /// Each endpoint's link, Mbit/s, both directions.
    pub host_mbit: u32,
    /// Some agents start late.
    pub late: Option<LateJoin>,
    /// Some agents have slower links.
    pub slow: Option<SlowHosts>,
    /// Measure an update: every agent holds a release, and the measured one follows it
    /// with this percentage of its bytes overwritten (in 8 places).
    pub delta_pct: Option<f64>,
    /// Every host (origin and agents) drops this percentage of the packets it sends
    /// (nftables, random per packet; the kernel here has no netem for latency).
    pub loss_pct: Option<f64>,
    /// Seed of the payload bytes.
    pub seed: u64,
}

impl Scenario {
    /// The Kumar–Ross lower bound on the time until every agent holds the file:
    /// max(F/u_s, F/d_min, N·F/(u_s + Σu_i)), with every rate in bytes per second. For
    /// an update, F is the bytes that changed: no system can move less than those.
    pub fn bound_s(&self) -> f64 {
        let bytes = self.size as f64 * self.delta_pct.map_or(1.0, |p| p / 100.0);
        match self.slow.filter(|s| s.agents > 0) {
            None => kumar_ross_bound(bytes, self.origin_mbit, self.host_mbit, self.agents),
            Some(s) => {
                let slow = s.agents.min(self.agents);
                let links: Vec<u32> = (0..self.agents)
                    .map(|i| if i < slow { s.mbit } else { self.host_mbit })
                    .collect();
                kumar_ross_bound_mixed(bytes, self.origin_mbit, &links)
            }
        }
    }

    /// Agent `i`'s link (0-based), Mbit/s.
    pub fn host_mbit(&self, i: usize) -> u32 {
        match self.slow {
            Some(s) if i < s.agents => s.mbit,
            _ => self.host_mbit,
        }
    }
}

/// The Kumar–Ross bound for `agents` peers of `host_mbit` (up and down) behind a source
/// of `origin_mbit`, for `bytes`.
pub fn kumar_ross_bound(bytes: f64, origin_mbit: u32, host_mbit: u32, agents: usize) -> f64 {
    let bps = |mbit: u32| mbit as f64 * 1e6 / 8.0;
    let (us, ui) = (bps(origin_mbit), bps(host_mbit));
    let n = agents as f64;
    (bytes / us).max(bytes / ui).max(n * bytes / (us + n * ui))
}

/// The Kumar–Ross bound for peers with the given links (Mbit/s, up and down alike)
/// behind a source of `origin_mbit`, for `bytes`.
pub fn kumar_ross_bound_mixed(bytes: f64, origin_mbit: u32, links: &[u32]) -> f64 {
    let bps = |mbit: u32| mbit as f64 * 1e6 / 8.0;
    let us = bps(origin_mbit);
    let d_min = links.iter().map(|m| bps(*m)).fold(f64::INFINITY, f64::min);
    let sum_u: f64 = links.iter().map(|m| bps(*m)).sum();
    let n = links.len() as f64;
    (bytes / us)
        .max(bytes / d_min)
        .max(n * bytes / (us + sum_u))
}

/// What one run of one system measured.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// [`System::name`].
    pub system: String,
    /// Endpoints.
    pub agents: usize,
    /// Payload bytes.
    pub size_bytes: u64,
    /// u_s, Mbit/s.
    pub origin_mbit: u32,
    /// u_i, Mbit/s.
    pub host_mbit: u32,
    /// Late joiners, if any.
    pub late: Option<LateJoin>,
    /// Agents on slower links, if any.
    pub slow: Option<SlowHosts>,
    /// Update with this percentage changed, if any.
    pub delta_pct: Option<f64>,
    /// Packet loss on every host's sends, percent, if any.
    pub loss_pct: Option<f64>,
    /// The Kumar–Ross bound for the topology, seconds (for an update: of the changed
    /// bytes).
    pub bound_s: f64,
    /// Until the last agent held a verified copy, seconds from the run's start.
    pub time_s: f64,
    /// `time_s / bound_s`.
    pub bound_ratio: f64,
    /// Every agent's finish time, seconds from the run's start, in agent order.
    pub finish_s: Vec<f64>,
    /// Response body bytes the origin's server sent (its own counters).
    pub origin_bytes: u64,
    /// `origin_bytes / size_bytes`: copies of the file the vendor paid for.
    pub origin_copies: f64,
    /// Bytes the origin's link carried outwards (headers, TLS and TCP included).
    pub origin_link_bytes: u64,
    /// Mean bytes each agent's link received, in copies of the file.
    pub agent_rx_copies: f64,
    /// CPU seconds of all agent processes together.
    pub agent_cpu_s: f64,
    /// CPU seconds of the origin's server.
    pub origin_cpu_s: f64,
    /// Largest peak RSS among the agent processes, MiB.
    pub agent_max_rss_mib: f64,
    /// Every copy matched the published bytes.
    pub verified: bool,
}
