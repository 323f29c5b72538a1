//! Scenario shapes shared by the simulator's tests and benchmarks.

use std::time::Duration;

use shoal_protocol::swarm::{PeerSetConfig, SwarmConfig};

use super::scenario::{NodeSpec, Report, Scenario};

/// One megabit per second.
pub const MBIT: f64 = 1_000_000.0;

/// An honest agent with these link rates (Mbit/s), present from the start.
pub fn node(up: f64, down: f64) -> NodeSpec {
    NodeSpec {
        up_bps: up * MBIT,
        down_bps: down * MBIT,
        join_at: Duration::ZERO,
        crash_at: None,
        lying: false,
        seed: false,
        stingy: false,
        flapping: false,
        light: false,
    }
}

/// The lab's default shape: origin at 20 Mbit/s, N agents at 200 Mbit/s.
pub fn lan(n: usize, seed: u64) -> Scenario {
    Scenario {
        seed,
        piece_len: 256 * 1024,
        pieces: 48,
        nodes: (0..n).map(|_| node(200.0, 200.0)).collect(),
        origin_bps: 20.0 * MBIT,
        origin_dies_at: None,
        latency: Duration::from_micros(300),
        loss: 0.0,
        rto: Duration::from_millis(200),
        config: SwarmConfig {
            block_len: 64 * 1024,
            origin_grace: Duration::from_millis(500),
            origin_stall: Duration::from_secs(5),
            ..SwarmConfig::default()
        },
        mesh: PeerSetConfig::default(),
        forget_after: Duration::from_secs(120),
        starve_bound: Duration::from_secs(15),
        ghosts: 0,
        check_every: 1,
        time_limit: Duration::from_secs(600),
    }
}

/// Prints a run's figures.
pub fn show(name: &str, r: &Report) {
    eprintln!(
        "{name}: origin {:.2} F, completion {:.2} s = {:.2} x bound {:.2} s, {} liar bans, {} steps, \
         degree {}-{}, longest starved {:.1} s",
        r.origin_bytes as f64 / r.release_bytes as f64,
        r.completion.as_secs_f64(),
        r.completion.as_secs_f64() / r.bound.as_secs_f64(),
        r.bound.as_secs_f64(),
        r.bans_of_liars,
        r.steps,
        r.degree.0,
        r.degree.1,
        r.longest_starved.as_secs_f64()
    );
}
