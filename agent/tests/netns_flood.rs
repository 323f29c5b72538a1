//! One LAN host floods a seeding agent with connections (the hardening issue): 1,000
//! that send a `Hello` and stall the handshake, then 10,000 that send nothing. The
//! agent keeps at most a few of them open at a time, stays within its file
//! descriptors, and an honest agent on another host still joins it and fetches the
//! release from it. Needs root and iproute2 (CI runs as root); elsewhere the test fails
//! and says so.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Vendor, peer_percent, read};
use shoal_agent::transfer::gate::MAX_PER_ADDRESS;
use shoal_protocol::wire::{Capabilities, Hello, Message, PROTOCOL_VERSION, PeerId};
use shoal_tests::netns::{self, Lan};
use shoal_tests::random_file;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");
const LEN: usize = 16_000_000;
const STALLED: usize = 1_000;
const IDLE: usize = 10_000;
/// The seeding agent's open file descriptors may not pass this during the flood (it
/// holds a few dozen of its own).
const MAX_FDS: usize = 256;

/// What the flooding host saw.
#[derive(Debug, Default)]
struct Flood {
    /// Connections it made.
    made: usize,
    /// The most of them open at once (not yet closed by the agent), checked every 100.
    most_open: usize,
    /// Still open when it finished.
    open_at_end: usize,
}

/// Drops the streams the agent has closed; returns how many are still open.
fn prune(open: &mut Vec<TcpStream>) -> usize {
    open.retain_mut(|s| {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    });
    open.len()
}

/// Opens `STALLED` connections that send a `Hello` and stall, then `IDLE` that send
/// nothing, to `to`, checking how many the agent left open; bounded by count and by
/// 120 s.
fn flood(to: SocketAddr) -> Flood {
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        capabilities: Capabilities::SEED,
        peer_id: PeerId([0x66; 16]),
        nonce: [0x66; 32],
    })
    .to_frame();
    let began = Instant::now();
    let mut f = Flood::default();
    let mut open = Vec::new();
    for i in 0..STALLED + IDLE {
        if began.elapsed() > Duration::from_secs(120) {
            break;
        }
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
            continue;
        };
        f.made += 1;
        if i < STALLED {
            let _ = s.write_all(&hello);
        }
        s.set_nonblocking(true).unwrap();
        open.push(s);
        if i % 100 == 99 {
            // Give the agent a moment to turn the last ones away.
            std::thread::sleep(Duration::from_millis(20));
            f.most_open = f.most_open.max(prune(&mut open));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    f.open_at_end = prune(&mut open);
    f
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn agent_args(v: &Vendor, lan: &Lan, host: usize, out: &str, peer: Option<String>) -> Vec<String> {
    let mut args: Vec<String> = [
        "fetch",
        &v.url,
        "--trust",
        v.keys.join("trust/1.json").to_str().unwrap(),
        "--channel",
        "stable",
        "--out",
        v.dir.join(out).to_str().unwrap(),
        "--listen",
        &format!("{}:7400", lan.host_ip(host)),
        "--interface",
        "eth0",
        "--ca",
        v.cert.to_str().unwrap(),
        "--seed-secs",
        "300",
        "--origin-grace",
        "3",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = peer {
        args.extend(["--peer".to_string(), p]);
    }
    args
}

async fn wait_for(file: &std::path::Path, log: &std::path::Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not arrive: {:?}",
            file.display(),
            std::fs::read_to_string(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_host_does_not_lock_out_honest_peers() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    // Host 0: the origin; 1: the seeding agent; 2: the flooding host; 3: an honest agent.
    let mut lan = Lan::new(4).expect("build the test LAN");
    let v = Vendor::start_with("netns-flood", &lan.host_ip(0), lan.listen_on(0, 8443)).await;
    let src = v.dir.join("update.bin");
    random_file(&src, LEN, 17);
    v.release("1.0", std::slice::from_ref(&src));

    let seed_log = v.dir.join("seed.log");
    let seed = lan.spawn(
        1,
        BIN,
        &agent_args(&v, &lan, 1, "seed", None),
        Stdio::from(std::fs::File::create(v.dir.join("seed.out")).unwrap()),
        Stdio::from(std::fs::File::create(&seed_log).unwrap()),
    );
    wait_for(
        &v.dir.join("seed/update.bin"),
        &seed_log,
        Duration::from_secs(60),
    )
    .await;
    let fds_before = open_fds(seed);

    // The flood starts; the honest agent starts while it runs.
    let to: SocketAddr = format!("{}:7400", lan.host_ip(1)).parse().unwrap();
    let flooder = lan.spawn_thread_in(2, move || flood(to));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let honest_log = v.dir.join("honest.log");
    let honest_began = Instant::now();
    lan.spawn(
        3,
        BIN,
        &agent_args(&v, &lan, 3, "honest", Some(to.to_string())),
        Stdio::from(std::fs::File::create(v.dir.join("honest.out")).unwrap()),
        Stdio::from(std::fs::File::create(&honest_log).unwrap()),
    );
    let mut most_fds = 0;
    while !flooder.is_finished() {
        most_fds = most_fds.max(open_fds(seed));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let f = flooder.join().expect("flood thread");
    wait_for(
        &v.dir.join("honest/update.bin"),
        &honest_log,
        Duration::from_secs(60),
    )
    .await;
    let honest_took = honest_began.elapsed();
    lan.terminate_all();
    v.stop();

    eprintln!(
        "flood: {f:?}; the seeding agent's descriptors: {fds_before} before, at most {most_fds} during; \
         the honest agent completed in {honest_took:.1?}"
    );
    assert_eq!(read(&v.dir.join("honest/update.bin")), read(&src));
    assert!(
        f.made >= STALLED + IDLE / 2,
        "the flood made only {} connections: the test proves little",
        f.made
    );
    assert!(
        f.most_open <= MAX_PER_ADDRESS && f.open_at_end <= MAX_PER_ADDRESS,
        "the agent kept more than {MAX_PER_ADDRESS} of one host's connections open: {f:?}"
    );
    assert!(
        most_fds <= MAX_FDS,
        "the agent held {most_fds} descriptors during the flood"
    );
    let share = peer_percent(&v.dir.join("honest.out"), 3);
    assert!(
        share >= 90.0,
        "the honest agent got only {share}% from the seeding agent during the flood"
    );
}
