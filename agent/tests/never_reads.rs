//! Regression tests of the agent-core issue (#8): a peer that asks for data and never
//! reads it is dropped within the write timeout, whatever it asks for (blocks, requests
//! answered by `Reject`, index ranges), the agent's memory stays bounded meanwhile, and an
//! honest peer still completes from the same agent.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::reader::{Ask, join_and_stop_reading, requests};
use common::{Vendor, read};
use shoal_agent::fetch::run;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const LEN: usize = 16_000_000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Never-reading peers of each kind.
const EACH: usize = 6;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Floods `addr` with `ask` requests and never reads; returns how long the agent took
/// to close the connection (seen as a failing write), at most 30 s.
async fn attack(
    addr: SocketAddr,
    release: shoal_protocol::Digest,
    pieces: u32,
    ask: Ask,
    id: u8,
) -> Duration {
    let joined = tokio::time::timeout(
        Duration::from_secs(20),
        join_and_stop_reading(addr, release, pieces, id),
    );
    let mut s = joined.await.expect("the agent answers the handshake");
    let flood = requests(2_000, pieces, ask);
    let began = Instant::now();
    let limit = Duration::from_secs(30);
    while began.elapsed() < limit {
        let left = limit.saturating_sub(began.elapsed());
        match tokio::time::timeout(left, s.write_all(&flood)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_read_are_dropped_and_an_honest_peer_completes() {
    if let Ok(filter) = std::env::var("SHOAL_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let v = Vendor::start("never-reads").await;
    let src = v.source("img.bin", LEN, 8);
    v.release("1", std::slice::from_ref(&src));
    let (release, pieces) = v.current_release();
    let index = std::fs::read_dir(v.repo.join("indexes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let index = shoal_protocol::Digest::of(&read(&index.path())).0;

    // A seeds the release with a short write timeout.
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_addr = la.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let (a_done, a_rx) = oneshot::channel();
    let mut o = v.agent("a", vec![]);
    o.transfer.write_timeout = WRITE_TIMEOUT;
    let a = tokio::spawn(run(o, la, Some(a_done), stopped.clone(), |_| {}));
    tokio::time::timeout(Duration::from_secs(60), a_rx)
        .await
        .expect("the seeder finishes its own download")
        .unwrap();

    let before = rss();
    let mut attackers = Vec::new();
    for k in 0..3 * EACH {
        let ask = [Ask::Blocks, Ask::Invalid, Ask::Index(index)][k % 3];
        attackers.push((
            ask,
            tokio::spawn(attack(a_addr, release, pieces, ask, k as u8 + 1)),
        ));
    }
    // B may use only A (the origin grace outlasts the test): every byte from A.
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut o = v.agent("b", vec![a_addr]);
    o.transfer.swarm.origin_grace = Duration::from_secs(600);
    let (b_done, b_rx) = oneshot::channel();
    let b = tokio::spawn(run(o, lb, Some(b_done), stopped, |_| {}));
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    while attackers.iter().any(|(_, t)| !t.is_finished()) && Instant::now() < deadline {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (ask, t) in attackers {
        let took = t.await.unwrap();
        // The socket buffers fill first (a few MB of answers), then one write stalls for
        // the timeout; a loaded machine adds seconds. Before the fix: never (30 s).
        assert!(
            took < WRITE_TIMEOUT + Duration::from_secs(12),
            "a peer asking for {ask:?} and never reading stayed connected for {took:?}"
        );
    }
    let grew = peak.saturating_sub(before);
    eprintln!(
        "RSS before {} MiB, peak growth {} MiB",
        before >> 20,
        grew >> 20
    );
    assert!(
        grew < 128 << 20,
        "memory grew by {} MiB under never-reading peers",
        grew >> 20
    );

    let rb = tokio::time::timeout(Duration::from_secs(60), b_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read(&rb.files[0]), read(&src));
    assert_eq!(rb.progress.counters.from_peers, LEN as u64);
    stop.send_replace(true);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    v.stop();
}
