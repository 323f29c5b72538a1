//! Several agents in one process on loopback (static peers) against a real HTTPS origin
//! (`shoal-publisher`'s server, in-process): everyone ends with byte-identical
//! artifacts, and the origin sends about one copy of the release.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Vendor, read};
use shoal_agent::fetch::{FetchReport, run};
use shoal_tests::random_file;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const LEN: usize = 24_000_000;
const AGENTS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_share_pieces_and_the_origin_sends_one_copy() {
    let v = Vendor::start("loopback-swarm").await;
    let src = v.dir.join("image.bin");
    random_file(&src, LEN, 42);
    v.release("1.0", std::slice::from_ref(&src));

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
        let others = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a);
        let mut o = v.agent(&format!("agent{i}"), others.collect());
        o.transfer.swarm.origin_grace = Duration::from_millis(1500);
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
    v.stop();

    let want = read(&src);
    let mut from_origin = 0;
    let mut from_peers = 0;
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.files.len(), 1);
        assert!(read(&r.files[0]) == want, "agent {i} wrote other bytes");
        let c = r.progress.counters;
        assert!(
            c.from_peers + c.from_origin >= LEN as u64,
            "agent {i}: {c:?}"
        );
        from_origin += c.from_origin;
        from_peers += c.from_peers;
    }
    let sent = v.metrics.bytes_total();
    eprintln!(
        "origin sent {sent} bytes ({:.2} F), peers {from_peers} bytes",
        sent as f64 / LEN as f64
    );
    assert!(
        from_origin as f64 <= 1.1 * LEN as f64,
        "origin pieces: {from_origin}"
    );
    assert!(sent as f64 <= 1.1 * LEN as f64 + 65536.0);
    assert!(from_peers as f64 >= (AGENTS as f64 - 1.1) * LEN as f64);
}
