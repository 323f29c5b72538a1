//! Real agent processes in network namespaces that find each other over real mDNS (no
//! `--peer` flag anywhere) and fetch a release from an HTTPS origin on the bridge.
//! Needs root and iproute2 (CI runs as root); elsewhere each test fails and says so.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::liar::liar;
use common::{Vendor, peer_percent, read};
use shoal_agent::discovery::{Discovery, DiscoveryConfig};
use shoal_protocol::Digest;
use shoal_tests::netns::{self, Lan};
use shoal_tests::random_file;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

/// One namespace scenario.
#[derive(Default)]
struct Setup {
    tag: &'static str,
    agents: usize,
    len: usize,
    /// (origin Mbit/s, host Mbit/s).
    shaping: Option<(u32, u32)>,
    /// Stop the origin once the first agent holds the whole release.
    kill_origin_after_first: bool,
    /// Add a host that announces itself over mDNS and serves garbage.
    liar: bool,
}

/// What a scenario produced.
struct Outcome {
    /// Origin bytes / release size.
    origin_copies: f64,
    /// Per agent: percentage of its bytes that came from peers.
    peer_shares: Vec<f64>,
    /// Blocks the liar served (0 without a liar).
    liar_blocks: usize,
    /// Agents whose log reports banning a peer.
    agents_that_banned: usize,
    /// The most connections one agent opened to the liar.
    liar_conns_per_agent: usize,
}

/// Starts one agent process per host (mDNS only, no `--peer`), waits until every agent
/// holds the release, checks their bytes against the published file.
async fn swarm_in_namespaces(setup: Setup) -> Outcome {
    let Setup {
        tag,
        agents,
        len,
        shaping,
        kill_origin_after_first,
        liar: with_liar,
    } = setup;
    // Host 0 is the origin, hosts 1..=agents the agents, then the liar if any.
    let hosts = 1 + agents + usize::from(with_liar);
    let liar_host = agents + 1;
    let mut lan = Lan::new(hosts).expect("build the test LAN");
    if let Some((origin_mbit, host_mbit)) = shaping {
        lan.shape_hosts(host_mbit).expect("shape the host links");
        lan.shape_host(0, origin_mbit)
            .expect("shape the origin link");
    }
    // The origin runs in its own namespace (host 0): its listening socket is bound there.
    let v = Vendor::start_with(tag, &lan.host_ip(0), lan.listen_on(0, 8443)).await;
    let src = v.dir.join("update.bin");
    random_file(&src, len, 3);
    v.release("5.0", std::slice::from_ref(&src));
    let liar_served = Arc::new(AtomicUsize::new(0));
    let liar_stop = Arc::new(AtomicBool::new(false));
    let liar_conns = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let liar_thread = with_liar.then(|| {
        let (release, pieces) = v.current_release();
        let ip = lan.host_ip(liar_host);
        let (served, stop, conns) = (liar_served.clone(), liar_stop.clone(), liar_conns.clone());
        lan.spawn_thread_in(liar_host, move || {
            run_liar(&ip, release, pieces, served, stop, conns)
        })
    });

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
            &format!("{}:7400", lan.host_ip(i + 1)),
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
        lan.spawn(i + 1, BIN, &args, Stdio::from(summary), Stdio::from(log));
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
    liar_stop.store(true, Ordering::Relaxed);
    if let Some(t) = liar_thread {
        t.join().expect("liar thread");
    }

    let want = read(&src);
    let mut shares = Vec::new();
    for i in 0..agents {
        assert!(
            read(&v.dir.join(&format!("agent{i}/update.bin"))) == want,
            "agent {i} bytes"
        );
        shares.push(peer_percent(&v.dir.join(&format!("agent{i}.out")), i));
    }
    let origin_copies = origin_bytes as f64 / len as f64;
    eprintln!("origin sent {origin_copies:.2} F");
    let agents_that_banned = (0..agents)
        .filter(|i| {
            std::fs::read_to_string(v.dir.join(&format!("agent{i}.log")))
                .is_ok_and(|l| l.contains("banned peer"))
        })
        .count();
    Outcome {
        origin_copies,
        peer_shares: shares,
        liar_blocks: liar_served.load(Ordering::Relaxed),
        agents_that_banned,
        liar_conns_per_agent: liar_conns
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0),
    }
}

/// A host that announces itself over mDNS like an agent and serves garbage to whoever
/// connects, until `stop` (or two minutes).
fn run_liar(
    ip: &str,
    release: Digest,
    pieces: u32,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind((ip, 7400))
            .await
            .expect("liar listens");
        let (found, _ignored) = tokio::sync::mpsc::channel(16);
        let cfg = DiscoveryConfig::new(vec!["eth0".into()], "acme", "default", None);
        let _announce =
            Discovery::start(&cfg, 7400, &shoal_protocol::wire::PeerId([0x11; 16]), found)
                .expect("liar announces");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok(Ok((s, from))) =
                tokio::time::timeout(Duration::from_millis(100), l.accept()).await
            {
                *conns.lock().unwrap().entry(from.ip()).or_insert(0) += 1;
                let served = served.clone();
                tokio::spawn(async move {
                    served.fetch_add(liar(s, release, pieces).await, Ordering::Relaxed);
                });
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_in_namespaces_discover_each_other_over_mdns() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    let o = swarm_in_namespaces(Setup {
        tag: "netns-mdns",
        agents: 3,
        len: 24_000_000,
        ..Setup::default()
    })
    .await;
    let (f, shares) = (o.origin_copies, o.peer_shares);
    // Peers were found by mDNS alone: without them every agent would fetch 100% from the
    // origin. With them the origin sends about one copy.
    assert!(
        shares.iter().sum::<f64>() > 100.0,
        "peers supplied too little: {shares:?}"
    );
    assert!(f < 1.5, "origin sent {f:.2} copies");
}

/// The shape: the origin in its own namespace behind 20 Mbit/s, 8 agents at
/// 200 Mbit/s on one bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_agents_behind_a_slow_origin_take_one_copy() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    let f = swarm_in_namespaces(Setup {
        tag: "netns-shaped",
        agents: 8,
        len: 16 * 1024 * 1024,
        shaping: Some((20, 200)),
        ..Setup::default()
    })
    .await
    .origin_copies;
    assert!(f <= 1.1, "origin sent {f:.2} copies of the release");
}

/// The origin dies once one agent holds the release; the LAN still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lan_completes_after_the_origin_dies() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    let f = swarm_in_namespaces(Setup {
        tag: "netns-dies",
        agents: 6,
        len: 8 * 1024 * 1024,
        shaping: Some((20, 200)),
        kill_origin_after_first: true,
        ..Setup::default()
    })
    .await
    .origin_copies;
    assert!(f <= 1.1, "origin sent {f:.2} copies of the release");
}

/// A host that serves corrupt pieces is banned, and every agent still ends with the
/// published bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_host_is_banned_and_everyone_ends_correct() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    let o = swarm_in_namespaces(Setup {
        tag: "netns-liar",
        agents: 4,
        len: 8 * 1024 * 1024,
        shaping: Some((20, 200)),
        liar: true,
        ..Setup::default()
    })
    .await;
    assert!(
        o.liar_blocks > 0,
        "nobody asked the liar: the test proves nothing"
    );
    assert!(
        o.agents_that_banned >= 1,
        "no agent reported banning the liar"
    );
    eprintln!(
        "most connections to the liar from one agent: {}",
        o.liar_conns_per_agent
    );
    // The ban covers the liar's address: nobody dials it again (a second connection
    // may cross the first, a simultaneous dial).
    assert!(
        o.liar_conns_per_agent <= 2,
        "an agent connected to the liar {} times",
        o.liar_conns_per_agent
    );
}
