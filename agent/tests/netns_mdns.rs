//! Real agent processes in network namespaces that find each other over real mDNS (no
//! `--peer` flag anywhere) and fetch a release from an HTTPS origin on the bridge.
//! Needs root (CI runs as root); elsewhere it says so and passes without running.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Vendor, read};
use shoal_tests::netns::{self, Lan};
use shoal_tests::random_file;

const LEN: usize = 24_000_000;
const AGENTS: usize = 3;
const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_namespaces_discover_each_other_over_mdns() {
    if !netns::available() {
        eprintln!("skipped: creating network namespaces needs root and iproute2");
        return;
    }
    let mut lan = Lan::new(AGENTS).expect("build the test LAN");
    let v = Vendor::start_on("netns-mdns", Lan::GATEWAY).await;
    let src = v.dir.join("update.bin");
    random_file(&src, LEN, 3);
    v.release("5.0", std::slice::from_ref(&src));

    for i in 0..AGENTS {
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
            &format!("{}:7400", Lan::host_ip(i)),
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

    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..AGENTS {
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
    let mut from_peers_total = 0.0;
    for i in 0..AGENTS {
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
        from_peers_total += pct;
    }
    eprintln!("origin sent {:.2} F", origin_bytes as f64 / LEN as f64);
    // Peers were found by mDNS alone: without them every agent would fetch 100% from the
    // origin. With them the origin sends about one copy.
    assert!(
        from_peers_total > 100.0,
        "peers supplied too little: {from_peers_total}%"
    );
    assert!(
        (origin_bytes as f64) < 1.5 * LEN as f64,
        "origin sent {origin_bytes}"
    );
}
