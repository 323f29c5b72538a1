//! Several agents in one process on loopback (static peers) against a real HTTPS origin
//! (`shoal-publisher`'s server, in-process): everyone ends with byte-identical
//! artifacts, and the origin sends about one copy of the release.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::fetch::{FetchOptions, FetchReport, run};
use shoal_protocol::swarm::SwarmConfig;
use shoal_publisher::keygen::{KeygenOptions, keygen};
use shoal_publisher::release::{ReleaseOptions, run as release};
use shoal_publisher::serve::{self, Metrics};
use shoal_tests::{TempDir, random_file};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const LEN: usize = 24_000_000;
const AGENTS: usize = 3;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_pieces_and_the_origin_sends_one_copy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("loopback-swarm");
    let (keys, repo, src) = (dir.join("keys"), dir.join("repo"), dir.join("image.bin"));
    random_file(&src, LEN, 42);
    keygen(&KeygenOptions {
        keys: keys.clone(),
        product: "acme".into(),
        root_keys: 1,
        root_threshold: 1,
        expires_in: 86400,
        now: now(),
    })
    .unwrap();
    release(&ReleaseOptions {
        keys: keys.clone(),
        repo: repo.clone(),
        channel: "stable".into(),
        version: "1.0".into(),
        files: vec![src.clone()],
        os: "any".into(),
        arch: "any".into(),
        expires_in: 86400,
        quiet: true,
        now: now(),
    })
    .unwrap();

    // The origin: HTTPS with a self-signed certificate, on port 0.
    let cert = serve::tls::self_signed(&dir.join("tls"), &["127.0.0.1".into()]).unwrap();
    let tls = cert.server_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_url = format!("https://{}", listener.local_addr().unwrap());
    let metrics = Arc::new(Metrics::default());
    let (stop_origin, mut origin_stop) = watch::channel(false);
    let origin = {
        let (repo, metrics) = (repo.clone(), metrics.clone());
        tokio::spawn(async move {
            serve::run(listener, tls, &repo, metrics, async move {
                let _ = origin_stop.changed().await;
            })
            .await
        })
    };

    // The agents: each listens on loopback and dials the others.
    let mut listeners = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in 0..AGENTS {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        listeners.push(l);
    }
    let (stop_agents, agents_stop) = watch::channel(false);
    let mut done = Vec::new();
    let mut tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let o = FetchOptions {
            origin: origin_url.clone(),
            trust: keys.join("trust/1.json"),
            channel: "stable".into(),
            out: dir.join(&format!("agent{i}/out")),
            state: dir.join(&format!("agent{i}/state")),
            peers: addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| *a)
                .collect(),
            ca: Some(cert.cert_path.clone()),
            danger_allow_http: false,
            swarm: SwarmConfig {
                origin_grace: Duration::from_millis(1500),
                ..SwarmConfig::default()
            },
        };
        let (tx, rx) = oneshot::channel::<FetchReport>();
        done.push(rx);
        tasks.push(tokio::spawn(run(
            o,
            l,
            Some(tx),
            agents_stop.clone(),
            |_| {},
        )));
    }
    let mut reports = Vec::new();
    for rx in done {
        let r = tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .expect("every agent finishes within 120 s")
            .expect("agent reported");
        reports.push(r);
    }
    stop_agents.send_replace(true);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    stop_origin.send_replace(true);
    origin.await.unwrap().unwrap();

    let want = std::fs::read(&src).unwrap();
    let mut from_origin = 0;
    let mut from_peers = 0;
    for (i, r) in reports.iter().enumerate() {
        let files: Vec<PathBuf> = r.files.clone();
        assert_eq!(files.len(), 1);
        assert!(
            std::fs::read(&files[0]).unwrap() == want,
            "agent {i} wrote other bytes"
        );
        let c = r.progress.counters;
        assert!(
            c.from_peers + c.from_origin >= LEN as u64,
            "agent {i}: {c:?}"
        );
        from_origin += c.from_origin;
        from_peers += c.from_peers;
    }
    eprintln!(
        "origin sent {} bytes ({:.2} F), peers {} bytes",
        metrics.bytes_total(),
        metrics.bytes_total() as f64 / LEN as f64,
        from_peers
    );
    assert!(
        from_origin as f64 <= 1.1 * LEN as f64,
        "origin pieces: {from_origin}"
    );
    assert!(metrics.bytes_total() as f64 <= 1.1 * LEN as f64 + 65536.0);
    assert!(from_peers as f64 >= (AGENTS as f64 - 1.1) * LEN as f64);
}
