//! A stolen release key recovered by a new trust document, for an agent that can reach
//! only its peers (the hardening issue): the vendor rotates the release key and
//! publishes a release signed by the new one; an agent that lost its origin learns the
//! new trust document from a peer (`TrustOffer`), keeps it, verifies the new manifest
//! under it, and delivers the release from the peer.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fleet::free_port;
use common::throttle::Throttle;
use common::{Vendor, now, read};
use shoal_agent::config::{ApiConfig, Config, MdnsConfig};
use shoal_publisher::keygen::{RotateOptions, rotate};
use shoal_publisher::keystore::KeyRole;
use tokio::sync::watch;

fn config(v: &Vendor, name: &str, origin: String, listen: std::net::SocketAddr) -> Config {
    let root = v.dir.join(name);
    Config {
        origin,
        trust: v.keys.join("trust/1.json"),
        state_dir: root.join("state"),
        releases_dir: root.join("releases"),
        listen,
        origin_ca: v.cert.clone(),
        poll_interval_secs: 1,
        install_command: format!(
            "echo \"$SHOAL_RELEASE_VERSION\" >> {}",
            root.join("installs.log").display()
        ),
        origin_grace_secs: 0.0,
        mdns: MdnsConfig {
            enabled: false,
            ..MdnsConfig::default()
        },
        api: ApiConfig {
            enabled: false,
            ..ApiConfig::default()
        },
        ..Config::default()
    }
}

async fn wait_for(what: &str, secs: u64, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The vendor rotates its release key (trust 2) and re-signs the channel with the new
/// one, as after a theft.
fn rotate_release_key(v: &Vendor) {
    rotate(&RotateOptions {
        keys: v.keys.clone(),
        role: KeyRole::Release,
        count: 1,
        threshold: 1,
        expires_in: 86400,
        manifest_expires_in: 86400,
        repo: Some(v.repo.clone()),
        now: now(),
    })
    .unwrap();
}

fn installs(root: &Path) -> String {
    std::fs::read_to_string(root.join("installs.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_the_origin_follows_a_key_rotation_through_a_peer() {
    let v = Vendor::start("trust-gossip").await;
    let one = v.source("v1/tool.bin", 3_000_000, 31);
    v.release("1", std::slice::from_ref(&one));

    // A reaches the origin; B reaches it through a relay that will go away.
    let origin_addr = v.url.trim_start_matches("https://").parse().unwrap();
    let relay = Throttle::start(origin_addr, 1 << 30).await;
    let (a_port, b_port) = (free_port(), free_port());
    let mut a = config(&v, "a", v.url.clone(), a_port);
    a.peers = vec![b_port];
    let mut b = config(&v, "b", format!("https://{}", relay.addr), b_port);
    b.peers = vec![a_port];
    let (stop, stopped) = watch::channel(false);
    let ta = tokio::spawn(shoal_agent::daemon::run(a.clone(), stopped.clone()));
    let tb = tokio::spawn(shoal_agent::daemon::run(b.clone(), stopped));
    let (a_root, b_root) = (v.dir.join("a"), v.dir.join("b"));
    wait_for("both deliver release 1", 60, || {
        installs(&a_root) == "1\n" && installs(&b_root) == "1\n"
    })
    .await;

    // B loses the origin for good.
    drop(relay);
    // The release key leaks: the vendor rotates it (trust 2) and signs release 2 with
    // the new key only.
    rotate_release_key(&v);
    let two = v.source("v2/tool.bin", 3_000_000, 32);
    v.release("2", std::slice::from_ref(&two));

    wait_for("A delivers release 2 from the origin", 60, || {
        installs(&a_root) == "1\n2\n"
    })
    .await;
    wait_for("B delivers release 2 from A", 60, || {
        installs(&b_root) == "1\n2\n"
    })
    .await;
    stop.send_replace(true);
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();

    assert_eq!(read(&b_root.join("releases/2/tool.bin")), read(&two));
    assert_eq!(
        read(&b_root.join("state/trust/2.json")),
        read(&v.repo.join("trust/2.json")),
        "B did not keep the trust document it learned"
    );
    v.stop();
}

/// A peer offers a running agent manifests it must not take: one signed by another
/// vendor's keys, one with a flipped byte, the current one again, then a flood of junk.
/// Nothing changes: no switch, no install, the version floor stays, and the flood
/// closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_old_and_junk_manifest_offers_change_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let v = Vendor::start("bad-offers").await;
    let one = v.source("v1/tool.bin", 1_000_000, 41);
    v.release("1", std::slice::from_ref(&one));
    let port = free_port();
    let cfg = config(&v, "a", v.url.clone(), port);
    let root = v.dir.join("a");
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    let floor_file = root.join("state/floor-stable.toml");
    wait_for("release 1 delivered", 60, || {
        installs(&root) == "1\n" && floor_file.exists()
    })
    .await;
    let floor = read(&floor_file);

    // Another vendor (other keys, same product name) signs a release 2.
    let other = Vendor::start("bad-offers-other").await;
    let two = other.source("v2/tool.bin", 1_000_000, 42);
    other.release("2", std::slice::from_ref(&two));
    let forged = read(&other.repo.join("channels/stable.json"));
    let current = read(&v.repo.join("channels/stable.json"));
    let mut flipped = forged.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;

    let (release, pieces) = v.current_release();
    let mut s = common::reader::join_and_stop_reading(port, release, pieces, 0x33).await;
    let mut offers = Vec::new();
    for m in [forged, flipped, current] {
        shoal_protocol::wire::Message::ManifestOffer(m).encode(&mut offers);
    }
    s.write_all(&offers).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A flood of distinct junk offers.
    let mut junk = Vec::new();
    for i in 0..200u32 {
        let body = format!("{{\"junk\":{i}}}").into_bytes();
        shoal_protocol::wire::Message::ManifestOffer(body).encode(&mut junk);
    }
    let _ = s.write_all(&junk).await;
    // The agent closes the flooding connection (reads end, or writes fail).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the junk flood was not closed within 10 s");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(installs(&root), "1\n", "an offered manifest was acted on");
    assert_eq!(
        read(&root.join("state/floor-stable.toml")),
        floor,
        "the version floor moved"
    );
    assert!(!root.join("releases/2").exists());
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    other.stop();
    v.stop();
}

/// An agent that followed a key rotation (it keeps trust 2) meets an origin that
/// serves the chain and manifest from before it (a lagging CDN, or an attacker with the
/// retired release key): it refuses, keeps trust 2, and installs nothing signed with
/// the retired key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_serving_the_chain_from_before_a_rotation_is_refused() {
    let v = Vendor::start("trust-rollback").await;
    let one = v.source("v1/tool.bin", 1_000_000, 51);
    v.release("1", std::slice::from_ref(&one));
    let before = v.dir.join("repo-before-rotation");
    copy_dir(&v.repo, &before);
    rotate_release_key(&v);
    let two = v.source("v2/tool.bin", 1_000_000, 52);
    v.release("2", std::slice::from_ref(&two));

    let state = v.dir.join("pc/state");
    let mut o = v.agent("pc", vec![]);
    o.state = state.clone();
    let report = common::fetch_alone(o.clone()).await.unwrap();
    assert_eq!(read(&report.files[0]), read(&two));
    assert!(state.join("trust/2.json").exists());

    // The origin now serves what it served before the rotation.
    let after = v.dir.join("repo-after-rotation");
    std::fs::rename(&v.repo, &after).unwrap();
    std::fs::rename(&before, &v.repo).unwrap();
    o.out = v.dir.join("pc/out-again");
    let e = common::fetch_alone(o).await.unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.code, shoal_agent::error::exit::UNTRUSTED, "{e}");
    assert!(
        state.join("trust/2.json").exists(),
        "the kept trust was dropped"
    );
    assert!(!v.dir.join("pc/out-again/tool.bin").exists());
    v.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
