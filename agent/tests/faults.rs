//! The machine's own faults (the hardening issue, docs/SECURITY.md "Faults"): the agent
//! killed at random moments, a file changed on disk between verification and install.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::throttle::Throttle;
use common::{Vendor, fetch_alone, read};
use shoal_agent::config::{ApiConfig, Config, MdnsConfig};
use shoal_agent::origin::OriginClient;
use shoal_agent::store::Store;
use shoal_protocol::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

/// A small deterministic generator (xorshift64*), so a failing run can be replayed
/// with its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Files in `dir` whose names end with `suffix`, and the others.
fn split_names(dir: &Path, suffix: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.to_string_lossy().ends_with(suffix) {
            with.push(p);
        } else {
            without.push(p);
        }
    }
    (with, without)
}

/// The verified pieces in the store: name and length.
fn stored_pieces(root: &Path) -> HashSet<(String, u64)> {
    let (_, stored) = split_names(&root.join("state/pieces"), ".tmp");
    stored
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Digest::from_hex(&name)?;
            Some((name, std::fs::metadata(p).ok()?.len()))
        })
        .collect()
}

/// The agent's config: `origin` (the vendor's origin, or a relay in front of it).
fn config_file(v: &Vendor, origin: &str, root: &Path, install_log: &Path) -> PathBuf {
    let text = format!(
        r#"origin = "{origin}"
trust = "{trust}"
state_dir = "{root}/state"
releases_dir = "{root}/releases"
listen = "127.0.0.1:0"
origin_ca = "{ca}"
poll_interval_secs = 1
origin_grace_secs = 0.0
install_command = "touch {root}/installing-$SHOAL_RELEASE_VERSION; sleep 0.8; echo \"$SHOAL_RELEASE_VERSION\" >> {log}"
[mdns]
enabled = false
[api]
enabled = false
"#,
        trust = v.keys.join("trust/1.json").display(),
        root = root.display(),
        ca = v.cert.display(),
        log = install_log.display(),
    );
    let path = root.join("agent.toml");
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// What must hold after every kill: every piece stored under its hash is that piece;
/// temporary files do not pile up; every delivered release directory holds exactly the
/// published files; no release was installed twice.
fn check_state(root: &Path, sources: &[(String, PathBuf)], kill: usize) {
    let pieces = root.join("state/pieces");
    let (tmps, stored) = split_names(&pieces, ".tmp");
    assert!(
        tmps.len() <= 64,
        "kill {kill}: {} temporary files pile up in the store",
        tmps.len()
    );
    for p in stored {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(d) = Digest::from_hex(&name) {
            assert_eq!(
                Digest::of(&read(&p)),
                d,
                "kill {kill}: piece {name} is stored but is not that piece"
            );
        }
    }
    for (version, src) in sources {
        let dir = root.join("releases").join(version);
        if dir.is_dir() {
            let file = dir.join("tool.bin");
            assert!(
                file.exists() && read(&file) == read(src),
                "kill {kill}: release {version} is delivered half or wrong"
            );
        }
    }
    let installs = std::fs::read_to_string(root.join("installs.log")).unwrap_or_default();
    let mut seen = HashSet::new();
    for line in installs.lines() {
        assert!(
            seen.insert(line.to_owned()),
            "kill {kill}: release {line} was installed twice:\n{installs}"
        );
    }
}

/// The agent (`shoal-agent run`, a real process) is killed with SIGKILL at 100 random
/// moments while it follows a channel that gets ten releases; after each kill the
/// state is checked (`check_state`), and in the end the last release is delivered and
/// installed once (or its install was cut off by a kill and is not run again). The
/// moments come from a seed: `SHOAL_KILL_SEED=<n>` replays a run (but for every fourth
/// run, killed once its install command started, which waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_the_agent_never_counts_half_work() {
    const KILLS: usize = 100;
    // Each kill may cost what was in flight from the origin: `origin_parallel` pieces
    // of at most 1 MiB, and the documents fetched again at the next start.
    const WASTE: u64 = 9 << 20;
    const RELEASES: usize = 10;
    const LEN: usize = 8_000_000;
    let seed = std::env::var("SHOAL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001u64);
    eprintln!("SHOAL_KILL_SEED={seed}");
    let mut rng = Rng(seed | 1);

    let v = Vendor::start("sigkill").await;
    let root = v.dir.join("agent");
    let installs = root.join("installs.log");
    // Through a relay at 1 MB/s per connection (the agent opens 8), a release takes
    // about a second: runs are cut off before, during and after downloads, deliveries
    // and installs (the install command takes 0.8 s).
    let origin_addr = v.url.trim_start_matches("https://").parse().unwrap();
    let relay = Throttle::start(origin_addr, 1_000_000).await;
    let config = config_file(&v, &format!("https://{}", relay.addr), &root, &installs);
    let log = root.join("agent.log");
    let mut sources = Vec::new();
    let mut most_waste = 0;
    let mut mid_download = 0;
    let began = Instant::now();
    for kill in 0..KILLS {
        // A new release every KILLS / RELEASES kills.
        if kill % (KILLS / RELEASES) == 0 {
            let n = kill / (KILLS / RELEASES) + 1;
            let src = v.source(&format!("v{n}/tool.bin"), LEN, 100 * n as u64 + 1);
            v.release(&n.to_string(), std::slice::from_ref(&src));
            sources.push((n.to_string(), src));
        }
        let (held, sent) = (stored_pieces(&root), v.metrics.bytes_total());
        let mut agent = start(&config, &log);
        // Every fourth run is killed while an install command runs, if one starts
        // within 3 s (the random moments alone rarely hit its 0.8 s).
        let marker = root.join(format!("installing-{}", sources.last().unwrap().0));
        let delay = if kill % 4 == 3 && !marker.exists() {
            let began = Instant::now();
            while !marker.exists() && began.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            rng.below(300)
        } else {
            rng.below(1500)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        agent.kill().unwrap(); // SIGKILL
        agent.wait().unwrap();
        check_state(&root, &sources, kill);
        // What the origin sent that did not end up as a new verified piece.
        let new: u64 = stored_pieces(&root)
            .into_iter()
            .filter(|p| !held.contains(p))
            .map(|(_, len)| len)
            .sum();
        let waste = (v.metrics.bytes_total() - sent).saturating_sub(new);
        most_waste = most_waste.max(waste);
        let current = &sources.last().unwrap().0;
        if new > 0 && !root.join("releases").join(current).exists() {
            mid_download += 1;
        }
        assert!(
            waste <= WASTE,
            "kill {kill}: {waste} bytes from the origin went to no new piece (the bound is {WASTE})"
        );
    }
    let killing = began.elapsed();

    // Left alone, it ends on the last release.
    let mut agent = start(&config, &log);
    let last = RELEASES.to_string();
    let record = root.join(format!("state/delivered/{last}.toml"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !record.exists() {
        assert!(
            Instant::now() < deadline,
            "the last release was not delivered: {:?}",
            std::fs::read_to_string(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An install under way ends within its 0.8 s; one cut off by the last kill stays
    // "started" (it is not run again).
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    check_state(&root, &sources, KILLS);
    let installed = std::fs::read_to_string(&installs).unwrap_or_default();
    let cut_offs = std::fs::read_dir(root.join("state/delivered"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|r| r.contains("\"started\"")))
        .count();
    let origin = v.metrics.bytes_total();
    eprintln!(
        "{KILLS} kills in {killing:.1?}, {mid_download} of them mid-download, {cut_offs} during an install; installs: {:?}; origin sent {:.2} × the {RELEASES} releases; \
         at most {} KiB of one run's origin bytes went to no new piece",
        installed.lines().collect::<Vec<_>>(),
        origin as f64 / (RELEASES * LEN) as f64,
        most_waste >> 10
    );
    assert!(
        mid_download >= 10 && cut_offs >= 3,
        "only {mid_download} kills came mid-download and {cut_offs} during an install: the \
         test proves little"
    );
    assert_eq!(
        read(&root.join(format!("releases/{last}/tool.bin"))),
        read(&sources[RELEASES - 1].1)
    );
    let cut_off = std::fs::read_to_string(&record).is_ok_and(|r| r.contains("\"started\""));
    assert!(
        installed.lines().any(|l| l == last) || cut_off,
        "the last release was neither installed nor cut off: {installed}"
    );
    v.stop();
}

/// A piece file changed in the store after it was verified: the assembled file is
/// hashed before the install command runs, the install is not run, nothing is left in
/// the releases directory, and the daemon then fetches the piece again and installs the
/// release once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_verification_is_not_installed() {
    let v = Vendor::start("swapped").await;
    let src = v.source("src/tool.bin", 6_000_000, 9);
    v.release("1.0", std::slice::from_ref(&src));
    let root = v.dir.join("victim");
    let installs = root.join("installs.log");
    let mut o = v.agent("victim", Vec::new());
    o.state = root.join("state");
    fetch_alone(o).await.unwrap();

    // Someone on the machine rewrites one verified piece.
    let pieces = root.join("state/pieces");
    let (_, stored) = split_names(&pieces, ".tmp");
    let victim = stored.iter().max().unwrap();
    let mut bytes = read(victim);
    bytes[100] ^= 0x55;
    std::fs::write(victim, bytes).unwrap();

    let cfg = Config {
        origin: v.url.clone(),
        trust: v.keys.join("trust/1.json"),
        state_dir: root.join("state"),
        releases_dir: root.join("releases"),
        listen: "127.0.0.1:0".parse().unwrap(),
        origin_ca: v.cert.clone(),
        poll_interval_secs: 1,
        install_command: format!("echo \"$SHOAL_RELEASE_VERSION\" >> {}", installs.display()),
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
    };
    let origin = OriginClient::new(&v.url, Some(&v.cert), false).unwrap();
    let release = shoal_agent::release::load(&origin, &cfg.trust, None, "stable")
        .await
        .unwrap();
    let store = Store::open(&cfg.state_dir).unwrap();
    let err = shoal_agent::delivery::deliver(&cfg, &Arc::new(release), &store)
        .await
        .expect_err("a changed file was delivered");
    eprintln!("{}", err.message);
    assert!(err.message.contains("changed on disk"), "{}", err.message);
    assert!(
        !installs.exists(),
        "the install command ran on a changed file"
    );
    assert!(
        !cfg.releases_dir.join("1.0").exists(),
        "the changed release was left in place"
    );

    // The daemon re-verifies the store, fetches the piece again and delivers once.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(shoal_agent::daemon::run(cfg.clone(), stopped));
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&installs).unwrap_or_default() != "1.0\n" {
        assert!(Instant::now() < deadline, "the release was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send_replace(true);
    daemon.await.unwrap().unwrap();
    assert_eq!(read(&cfg.releases_dir.join("1.0/tool.bin")), read(&src));
    v.stop();
}

/// The disk fills while the agent downloads (a tmpfs, filled by another writer): the
/// download stops with a clear error, every piece in the store is still a verified
/// piece and no partial artifact is left; once space is freed, a new run fetches only
/// what is missing. Needs root (mounts a tmpfs); elsewhere it fails, naming what is
/// missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_download_stops_it_cleanly_and_it_resumes() {
    shoal_tests::require(
        shoal_tests::netns::available(),
        "mounting a tmpfs needs root (and this harness iproute2)",
    );
    const LEN: usize = 16_000_000;
    let v = Vendor::start("disk-fills").await;
    let src = v.source("src/big.bin", LEN, 11);
    v.release("1", std::slice::from_ref(&src));
    let disk = v.dir.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success());
    shoal_tests::require(mounted, "mount -t tmpfs failed here");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(disk.clone());

    // A slow origin, so the disk can fill in the middle.
    let origin_addr = v.url.trim_start_matches("https://").parse().unwrap();
    let relay = Throttle::start(origin_addr, 500_000).await;
    let mut o = v.agent("pc", vec![]);
    o.origin = format!("https://{}", relay.addr);
    o.out = disk.join("out");
    o.state = disk.join("state");
    let pieces = disk.join("state/pieces");
    let run = tokio::spawn(fetch_alone(o.clone()));
    // Once a few pieces are in, another program takes every free byte.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_bytes(&pieces) < 3 << 20 {
        assert!(Instant::now() < deadline, "no piece arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let e = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the agent did not stop on a full disk")
        .unwrap()
        .expect_err("the download succeeded on a full disk");
    eprintln!("{e}");
    assert_eq!(e.code, shoal_agent::error::exit::IO, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("No space left"),
        "the error does not say the disk is full: {text}"
    );
    let (tmps, stored) = split_names(&pieces, ".tmp");
    assert!(tmps.is_empty(), "temporary files left: {tmps:?}");
    for p in &stored {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let d = Digest::from_hex(&name).expect("only pieces in the store");
        assert_eq!(Digest::of(&read(p)), d, "piece {name} is not that piece");
    }
    assert!(
        !o.out.join("big.bin").exists(),
        "an artifact was left on a full disk"
    );
    let kept = stored_bytes(&pieces);

    // Space is freed: a new run takes what is missing only.
    std::fs::remove_file(&filler).unwrap();
    let before = v.metrics.bytes_total();
    o.origin = v.url.clone();
    let report = fetch_alone(o).await.unwrap();
    let second = v.metrics.bytes_total() - before;
    eprintln!(
        "kept {} KiB of pieces through the full disk; the second run took {} KiB from the origin",
        kept >> 10,
        second >> 10
    );
    assert_eq!(read(&report.files[0]), read(&src));
    assert!(
        second <= LEN as u64 - kept + (256 << 10),
        "the second run fetched {second} bytes; {kept} of {LEN} were kept"
    );
    v.stop();
}

/// Bytes of verified-looking piece files (named by a digest) in `pieces`.
fn stored_bytes(pieces: &Path) -> u64 {
    let (_, stored) = split_names(pieces, ".tmp");
    stored
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(Digest::from_hex)
                .is_some()
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
