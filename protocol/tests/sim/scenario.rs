//! What the simulator takes (a scenario of agents, links and origin) and what it
//! reports.

use std::time::Duration;

use shoal_protocol::swarm::{PeerSetConfig, SwarmConfig};

use super::{Node, Sim};

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Uplink, bits per second.
    pub up_bps: f64,
    /// Downlink, bits per second.
    pub down_bps: f64,
    /// When it starts.
    pub join_at: Duration,
    /// When it crashes (and never returns), if ever.
    pub crash_at: Option<Duration>,
    /// Serves corrupted bytes.
    pub lying: bool,
    /// Holds the whole release from the start.
    pub seed: bool,
    /// Never unchokes anyone (its `Unchoke`s are dropped on the wire): it claims
    /// pieces and gives none.
    pub stingy: bool,
    /// Answers every request with `Choke` then `Unchoke` instead of the block.
    pub flapping: bool,
    /// Says it is on a slow link (its id is light: it loses the fetcher election to
    /// every agent that is not).
    pub light: bool,
}

/// A scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// RNG seed for the simulator and every core.
    pub seed: u64,
    /// Piece lengths of the release.
    pub piece_len: u32,
    /// Number of pieces.
    pub pieces: u32,
    /// Agents.
    pub nodes: Vec<NodeSpec>,
    /// Origin uplink, bits per second.
    pub origin_bps: f64,
    /// The origin stops answering at this time.
    pub origin_dies_at: Option<Duration>,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Probability that a message needs a retransmission (adds `rto`).
    pub loss: f64,
    /// Retransmission delay for a lost message.
    pub rto: Duration,
    /// Core configuration.
    pub config: SwarmConfig,
    /// The overlay rule.
    pub mesh: PeerSetConfig,
    /// How long after a crash nodes that were not connected to it stop counting it.
    pub forget_after: Duration,
    /// Longest a node may go without piece data while a neighbour holds a piece it lacks.
    pub starve_bound: Duration,
    /// Names discovery reports that are no agent (crashed without a goodbye, or made up
    /// by a LAN host): every node counts them as members. Each is the best of 1,000
    /// random ids by fetcher score, as an attacker who grinds ids would pick, so they
    /// win the fetcher election.
    pub ghosts: usize,
    /// Check every node's invariants after every `check_every`-th step it takes part in
    /// (1: always; benchmarks sample to stay fast).
    pub check_every: u64,
    /// Give up after this much virtual time.
    pub time_limit: Duration,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// Release size in bytes.
    pub release_bytes: u64,
    /// Bytes the origin sent (full responses).
    pub origin_bytes: u64,
    /// Per node: finish time (None: crashed, liar, or never finished).
    pub finish: Vec<Option<Duration>>,
    /// When the last honest, surviving node finished.
    pub completion: Duration,
    /// The Kumar–Ross lower bound for the honest nodes present from the start.
    pub bound: Duration,
    /// How many (node, liar) bans happened.
    pub bans_of_liars: usize,
    /// Events processed.
    pub steps: u64,
    /// The longest a node went without piece data while a neighbour held a piece it
    /// lacked.
    pub longest_starved: Duration,
    /// Connections per node at the end: fewest and most.
    pub degree: (usize, usize),
    /// Per node: `Request`s delivered to it.
    #[allow(dead_code, reason = "read by the swarm_sim tests only")]
    pub requests_received: Vec<u64>,
    /// Per node: piece data peers delivered to it, bytes (what it needed, plus blocks
    /// it threw away: duplicates, and blocks of pieces it gave up).
    pub received: Vec<u64>,
}

impl Sim<'_> {
    /// The figures of a finished run.
    pub(super) fn report(&self) -> Report {
        let f = self.sc.piece_len as u64 * self.sc.pieces as u64;
        let fbits = f as f64 * 8.0;
        let present: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| !n.spec.lying && !n.spec.seed && n.spec.join_at == Duration::ZERO)
            .collect();
        let n = present.len() as f64;
        let d_min = present
            .iter()
            .map(|n| n.spec.down_bps)
            .fold(f64::INFINITY, f64::min);
        let sum_u: f64 = present.iter().map(|n| n.spec.up_bps).sum();
        let bound = (fbits / self.sc.origin_bps)
            .max(fbits / d_min)
            .max(n * fbits / (self.sc.origin_bps + sum_u));
        let finish: Vec<Option<Duration>> = self.nodes.iter().map(|n| n.finished).collect();
        let completion = self
            .nodes
            .iter()
            .filter(|n| !n.spec.lying && n.spec.crash_at.is_none())
            .filter_map(|n| n.finished)
            .max()
            .unwrap_or_default();
        Report {
            release_bytes: f,
            origin_bytes: self.origin_bytes,
            finish,
            completion,
            bound: Duration::from_secs_f64(bound),
            bans_of_liars: self.bans_of_liars,
            steps: self.steps,
            longest_starved: self.longest_starved,
            received: self.nodes.iter().map(|n| n.received).collect(),
            requests_received: self.nodes.iter().map(|n| n.requests).collect(),
            degree: (
                self.nodes
                    .iter()
                    .filter(|n| n.alive && !n.spec.lying)
                    .map(|n| n.links.len())
                    .min()
                    .unwrap_or(0),
                self.nodes.iter().map(|n| n.links.len()).max().unwrap_or(0),
            ),
        }
    }
}
