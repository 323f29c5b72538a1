//! `shoal-agent run` in-process: follows the channel, delivers each new release
//! atomically, runs the install command once per release, keeps the newest K, and
//! refuses a rolled-back manifest.

mod common;

use std::time::{Duration, Instant};

use common::{Vendor, read};
use shoal_agent::config::{ApiConfig, Config, MdnsConfig};
use tokio::sync::watch;

async fn wait_for(path: &std::path::Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_channel_delivers_installs_and_refuses_rollback() {
    let v = Vendor::start("daemon").await;
    let a = v.source("src1/tool.bin", 3_000_000, 1);
    v.release("1.0", std::slice::from_ref(&a));

    let releases = v.dir.join("releases");
    let log = v.dir.join("installed.log");
    let cfg = Config {
        origin: v.url.clone(),
        trust: v.keys.join("trust/1.json"),
        state_dir: v.dir.join("state"),
        releases_dir: releases.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        origin_ca: v.cert.clone(),
        poll_interval_secs: 1,
        keep_releases: 1,
        install_command: format!(
            "test -f tool.bin && echo \"$SHOAL_RELEASE_VERSION\" >> {}",
            log.display()
        ),
        origin_grace_secs: 0.0,
        mdns: MdnsConfig {
            enabled: false,
            ..MdnsConfig::default()
        },
        // A port of its own: tests run side by side.
        api: ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ApiConfig::default()
        },
        ..Config::default()
    };
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg, stopped));

    let t0 = Instant::now();
    wait_for(&releases.join("1.0/tool.bin"), 60).await;
    eprintln!("1.0 delivered after {:?}", t0.elapsed());
    assert_eq!(read(&releases.join("1.0/tool.bin")), read(&a));

    let b = v.source("src2/tool.bin", 3_000_000, 2);
    v.release("1.1", std::slice::from_ref(&b));
    let t1 = Instant::now();
    wait_for(&releases.join("1.1/tool.bin"), 60).await;
    eprintln!("1.1 delivered {:?} after its release", t1.elapsed());
    assert_eq!(read(&releases.join("1.1/tool.bin")), read(&b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !releases.join("1.0").exists(),
        "keep_releases = 1 prunes 1.0"
    );
    // Polls of an unchanged channel fetch the manifest only, never the indexes again.
    let indexes_before = v.served_under("/indexes/");
    assert!(indexes_before > 0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        v.served_under("/indexes/"),
        indexes_before,
        "a poll refetched indexes"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1.0\n1.1\n");

    // A mirror serves the old manifest again: refused, nothing delivered or installed.
    std::fs::copy(
        v.repo.join("channels/stable/1.json"),
        v.repo.join("channels/stable.json"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!releases.join("1.0").exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1.0\n1.1\n");

    let t2 = Instant::now();
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    eprintln!("stopped in {:?}", t2.elapsed());
    v.stop();
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Two daemons deliver 1.0. Release 1.1 appears; A fetches it from the origin, then the
/// origin dies. B, which does not poll again, learns 1.1 from A (manifest and indexes
/// over the peer protocol, verified under the vendor's keys) and fetches it from A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_release_reaches_a_peer_while_the_origin_is_down() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("SHOAL_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_test_writer()
        .try_init();
    let v = Vendor::start("gossip").await;
    eprintln!("gossip test dir {}", v.dir.path().display());
    let one = v.source("src1/app.bin", 2_000_000, 11);
    v.release("1.0", std::slice::from_ref(&one));
    let (pa, pb) = (free_port(), free_port());
    let daemon = |name: &str, listen, peer, poll| Config {
        origin: v.url.clone(),
        trust: v.keys.join("trust/1.json"),
        state_dir: v.dir.join(&format!("{name}/state")),
        releases_dir: v.dir.join(&format!("{name}/releases")),
        listen,
        peers: vec![peer],
        origin_ca: v.cert.clone(),
        poll_interval_secs: poll,
        keep_releases: 2,
        origin_grace_secs: 0.0,
        mdns: MdnsConfig {
            enabled: false,
            ..MdnsConfig::default()
        },
        // A port of its own: tests run side by side.
        api: ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ApiConfig::default()
        },
        ..Config::default()
    };
    let (stop, stopped) = watch::channel(false);
    let a = tokio::spawn(shoal_agent::daemon::run(
        daemon("a", pa, pb, 1),
        stopped.clone(),
    ));
    let b = tokio::spawn(shoal_agent::daemon::run(daemon("b", pb, pa, 3600), stopped));
    wait_for(&v.dir.join("a/releases/1.0/app.bin"), 60).await;
    wait_for(&v.dir.join("b/releases/1.0/app.bin"), 60).await;

    let two = v.source("src2/app.bin", 2_000_000, 12);
    v.release("1.1", std::slice::from_ref(&two));
    wait_for(&v.dir.join("a/releases/1.1/app.bin"), 60).await;
    v.stop();
    let served = v.metrics.bytes_total();

    wait_for(&v.dir.join("b/releases/1.1/app.bin"), 60).await;
    assert_eq!(read(&v.dir.join("b/releases/1.1/app.bin")), read(&two));
    assert_eq!(
        v.metrics.bytes_total(),
        served,
        "B took nothing from the origin"
    );
    stop.send_replace(true);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}
