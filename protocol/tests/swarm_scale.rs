//! Large-LAN and mixed-speed benchmarks in the deterministic simulator: figures, not
//! timed tests. Each scenario is `#[ignore]`d (minutes in a debug build); run them with
//! `bench/swarm-sim.sh`, which builds in release mode. The invariants (every node ends
//! with correct bytes, no node starves) still fail a run; the figures are printed.
//!
//! Overrides for experiments: `SHOAL_SIM_SLOTS` (upload slots), `SHOAL_SIM_FETCHERS`
//! (origin fetchers), `SHOAL_SIM_ROTATE_MS` (slot rotation), `SHOAL_SIM_INFLIGHT` (uploads out per peer), `SHOAL_SIM_ORIGIN_PARALLEL`, `SHOAL_SIM_DIAL` (links dialled per agent).

mod sim;

use std::time::{Duration, Instant};

use sim::{MBIT, Scenario, lan, run, show};

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn tuned(mut sc: Scenario) -> Scenario {
    sc.check_every = 97;
    if let Some(v) = env("SHOAL_SIM_SLOTS") {
        sc.config.upload_slots = v;
    }
    if let Some(v) = env("SHOAL_SIM_FETCHERS") {
        sc.config.origin_fetchers = v;
    }
    if let Some(v) = env("SHOAL_SIM_ROTATE_MS") {
        sc.config.rotate_every = Duration::from_millis(v as u64);
    }
    if let Some(v) = env("SHOAL_SIM_ORIGIN_PARALLEL") {
        sc.config.origin_parallel = v;
    }
    if let Some(v) = env("SHOAL_SIM_INFLIGHT") {
        sc.config.upload_inflight = v;
    }
    if let Some(v) = env("SHOAL_SIM_DIAL") {
        sc.mesh.dial = v;
    }
    sc
}

fn bench(name: &str, sc: Scenario) {
    let sc = tuned(sc);
    let began = Instant::now();
    let r = run(&sc).unwrap_or_else(|e| panic!("{name}: {e}"));
    show(name, &r);
    eprintln!(
        "{name}: simulated in {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

/// One LAN of `n` agents in the lab's default shape (origin 20 Mbit/s, agents 200).
fn one_lan(n: usize, pieces: u32) {
    let mut sc = lan(n, 0x5ca1_e000 + n as u64);
    sc.pieces = pieces;
    sc.time_limit = Duration::from_secs(300);
    sc.check_every = 97;
    bench(&format!("{n} agents, {pieces} pieces"), sc);
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn lan_grid() {
    for n in [4, 8, 16, 24, 32, 40] {
        one_lan(n, 48);
    }
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn lan_64() {
    one_lan(64, 48);
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn lan_100() {
    one_lan(100, 64);
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn lan_250() {
    one_lan(250, 64);
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn lan_1000() {
    one_lan(1000, 64);
}

/// `n` agents of which `slow` have 20 Mbit/s both ways, the rest 200; `light`: the slow
/// ones say so (their ids are light, so they are not elected origin fetchers). Five
/// seeds each: one run's figure moves by ±0.1 × the bound with the seed.
fn mixed(n: usize, slow: usize, light: bool) {
    let name = format!(
        "{n} agents, {slow} slow{}",
        if light { " (light)" } else { "" }
    );
    let mut ratios = Vec::new();
    let mut fast_ratios = Vec::new();
    let mut most_received: f64 = 0.0;
    for k in 0..5u64 {
        let mut sc = lan(n, 0x3173_d000 + (n * 100 + slow) as u64 + k * 7919);
        for node in sc.nodes.iter_mut().take(slow) {
            node.up_bps = 20.0 * MBIT;
            node.down_bps = 20.0 * MBIT;
            node.light = light;
        }
        let sc = tuned(sc);
        let r = run(&sc).unwrap_or_else(|e| panic!("{name}: {e}"));
        show(&name, &r);
        let bound = r.bound.as_secs_f64();
        let fast = r.finish[slow..].iter().flatten().max().copied();
        ratios.push(r.completion.as_secs_f64() / bound);
        fast_ratios.push(fast.unwrap_or_default().as_secs_f64() / bound);
        let most = r.received.iter().max().copied().unwrap_or(0);
        most_received = most_received.max(most as f64 / r.release_bytes as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "{name}: mean {:.2} x bound, worst {:.2} x; fast agents done by {:.2} x (mean); \
         most blocks received by one agent {most_received:.2} F",
        mean(&ratios),
        max(&ratios),
        mean(&fast_ratios)
    );
}

#[test]
#[ignore = "benchmark: bench/swarm-sim.sh"]
fn mixed_speeds() {
    for light in [true, false] {
        mixed(16, 8, light);
        mixed(24, 12, light);
        mixed(32, 8, light);
    }
}
