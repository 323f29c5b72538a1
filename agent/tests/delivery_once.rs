//! Regression tests of the agent-core issue (#8): the daemon delivers and installs a
//! release exactly once, across restarts and across a publisher `refresh` that re-signs
//! the same release; a failed delivery is logged with its cause and retried soon, not
//! taken for a shutdown.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Vendor, now, read};
use shoal_agent::config::{ApiConfig, Config, MdnsConfig};
use tokio::sync::watch;

fn config(v: &Vendor, log: &Path) -> Config {
    Config {
        origin: v.url.clone(),
        trust: v.keys.join("trust/1.json"),
        state_dir: v.dir.join("state"),
        releases_dir: v.dir.join("releases"),
        listen: "127.0.0.1:0".parse().unwrap(),
        origin_ca: v.cert.clone(),
        poll_interval_secs: 1,
        install_command: format!("echo \"$SHOAL_RELEASE_VERSION\" >> {}", log.display()),
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
    }
}

async fn wait_until(what: &str, secs: u64, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn installs(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn floor_version(cfg: &Config) -> u64 {
    shoal_agent::delivery::read_floor(cfg).map_or(0, |f| f.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installer_runs_once_across_restarts_and_refreshes() {
    let v = Vendor::start("install-once").await;
    let src = v.source("src/tool.bin", 2_000_000, 3);
    v.release("1.0", std::slice::from_ref(&src));
    let log = v.dir.join("installs.log");
    let cfg = config(&v, &log);

    for round in 0..3 {
        let (stop, stopped) = watch::channel(false);
        let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
        wait_until("delivery", 60, || installs(&log) == "1.0\n").await;
        if round == 1 {
            // The vendor re-signs the unchanged release: a new manifest version.
            let before = floor_version(&cfg);
            shoal_publisher::refresh::run(&shoal_publisher::refresh::RefreshOptions {
                keys: v.keys.clone(),
                repo: v.repo.clone(),
                channels: Vec::new(),
                expires_in: 86400,
                now: now(),
            })
            .unwrap();
            wait_until("the refreshed manifest", 30, || {
                floor_version(&cfg) > before
            })
            .await;
        }
        // Several polls of the unchanged channel.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.send_replace(true);
        daemon.await.unwrap().unwrap();
        assert_eq!(installs(&log), "1.0\n", "round {round}: installed again");
    }
    assert_eq!(read(&cfg.releases_dir.join("1.0/tool.bin")), read(&src));
    v.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_upgraded_from_before_delivery_records_does_not_install_again() {
    let v = Vendor::start("upgraded").await;
    let src = v.source("src/tool.bin", 1_000_000, 5);
    v.release("1.0", std::slice::from_ref(&src));
    let log = v.dir.join("installs.log");
    let cfg = config(&v, &log);
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    wait_until("delivery", 60, || installs(&log) == "1.0\n").await;
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    // What an agent of the previous version left: the floor and the release, no record.
    let record = cfg.state_dir.join("delivered/1.0.toml");
    std::fs::remove_file(&record).unwrap();

    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    wait_until("the migrated record", 30, || record.exists()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    assert_eq!(installs(&log), "1.0\n", "installed again after the upgrade");
    assert_eq!(read(&cfg.releases_dir.join("1.0/tool.bin")), read(&src));
    v.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_that_moves_the_release_away_runs_once() {
    let v = Vendor::start("moved").await;
    let src = v.source("src/tool.bin", 1_000_000, 9);
    v.release("1.0", std::slice::from_ref(&src));
    let log = v.dir.join("installs.log");
    let mut cfg = config(&v, &log);
    let moved = v.dir.join("installed");
    cfg.install_command = format!(
        "mv \"$SHOAL_RELEASE_DIR\" {} && echo \"$SHOAL_RELEASE_VERSION\" >> {}",
        moved.display(),
        log.display()
    );
    for round in 0..2 {
        let (stop, stopped) = watch::channel(false);
        let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
        wait_until("delivery", 60, || installs(&log) == "1.0\n").await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.send_replace(true);
        daemon.await.unwrap().unwrap();
        assert_eq!(installs(&log), "1.0\n", "round {round}: installed again");
    }
    assert_eq!(read(&moved.join("tool.bin")), read(&src));
    // Still seeded: its pieces were not collected with the directory gone.
    let pieces = std::fs::read_dir(cfg.state_dir.join("pieces"))
        .unwrap()
        .count();
    assert!(pieces > 0, "the current release's pieces were deleted");
    v.stop();
}

/// A release that cannot finish (the origin lost its artifact, no peer has it) must not
/// hide the fixed release published after it: the daemon keeps polling and switches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_cannot_finish_does_not_hide_the_next() {
    let v = Vendor::start("superseded").await;
    let broken = v.source("src1/tool.bin", 1_000_000, 6);
    v.release("1.0", std::slice::from_ref(&broken));
    std::fs::remove_dir_all(v.repo.join("artifacts")).unwrap();
    let log = v.dir.join("installs.log");
    let cfg = config(&v, &log);
    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(installs(&log), "", "1.0 cannot have been delivered");
    let fixed = v.source("src2/tool.bin", 1_000_000, 7);
    v.release("1.1", std::slice::from_ref(&fixed));
    wait_until("the fixed release", 45, || installs(&log) == "1.1\n").await;
    assert_eq!(read(&cfg.releases_dir.join("1.1/tool.bin")), read(&fixed));
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    v.stop();
}

/// Log lines of this test process, for checking what the daemon said.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_logged_and_retried_soon() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let v = Vendor::start("retry").await;
    let src = v.source("src/tool.bin", 2_000_000, 4);
    v.release("1.0", std::slice::from_ref(&src));
    let log = v.dir.join("installs.log");
    let mut cfg = config(&v, &log);
    // Polls are an hour apart: only the failure's own retry can deliver in time.
    cfg.poll_interval_secs = 3600;
    // A file where the incoming directory must go: the first delivery fails.
    std::fs::create_dir_all(&cfg.releases_dir).unwrap();
    let blocker = cfg.releases_dir.join(".incoming-1.0");
    std::fs::write(&blocker, b"in the way").unwrap();

    let (stop, stopped) = watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    let said = || String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    wait_until("a logged failure", 60, || {
        said().contains("channel check failed")
    })
    .await;
    assert!(
        said().contains(".incoming-1.0"),
        "the cause is not in the log: {}",
        said()
    );
    std::fs::remove_file(&blocker).unwrap();
    wait_until("the retried delivery", 20, || installs(&log) == "1.0\n").await;
    assert_eq!(read(&cfg.releases_dir.join("1.0/tool.bin")), read(&src));
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    v.stop();
}
