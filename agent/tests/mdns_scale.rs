//! Discovery at scale, a benchmark (figures, not assertions about speed): `AGENTS`
//! announcements on one link (hosts in network namespaces on one bridge, several
//! announcers per host), each browsing as an agent does. Reports how long until each
//! one knows every name, and 20 names (a useful peer set), how many it resolved to an
//! address, and the multicast traffic the link carried. Needs root; `#[ignore]`d, run
//! with `bench/mdns-scale.sh`. It fails only if an announcer never learns a single name.

use std::time::{Duration, Instant};

use shoal_agent::discovery::{Discovery, DiscoveryConfig, Found};
use shoal_protocol::wire::PeerId;
use shoal_tests::netns::{self, Lan};

const HOSTS: usize = 50;
const PER_HOST: usize = 5;
const AGENTS: usize = HOSTS * PER_HOST;
const RUN: Duration = Duration::from_secs(20);

/// Per announcer: when it knew 20 names and every name (from the start), and how many
/// it resolved to an address.
struct Seen {
    twenty: Option<Duration>,
    all: Option<Duration>,
    resolved: usize,
}

fn announcer_host(host: usize, began: Instant) -> Vec<Seen> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let cfg = DiscoveryConfig::new(vec!["eth0".into()], "acme", "default", None);
        let mut running = Vec::new();
        for k in 0..PER_HOST {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&((host * PER_HOST + k) as u64).to_be_bytes());
            id[8..].copy_from_slice(&0x5ca1_ab1e_u64.to_be_bytes());
            let (tx, rx) = tokio::sync::mpsc::channel(4 * AGENTS);
            let d = Discovery::start(&cfg, 7400 + k as u16, &PeerId(id), tx).expect("announce");
            running.push((d, rx));
        }
        let mut seen: Vec<Seen> = Vec::new();
        let mut tasks = Vec::new();
        for (d, mut rx) in running {
            tasks.push(tokio::spawn(async move {
                let mut names = std::collections::HashSet::new();
                let mut resolved = std::collections::HashSet::new();
                let mut s = Seen {
                    twenty: None,
                    all: None,
                    resolved: 0,
                };
                let deadline = tokio::time::Instant::now() + RUN;
                while let Ok(Some(f)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                    match f {
                        Found::Member(id) => {
                            names.insert(id);
                        }
                        Found::Peer { id, .. } => {
                            names.insert(id);
                            resolved.insert(id);
                        }
                        Found::Gone(_) => {}
                    }
                    if names.len() >= 20 && s.twenty.is_none() {
                        s.twenty = Some(began.elapsed());
                    }
                    if names.len() >= AGENTS - 1 && s.all.is_none() {
                        s.all = Some(began.elapsed());
                    }
                }
                s.resolved = resolved.len();
                drop(d);
                s
            }));
        }
        for t in tasks {
            seen.push(t.await.expect("announcer"));
        }
        seen
    })
}

fn spread(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "never".into();
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64();
    format!(
        "median {:.2} s, 90 % {:.2} s, max {:.2} s",
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

#[test]
#[ignore = "benchmark: bench/mdns-scale.sh (root)"]
fn discovery_of_250_agents_on_one_link() {
    shoal_tests::require(netns::available(), "needs root and iproute2");
    let lan = Lan::new(HOSTS).expect("build the LAN");
    let before: Vec<(u64, u64)> = (0..HOSTS).map(|i| lan.host_link_bytes(i)).collect();
    let before_packets: Vec<(u64, u64)> = (0..HOSTS).map(|i| lan.host_link_packets(i)).collect();
    let began = Instant::now();
    let threads: Vec<_> = (0..HOSTS)
        .map(|h| lan.spawn_thread_in(h, move || announcer_host(h, began)))
        .collect();
    let seen: Vec<Seen> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("host thread"))
        .collect();
    let elapsed = began.elapsed().as_secs_f64();
    // What the hosts sent the bridge: every multicast packet once.
    let sent: u64 = (0..HOSTS)
        .map(|i| lan.host_link_bytes(i).1 - before[i].1)
        .sum();
    let packets: u64 = (0..HOSTS)
        .map(|i| lan.host_link_packets(i).1 - before_packets[i].1)
        .sum();
    let twenty: Vec<Duration> = seen.iter().filter_map(|s| s.twenty).collect();
    let all: Vec<Duration> = seen.iter().filter_map(|s| s.all).collect();
    let resolved: Vec<usize> = seen.iter().map(|s| s.resolved).collect();
    eprintln!(
        "{AGENTS} announcers on {HOSTS} hosts, {:.0} s: the link carried {} packets ({:.0}/s), {} KiB from the hosts",
        elapsed,
        packets,
        packets as f64 / elapsed,
        sent >> 10
    );
    eprintln!(
        "20 names known: {} ({} of {AGENTS})",
        spread(twenty.clone()),
        twenty.len()
    );
    eprintln!(
        "all {} names known: {} ({} of {AGENTS})",
        AGENTS - 1,
        spread(all.clone()),
        all.len()
    );
    eprintln!(
        "resolved to an address by the end: min {}, median {}, max {}",
        resolved.iter().min().unwrap_or(&0),
        {
            let mut r = resolved.clone();
            r.sort();
            r[r.len() / 2]
        },
        resolved.iter().max().unwrap_or(&0)
    );
    assert!(
        !twenty.is_empty(),
        "no announcer learnt 20 names in {RUN:?}"
    );
}
