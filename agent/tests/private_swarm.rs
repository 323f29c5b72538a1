//! Private swarms on loopback (PROTOCOL.md §6.8), agents in one process against a real
//! HTTPS origin: agents holding the organisation's key share pieces; an agent with
//! another key and a public agent get nothing from them and are not held up; a stranger
//! speaking raw bytes learns nothing; a key rotation keeps the swarm whole.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Vendor, read};
use shoal_agent::fetch::{FetchReport, run};
use shoal_agent::secure::SwarmKeys;
use shoal_protocol::discovery::SwarmKey;
use shoal_tests::random_file;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

const LEN: usize = 12_000_000;

/// Writes a key file holding `keys` (by seed byte), the first preferred.
fn key_file(dir: &Path, name: &str, keys: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let text: String = keys
        .iter()
        .map(|b| format!("{}\n", SwarmKey::from_bytes([*b; 32]).to_text()))
        .collect();
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Runs one agent per entry of `keys` (its key file's keys; empty: public), each dialling
/// all the others, until every one finished; `probe` runs while they all still seed.
async fn swarm(
    v: &Vendor,
    tag: &str,
    keys: &[&[u8]],
    only_first_dials: bool,
    probe: impl AsyncFnOnce(&[SocketAddr]),
) -> Vec<FetchReport> {
    let mut listeners = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in keys {
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
            .filter(|(j, _)| *j != i && (i == 0 || !only_first_dials))
            .map(|(_, a)| *a);
        let mut o = v.agent(&format!("{tag}{i}"), others.collect());
        o.transfer.swarm.origin_grace = Duration::from_millis(1500);
        if !keys[i].is_empty() {
            let file = key_file(v.dir.path(), &format!("{tag}{i}.key"), keys[i]);
            o.transfer.private = Some(SwarmKeys::load(&file).expect("key file loads"));
        }
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
    probe(&addrs).await;
    stop_agents.send_replace(true);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    reports
}

/// What a stranger reads back after sending `bytes` to `addr`, until the agent closes.
async fn stranger_reads(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the agent closes a stranger's connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_and_strangers_get_nothing() {
    let v = Vendor::start("private-swarm").await;
    let src = v.dir.join("image.bin");
    random_file(&src, LEN, 7);
    v.release("1.0", std::slice::from_ref(&src));
    // Three members (key 1), an agent of another organisation (key 2), a public agent.
    let keys: [&[u8]; 5] = [&[1], &[1], &[1], &[2], &[]];
    let reports = swarm(&v, "a", &keys, false, async |addrs| {
        // A public agent's Hello and garbage get nothing back; random bytes shaped as a
        // first handshake message get a decoy second message (a fresh key and random
        // bytes, as any second message looks without the key), then the close.
        let mut hello = vec![0, 0, 0, 59, 1];
        hello.extend_from_slice(b"SHOL");
        hello.extend_from_slice(&[0u8; 54]);
        assert_eq!(stranger_reads(addrs[0], &hello).await, b"");
        assert_eq!(stranger_reads(addrs[0], &[0xff; 4096]).await, b"");
        let mut forged = vec![0, 48];
        forged.extend_from_slice(&[0x5a; 48]);
        let decoy = stranger_reads(addrs[0], &forged).await;
        assert_eq!(decoy.len(), 50, "{decoy:?}");
        assert_eq!(decoy[..2], [0, 48]);
        // Fresh each time, and its first 32 bytes are an X25519 public key (the top bit
        // of a u-coordinate is clear, which random bytes would show half the time),
        // like a real message 2's.
        let mut seen = vec![decoy];
        for _ in 0..7 {
            seen.push(stranger_reads(addrs[0], &forged).await);
        }
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d.len(), 50);
            assert_eq!(d[2 + 31] & 0x80, 0, "{d:?}");
            assert!(!seen[..i].contains(d), "a decoy repeated");
        }
    })
    .await;
    v.stop();

    let want = read(&src);
    let mut members_from_origin = 0;
    for (i, r) in reports.iter().enumerate() {
        assert!(read(&r.files[0]) == want, "agent {i} wrote other bytes");
        let c = r.progress.counters;
        if i < 3 {
            assert!(
                c.from_peers > 0,
                "member {i} got nothing from its swarm: {c:?}"
            );
            members_from_origin += c.from_origin;
        } else {
            assert_eq!(
                c.from_peers, 0,
                "stranger {i} got pieces from the swarm: {c:?}"
            );
            assert_eq!(c.uploaded, 0, "stranger {i} served the swarm: {c:?}");
        }
    }
    assert!(
        members_from_origin as f64 <= 1.1 * LEN as f64,
        "the members fetched {members_from_origin} bytes from the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_the_swarm_whole() {
    let v = Vendor::start("private-rotation").await;
    let src = v.dir.join("image.bin");
    random_file(&src, LEN, 8);
    v.release("1.0", std::slice::from_ref(&src));
    // Old key 1, new key 3: one agent not yet moved ([old, new]), one moved ([new, old]),
    // one done ([new]). Every pair shares a key one side uses and the other accepts.
    let keys: [&[u8]; 3] = [&[1, 3], &[3, 1], &[3]];
    let reports = swarm(&v, "r", &keys, false, async |_| {}).await;
    v.stop();
    let want = read(&src);
    let mut from_origin = 0;
    for (i, r) in reports.iter().enumerate() {
        assert!(read(&r.files[0]) == want, "agent {i} wrote other bytes");
        let c = r.progress.counters;
        assert!(c.from_peers > 0, "agent {i} got nothing from peers: {c:?}");
        from_origin += c.from_origin;
    }
    assert!(
        from_origin as f64 <= 1.1 * LEN as f64,
        "origin: {from_origin}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialler_refused_under_one_key_tries_its_next() {
    let v = Vendor::start("private-fallback").await;
    let src = v.dir.join("image.bin");
    random_file(&src, LEN, 9);
    v.release("1.0", std::slice::from_ref(&src));
    // Only agent 0 dials, with its first key (1) first; agents 1 and 2 hold only key 3.
    // They get pieces from a peer only if agent 0 moves on to its second key.
    let keys: [&[u8]; 3] = [&[1, 3], &[3], &[3]];
    let reports = swarm(&v, "f", &keys, true, async |_| {}).await;
    v.stop();
    for (i, r) in reports.iter().enumerate() {
        let c = r.progress.counters;
        assert!(c.from_peers > 0, "agent {i} got nothing from peers: {c:?}");
    }
}
