//! Private swarms and vendor separation on a real LAN: agent processes in network
//! namespaces, real mDNS, a spy host written here from PROTOCOL.md (its own mDNS daemon
//! and raw TCP), and a packet capture of one private agent's link.
//!
//! - Vendor A's three agents run a private swarm; vendor B's two agents a public one, on
//!   the same link and in the same group. Each vendor's agents share pieces among
//!   themselves and neither dials the other.
//! - The spy announces an instance with a made-up tag (nobody dials it) and one with
//!   vendor B's public tag (B's agents dial it, A's do not); it probes a private agent
//!   with a forged handshake (a decoy second message comes back, nothing else) and
//!   public Hellos (nothing comes back; after a few failures the agent refuses its
//!   address at once, with a log line).
//! - The capture of a private agent's link holds no product, group, version or protocol
//!   magic in clear.
//!
//! Needs root, iproute2 and tcpdump (CI installs them); elsewhere the test fails and
//! says what is missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Vendor, peer_percent, read};
use shoal_protocol::discovery::{DiscoveryKey, SwarmKey};
use shoal_tests::netns::{self, Lan};
use shoal_tests::random_file;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");
const PRODUCT_A: &str = "acme-secret-driver";
const PRODUCT_B: &str = "globex-public-tool";
const GROUP: &str = "floor-7-office";
const VERSION: &str = "\"7.3.1\"";
const LEN: usize = 16_000_000;
/// Hosts: 0 both origins, 1-3 vendor A (private), 4-5 vendor B (public), 6 the spy.
const A: [usize; 3] = [1, 2, 3];
const B: [usize; 2] = [4, 5];
const SPY: usize = 6;

/// What the spy saw.
#[derive(Default, Debug)]
struct Spied {
    /// Connections to each of its ports, by source address.
    dials: HashMap<(u16, IpAddr), usize>,
    /// Every instance name and TXT record it resolved.
    names: HashSet<String>,
    txt: HashSet<String>,
    /// Bytes a private agent sent back to each of a few public Hellos, and to a forged
    /// handshake (a decoy second message: 50 bytes).
    reply_to_hello: Vec<usize>,
    reply_to_forgery: Option<usize>,
    /// How long a private agent held the spy's next, silent connection (suspended: at
    /// once), and how long another one that had not refused the spy held it.
    struck_hold: Option<Option<Duration>>,
    fresh_hold: Option<Option<Duration>>,
}

/// Connects to `to`, retrying for up to 20 s (the agent may not listen yet).
async fn connect(to: &str) -> Option<tokio::net::TcpStream> {
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(to).await {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// How many bytes `to` sends back after `bytes`, until it closes (12 s at most);
/// `usize::MAX` if it cannot be reached.
async fn reply_len(to: &str, bytes: &[u8]) -> usize {
    let Some(mut s) = connect(to).await else {
        return usize::MAX;
    };
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(12), s.read_to_end(&mut got)).await;
    got.len()
}

/// How long `to` keeps a connection that says nothing (15 s at most); `None` if it
/// cannot be reached.
async fn hold(to: &str) -> Option<Duration> {
    let mut s = connect(to).await?;
    let began = Instant::now();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await;
    Some(began.elapsed())
}

/// The spy: announces two instances, counts who dials them, probes a private agent.
fn spy(lan_ips: Vec<String>, spied: Arc<Mutex<Spied>>, run_for: Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let me = &lan_ips[SPY];
        let mdns = mdns_sd::ServiceDaemon::new().expect("spy mdns");
        mdns.disable_interface(mdns_sd::IfKind::All).unwrap();
        mdns.enable_interface(mdns_sd::IfKind::Name("eth0".into()))
            .unwrap();
        let made_up = "shoal-5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a-0123456789abcdef";
        let id = shoal_protocol::wire::PeerId([0x3c; 16]);
        let public_b = DiscoveryKey::public(PRODUCT_B, GROUP).instance_name(&id);
        for (name, port) in [(made_up.to_owned(), 7400), (public_b, 7401)] {
            let info = mdns_sd::ServiceInfo::new(
                "_shoal._tcp.local.",
                &name,
                &format!("{name}.local."),
                me.as_str(),
                port,
                &[("v", "1")][..],
            )
            .unwrap();
            mdns.register(info).unwrap();
        }
        let browse = mdns.browse("_shoal._tcp.local.").unwrap();
        let deadline = tokio::time::Instant::now() + run_for;
        for port in [7400u16, 7401] {
            let l = tokio::net::TcpListener::bind((me.as_str(), port))
                .await
                .unwrap();
            let spied = spied.clone();
            tokio::spawn(async move {
                while let Ok((s, from)) = l.accept().await {
                    *spied
                        .lock()
                        .unwrap()
                        .dials
                        .entry((port, from.ip()))
                        .or_default() += 1;
                    drop(s);
                }
            });
        }
        {
            // Each probe goes to an agent the spy has not been refused by yet: a
            // suspended address is dropped before any handshake, which would prove
            // nothing about the handshake.
            let (spied, forged_to, struck, fresh) = (
                spied.clone(),
                format!("{}:7400", lan_ips[A[0]]),
                format!("{}:7400", lan_ips[A[1]]),
                format!("{}:7400", lan_ips[A[2]]),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let mut forged = vec![0, 48];
                forged.extend_from_slice(&[0x77; 48]);
                let to_forgery = reply_len(&forged_to, &forged).await;
                // Public Hellos, one strike each, until the address is suspended.
                let mut hello = vec![0, 0, 0, 59, 1];
                hello.extend_from_slice(b"SHOL\x00\x01");
                hello.extend_from_slice(&[0u8; 52]);
                let mut to_hello = Vec::new();
                for _ in 0..shoal_agent::transfer::gate::STRIKES {
                    to_hello.push(reply_len(&struck, &hello).await);
                }
                // The agent closes, then strikes: give it a moment.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (struck_hold, fresh_hold) = tokio::join!(hold(&struck), hold(&fresh));
                let mut s = spied.lock().unwrap();
                s.reply_to_hello = to_hello;
                s.reply_to_forgery = Some(to_forgery);
                s.struck_hold = Some(struck_hold);
                s.fresh_hold = Some(fresh_hold);
            });
        }
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, browse.recv_async()).await {
            if let mdns_sd::ServiceEvent::ServiceResolved(info) = event {
                let mut s = spied.lock().unwrap();
                s.names.insert(info.get_fullname().to_owned());
                for p in info.get_properties().iter() {
                    s.txt.insert(p.to_string());
                }
            }
        }
        let _ = mdns.shutdown();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_swarm_is_invisible_and_vendors_keep_apart() {
    shoal_tests::require(
        netns::available(),
        "creating network namespaces needs root and iproute2",
    );
    shoal_tests::require(
        std::path::Path::new("/usr/bin/tcpdump").exists(),
        "the capture needs tcpdump (apt-get install tcpdump)",
    );
    let mut lan = Lan::new(SPY + 1).expect("build the test LAN");
    let ips: Vec<String> = (0..=SPY).map(|i| lan.host_ip(i)).collect();
    let a = Vendor::start_product("private-a", &ips[0], lan.listen_on(0, 8443), PRODUCT_A).await;
    let b = Vendor::start_product("private-b", &ips[0], lan.listen_on(0, 8444), PRODUCT_B).await;
    for v in [&a, &b] {
        random_file(&v.dir.join("update.bin"), LEN, 11);
        v.release(&VERSION.replace('"', ""), &[v.dir.join("update.bin")]);
    }
    let key = a.dir.join("swarm.key");
    std::fs::write(
        &key,
        format!("{}\n", SwarmKey::from_bytes([0x42; 32]).to_text()),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // The capture: everything to, from or multicast past private agent 1.
    let pcap = a.dir.join("agent1.pcap");
    let filter = format!("host {} or multicast", ips[A[0]]);
    let capture: Vec<String> = [
        "-i",
        "eth0",
        "-U",
        "-s",
        "0",
        "-w",
        pcap.to_str().unwrap(),
        &filter,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lan.spawn(
        A[0],
        "/usr/bin/tcpdump",
        &capture,
        Stdio::null(),
        Stdio::null(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let spied = Arc::new(Mutex::new(Spied::default()));
    let spy_thread = {
        let (ips, spied) = (ips.clone(), spied.clone());
        lan.spawn_thread_in(SPY, move || spy(ips, spied, Duration::from_secs(40)))
    };
    let agent_dir = |h: usize| if A.contains(&h) { &a } else { &b };
    for h in A.iter().chain(&B).copied() {
        let v = agent_dir(h);
        let mut args: Vec<String> = [
            "SHOAL_LOG=info",
            BIN,
            "fetch",
            &v.url,
            "--trust",
            v.keys.join("trust/1.json").to_str().unwrap(),
            "--channel",
            "stable",
            "--out",
            v.dir.join(&format!("agent{h}")).to_str().unwrap(),
            "--listen",
            &format!("{}:7400", ips[h]),
            "--interface",
            "eth0",
            "--group",
            GROUP,
            "--ca",
            v.cert.to_str().unwrap(),
            "--seed-secs",
            "60",
            "--origin-grace",
            "3",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if A.contains(&h) {
            args.extend(["--swarm-key".to_owned(), key.to_str().unwrap().to_owned()]);
        }
        let out = std::fs::File::create(v.dir.join(&format!("agent{h}.out"))).unwrap();
        let log = std::fs::File::create(v.dir.join(&format!("agent{h}.log"))).unwrap();
        lan.spawn(h, "/usr/bin/env", &args, Stdio::from(out), Stdio::from(log));
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    for h in A.iter().chain(&B).copied() {
        let file = agent_dir(h).dir.join(&format!("agent{h}/update.bin"));
        while !file.exists() {
            let log = std::fs::read_to_string(agent_dir(h).dir.join(&format!("agent{h}.log")));
            assert!(
                Instant::now() < deadline,
                "agent {h} did not finish: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let the spy's probes and browsing run their course.
    spy_thread.join().expect("spy thread");
    let (a_sent, b_sent) = (a.metrics.bytes_total(), b.metrics.bytes_total());
    lan.terminate_all();
    a.stop();
    b.stop();

    // Each vendor's agents fed each other: about one copy per vendor from its origin.
    for h in A.iter().chain(&B).copied() {
        let v = agent_dir(h);
        assert!(
            read(&v.dir.join(&format!("agent{h}/update.bin"))) == read(&v.dir.join("update.bin")),
            "agent {h} bytes"
        );
        let pct = peer_percent(&v.dir.join(&format!("agent{h}.out")), h);
        assert!(pct > 10.0, "agent {h} got {pct}% from peers");
    }
    let (fa, fb) = (a_sent as f64 / LEN as f64, b_sent as f64 / LEN as f64);
    eprintln!("origin A {fa:.2} F, origin B {fb:.2} F");
    assert!(fa < 1.5 && fb < 1.5, "origins sent {fa:.2} F and {fb:.2} F");

    let s = spied.lock().unwrap();
    eprintln!("spy: {s:?}");
    let dials = |port: u16, hosts: &[usize]| -> usize {
        hosts
            .iter()
            .map(|h| {
                s.dials
                    .get(&(port, ips[*h].parse().unwrap()))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    };
    assert_eq!(
        dials(7400, &[1, 2, 3, 4, 5]),
        0,
        "someone dialled a made-up tag"
    );
    assert_eq!(dials(7401, &A), 0, "a private agent dialled a public tag");
    assert!(
        dials(7401, &B) > 0,
        "vendor B's agents dial a host with their tag"
    );
    assert_eq!(
        s.reply_to_hello,
        vec![0; usize::from(shoal_agent::transfer::gate::STRIKES)],
        "a private agent answered a public Hello"
    );
    assert_eq!(
        s.reply_to_forgery,
        Some(50),
        "a private agent answers a forged handshake with a decoy second message only"
    );
    let (struck, fresh) = (
        s.struck_hold
            .flatten()
            .expect("the spy reached the refusing agent"),
        s.fresh_hold
            .flatten()
            .expect("the spy reached another agent"),
    );
    assert!(
        struck < Duration::from_secs(2) && fresh > Duration::from_secs(5),
        "the refusing agent held the spy {struck:?}, another {fresh:?}"
    );
    // Names are random to the spy, and the TXT record says only the version of the format.
    let agents_seen = s
        .names
        .iter()
        .filter(|n| !n.starts_with("shoal-5a5a") && !n.starts_with("shoal-3c3c"))
        .count();
    assert!(agents_seen >= 5, "the spy resolved {:?}", s.names);
    for n in &s.names {
        for word in [PRODUCT_A, PRODUCT_B, GROUP, "acme", "globex", "floor"] {
            assert!(!n.contains(word), "{n} names {word}");
        }
    }
    assert!(s.txt.iter().all(|t| t == "v=1"), "TXT records: {:?}", s.txt);
    // Vendor B's agents never reached a private agent's handshake (they do not
    // recognise A's names): no A agent logged a refusal of a B address.
    for h in A {
        let log = std::fs::read_to_string(a.dir.join(&format!("agent{h}.log"))).unwrap();
        for b in B {
            assert!(
                !log.lines()
                    .any(|l| l.contains("refused a peer") && l.contains(&ips[b])),
                "vendor B's agent {b} dialled private agent {h}: {log}"
            );
        }
    }
    let log = std::fs::read_to_string(a.dir.join("agent2.log")).unwrap();
    assert!(
        log.contains("refused a peer") && log.contains(&ips[SPY]),
        "the private agent logs the refusal: {log}"
    );

    // Nothing in clear on a private agent's link.
    let bytes = std::fs::read(&pcap).expect("the capture");
    assert!(
        bytes.len() > LEN / 2,
        "the capture holds the transfer ({} bytes)",
        bytes.len()
    );
    // The Hello frame's header and magic: 9 bytes no ciphertext matches by chance.
    let hello: &[u8] = b"\x00\x00\x00\x3b\x01SHOL";
    let words = [
        PRODUCT_A.as_bytes(),
        PRODUCT_B.as_bytes(),
        GROUP.as_bytes(),
        VERSION.as_bytes(),
        hello,
    ];
    for word in words {
        assert!(
            !bytes.windows(word.len()).any(|w| w == word),
            "the capture shows {} in clear",
            String::from_utf8_lossy(word)
        );
    }
}
