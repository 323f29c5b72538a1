//! `shoal-lab`: runs the swarm lab (see `shoal_tests::lab` and docs/BENCHMARKS.md).
//!
//! Needs root (network namespaces), `curl` and `aria2c`, and release builds of
//! `shoal-agent` and `shoal-publisher` (by default next to this binary).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_tests::lab::{Bins, Lab, LateJoin, Record, Scenario, SlowHosts, System, report};

/// Shoal against plain HTTPS and BitTorrent on one namespace LAN, against the bound.
#[derive(Parser)]
#[command(name = "shoal-lab", version)]
struct Args {
    /// Numbers of agents to run, one LAN each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    agents: Vec<usize>,
    /// Payload size in MiB.
    #[arg(long, default_value_t = 32)]
    size_mib: u64,
    /// The origin's uplink (u_s), Mbit/s.
    #[arg(long, default_value_t = 20)]
    origin_mbit: u32,
    /// Each agent's link (u_i), Mbit/s.
    #[arg(long, default_value_t = 200)]
    host_mbit: u32,
    /// Systems to run, in order (comma-separated): shoal, shoal-private, https, aria2-256k,
    /// aria2-1m.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shoal,aria2-256k,aria2-1m,https"
    )]
    systems: Vec<String>,
    /// Late joiners: COUNT@SECONDS starts the last COUNT agents that much later.
    #[arg(long, value_parser = parse_late)]
    late: Option<LateJoin>,
    /// Slow agents: COUNT@MBIT shapes the first COUNT agents' links to MBIT both ways;
    /// Shoal's among them run with `--link slow` (see --slow-unmarked).
    #[arg(long, value_parser = parse_slow)]
    slow: Option<SlowHosts>,
    /// With --slow: Shoal's slow agents do not say so (`--link auto`).
    #[arg(long)]
    slow_unmarked: bool,
    /// Measure an update: agents hold a release, the measured one changes this
    /// percentage of its bytes.
    #[arg(long)]
    delta: Option<f64>,
    /// Packet loss, percent, on every host's sends (needs nftables).
    #[arg(long)]
    loss: Option<f64>,
    /// Added latency, ms. Refused on this machine: its kernel has no netem (see
    /// docs/BENCHMARKS.md; latency is covered by the swarm simulator).
    #[arg(long)]
    latency: Option<f64>,
    /// Quick check of the lab itself: 4 agents, 4 MiB (overrides --agents/--size-mib).
    #[arg(long)]
    quick: bool,
    /// Seed of the payload bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Append each run's record here as a JSON line.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Write the markdown table here (it is printed too).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Where shoal-agent and shoal-publisher are; default: beside this binary.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Working directory, kept afterwards with every process's log (each agent count gets
    /// WORK/n<N>, replaced if present); default: a temporary one, removed at the end.
    #[arg(long)]
    work: Option<PathBuf>,
}

fn parse_slow(s: &str) -> Result<SlowHosts, String> {
    let (n, m) = s.split_once('@').ok_or("expected COUNT@MBIT, e.g. 8@20")?;
    Ok(SlowHosts {
        agents: n.parse().map_err(|_| format!("bad count {n:?}"))?,
        mbit: m
            .parse()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| format!("bad rate {m:?}"))?,
        marked: true,
    })
}

fn parse_late(s: &str) -> Result<LateJoin, String> {
    let (n, t) = s
        .split_once('@')
        .ok_or("expected COUNT@SECONDS, e.g. 4@10")?;
    Ok(LateJoin {
        agents: n.parse().map_err(|_| format!("bad count {n:?}"))?,
        after_s: t.parse().map_err(|_| format!("bad seconds {t:?}"))?,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("shoal-lab: some copies did not match the published file (see the table)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("shoal-lab: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(mut args: Args) -> Result<bool, String> {
    if args.latency.is_some() {
        return Err("--latency needs the kernel's netem queueing discipline, which this machine's kernel lacks (\"Specified qdisc kind is unknown\"); latency is covered by the swarm simulator: cargo test -p shoal-protocol --test swarm_sim -- --nocapture".into());
    }
    if args.loss.is_some() && which("nft").is_none() {
        return Err("--loss uses nftables: install it (apt-get install nftables)".into());
    }
    if !shoal_tests::netns::available() {
        return Err(
            "the lab builds network namespaces: run it as root, with iproute2 installed".into(),
        );
    }
    for tool in ["curl", "aria2c", "tc"] {
        if which(tool).is_none() {
            return Err(format!(
                "{tool} not found: install it (apt-get install curl aria2 iproute2)"
            ));
        }
    }
    if args.quick {
        args.agents = vec![4];
        args.size_mib = 4;
    }
    let systems = args
        .systems
        .iter()
        .map(|s| System::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(PathBuf::from))
            .ok_or("cannot locate this binary's directory; pass --bin-dir")?,
    };
    let bins = Bins::in_dir(&bin_dir)?;
    let scratch = shoal_tests::TempDir::new("lab");
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| scratch.path().to_owned());
    let mut jsonl = match &args.jsonl {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut all: Vec<Record> = Vec::new();
    for &agents in &args.agents {
        let scenario = Scenario {
            agents,
            size: args.size_mib * 1024 * 1024,
            origin_mbit: args.origin_mbit,
            host_mbit: args.host_mbit,
            late: args.late,
            slow: args.slow.map(|s| SlowHosts {
                marked: !args.slow_unmarked,
                ..s
            }),
            delta_pct: args.delta,
            loss_pct: args.loss,
            seed: args.seed,
        };
        eprintln!(
            "== {agents} agents, {} MiB, origin {} Mbit/s, agents {} Mbit/s: bound {:.1} s",
            args.size_mib,
            args.origin_mbit,
            args.host_mbit,
            scenario.bound_s()
        );
        let mut lab = Lab::new(bins.clone(), scenario, &work.join(format!("n{agents}")))?;
        let records = lab.run_all(&systems, |r| {
            let line = report::json_line(r);
            println!("{line}");
            if let Some(f) = jsonl.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            eprintln!(
                "   {:<11} all done {:>6.1} s ({:.2}× bound), origin {:.3} F, verified: {}",
                r.system, r.time_s, r.bound_ratio, r.origin_copies, r.verified
            );
        })?;
        all.extend(records);
    }
    let table = report::markdown(&all);
    eprintln!("\n{table}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &table).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(all.iter().all(|r| r.verified))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}
