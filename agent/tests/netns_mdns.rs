//! Real agent processes in network namespaces that find each other over real mDNS (no
//! `--peer` flag anywhere) and fetch a release from an HTTPS origin on the bridge.
//! Needs root (CI runs as root); elsewhere it says so and passes without running.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Vendor, read};
use shoal_tests::netns::{self, Lan};
use shoal_tests::random_file;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

/// Starts `agents` agents (one per host, mDNS only; optionally stops the origin once the
/// first one finished), waits until all hold the release,
/// checks their bytes, and returns (origin bytes / release size, per-agent peer share %).
async fn swarm_in_namespaces(
    tag: &str,
    agents: usize,
    len: usize,
    shaping: Option<(u32, u32)>,
    kill_origin_after_first: bool,
) -> (f64, Vec<f64>) {
    let mut lan = Lan::new(agents).expect("build the test LAN");
    if let Some((origin_mbit, host_mbit)) = shaping {
        lan.shape_gateway(origin_mbit)
            .expect("shape the origin link");
        lan.shape_hosts(host_mbit).expect("shape the host links");
    }
    let v = Vendor::start_on(tag, &lan.gateway()).await;
    let src = v.dir.join("update.bin");
    random_file(&src, len, 3);
    v.release("5.0", std::slice::from_ref(&src));

    for i in 0..agents {
        let out = v.dir.join(&format!("agent{i}"));
        let log = std::fs::File::create(v.dir.join(&format!("agent{i}.log"))).unwrap();
        let summary = std::fs::File::create(v.dir.join(&format!("agent{i}.out"))).unwrap();
        let args: Vec<String> = [
            "fetch",
            &v.url,
            "--trust",
            v.keys.join("trust/1.json").to_str().unwrap(),
            "--channel",
            "stable",
            "--out",
            out.to_str().unwrap(),
            "--listen",
            &format!("{}:7400", lan.host_ip(i)),
            "--interface",
            "eth0",
            "--ca",
            v.cert.to_str().unwrap(),
            "--seed-secs",
            "120",
            "--origin-grace",
            "3",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        lan.spawn(i, BIN, &args, Stdio::from(summary), Stdio::from(log));
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    if kill_origin_after_first {
        // As soon as one agent holds the whole release, every piece exists on the LAN:
        // the origin goes away and the others must finish without it.
        loop {
            if (0..agents).any(|i| v.dir.join(&format!("agent{i}/update.bin")).exists()) {
                v.stop();
                break;
            }
            assert!(Instant::now() < deadline, "no agent finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for i in 0..agents {
        let file = v.dir.join(&format!("agent{i}/update.bin"));
        while !file.exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(v.dir.join(&format!("agent{i}.log")));
                panic!("agent {i} did not finish: {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let origin_bytes = v.metrics.bytes_total();
    lan.terminate_all();
    v.stop();

    let want = read(&src);
    let mut shares = Vec::new();
    for i in 0..agents {
        assert!(
            read(&v.dir.join(&format!("agent{i}/update.bin"))) == want,
            "agent {i} bytes"
        );
        let summary = std::fs::read_to_string(v.dir.join(&format!("agent{i}.out"))).unwrap();
        eprintln!("agent {i}: {}", summary.lines().next().unwrap_or(""));
        let pct: f64 = summary
            .split("from peers (")
            .nth(1)
            .and_then(|s| s.split('%').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("agent {i} summary: {summary}"));
        shares.push(pct);
    }
    let f = origin_bytes as f64 / len as f64;
    eprintln!("origin sent {f:.2} F");
    (f, shares)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_namespaces_discover_each_other_over_mdns() {
    if !netns::available() {
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return;
    }
    let (f, shares) = swarm_in_namespaces("netns-mdns", 3, 24_000_000, None, false).await;
    // Peers were found by mDNS alone: without them every agent would fetch 100% from the
    // origin. With them the origin sends about one copy.
    assert!(
        shares.iter().sum::<f64>() > 100.0,
        "peers supplied too little: {shares:?}"
    );
    assert!(f < 1.5, "origin sent {f:.2} copies");
}

/// The shape: origin behind 20 Mbit/s, 8 agents at 200 Mbit/s on one bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_agents_behind_a_slow_origin_take_one_copy() {
    if !netns::available() {
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return;
    }
    let (f, _) =
        swarm_in_namespaces("netns-shaped", 8, 16 * 1024 * 1024, Some((20, 200)), false).await;
    assert!(f <= 1.1, "origin sent {f:.2} copies of the release");
}

/// The origin dies once one agent holds the release; the LAN still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lan_completes_after_the_origin_dies() {
    if !netns::available() {
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return;
    }
    let (f, _) = swarm_in_namespaces("netns-dies", 6, 8 * 1024 * 1024, Some((20, 200)), true).await;
    assert!(f <= 1.1, "origin sent {f:.2} copies of the release");
}
