//! The swarm lab's quick mode, as a test of the lab itself: 4 agents, a small file, every
//! system. It checks that the instrument measures what it claims (plain HTTPS costs the
//! origin exactly N copies; nothing finishes faster than the Kumar–Ross bound; every copy
//! is compared with the published file; records serialise), not how fast anything is.
//! Needs root, iproute2, curl and aria2c (CI installs them); elsewhere each test fails
//! and says so.

use shoal_tests::lab::{Bins, Lab, Record, Scenario, System, kumar_ross_bound, report};
use shoal_tests::{TempDir, netns};

fn tools_present() -> bool {
    let has = |t: &str| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    netns::available() && has("curl") && has("aria2c")
}

fn scenario(delta_pct: Option<f64>, mib: u64) -> Scenario {
    Scenario {
        agents: 4,
        size: mib * 1024 * 1024,
        origin_mbit: 20,
        host_mbit: 200,
        late: None,
        slow: None,
        delta_pct,
        loss_pct: None,
        seed: 7,
    }
}

/// Checks that hold for any correct run of any system.
fn sane(r: &Record) {
    let sys = &r.system;
    assert!(r.verified, "{sys}: a copy differs from the published file");
    assert_eq!(
        r.finish_s.len(),
        r.agents,
        "{sys}: one finish time per agent"
    );
    for &f in &r.finish_s {
        assert!(
            f > 0.0 && f <= r.time_s,
            "{sys}: finish {f} outside (0, {}]",
            r.time_s
        );
    }
    // Nothing beats the physical bound; a lab that said so would be measuring wrong.
    assert!(
        r.time_s >= r.bound_s,
        "{sys}: {} s beats the bound {} s",
        r.time_s,
        r.bound_s
    );
    assert!((r.bound_ratio - r.time_s / r.bound_s).abs() < 1e-9);
    assert!(
        r.origin_link_bytes >= r.origin_bytes,
        "{sys}: the origin's link carried less than the bodies it sent"
    );
    assert!(
        r.agent_cpu_s > 0.0 && r.agent_max_rss_mib > 0.0,
        "{sys}: no process usage recorded"
    );
    let back: serde_json::Value = serde_json::from_str(&report::json_line(r)).expect("JSON");
    assert_eq!(back["system"], sys.as_str());
    assert_eq!(back["finish_s"].as_array().map(Vec::len), Some(r.agents));
}

#[test]
fn quick_mode_runs_every_system_and_measures_sensibly() {
    shoal_tests::require(
        tools_present(),
        "the lab needs root, iproute2, curl and aria2c",
    );
    let bins = Bins::build_for_test().expect("build the binaries under test");
    let work = TempDir::new("lab-quick");
    let mut lab = Lab::new(bins, scenario(None, 4), work.path()).expect("build the lab");
    let records = lab
        .run_all(&System::ALL, |r| eprintln!("{}", report::json_line(r)))
        .expect("every system completes");
    assert_eq!(records.len(), System::ALL.len());
    for r in &records {
        sane(r);
        // Each agent's link carried at least one copy (none held anything before).
        assert!(
            r.agent_rx_copies >= 0.99,
            "{}: {}",
            r.system,
            r.agent_rx_copies
        );
    }
    let by = |name: &str| records.iter().find(|r| r.system == name).expect(name);
    // curl fetches everything from the origin: exactly N copies of body bytes.
    let https = by("https");
    assert_eq!(
        https.origin_bytes,
        4 * https.size_bytes,
        "HTTPS must cost N copies"
    );
    // A BitTorrent swarm whose only seed is the origin takes at least one copy from it.
    assert!(by("aria2-256k").origin_copies >= 1.0 && by("aria2-1m").origin_copies >= 1.0);
    // Shoal's own claim, loosely (the benchmark reports the figure): the LAN shares.
    let shoal = by("shoal").origin_copies;
    assert!(shoal < 2.0, "shoal: the origin sent {shoal} copies");
    let table = report::markdown(&records);
    assert_eq!(table.lines().count(), 2 + records.len(), "{table}");
}

#[test]
fn quick_delta_mode_starts_from_the_previous_release() {
    shoal_tests::require(
        tools_present(),
        "the lab needs root, iproute2, curl and aria2c",
    );
    let bins = Bins::build_for_test().expect("build the binaries under test");
    let work = TempDir::new("lab-delta");
    // 8 MiB: about 32 pieces, so 5 % changed in 8 places leaves most of them unchanged.
    let mut lab = Lab::new(bins.clone(), scenario(Some(5.0), 8), &work.join("a")).expect("lab");
    let shoal = lab.run(System::Shoal).expect("shoal completes");
    eprintln!("{}", report::json_line(&shoal));
    sane(&shoal);
    // Agents held v1, so each received well under a copy of v2.
    let rx = shoal.agent_rx_copies;
    assert!(rx < 0.6, "shoal agents received {rx} copies each");
    // Shoal must run first: its agents fetch v1 through the channel before v2 exists.
    let mut late = Lab::new(bins, scenario(Some(5.0), 4), &work.join("b")).expect("lab");
    let https = late.run(System::Https).expect("https");
    sane(&https);
    assert_eq!(
        https.origin_bytes,
        4 * https.size_bytes,
        "curl reuses nothing"
    );
    let err = late
        .run(System::Shoal)
        .expect_err("shoal after v2 is published");
    assert!(err.contains("Shoal must run first"), "{err}");
}

#[test]
fn the_bound_and_system_names() {
    // 64 MiB behind 20 Mbit/s: the origin's uplink dominates.
    let b = kumar_ross_bound(64.0 * 1048576.0, 20, 200, 16);
    assert!((b - 26.843_545_6).abs() < 1e-6, "{b}");
    // A fast origin and slow agents: the agents' own links dominate.
    assert!((kumar_ross_bound(1e6, 1000, 8, 3) - 1.0).abs() < 1e-9);
    for s in System::ALL {
        assert_eq!(System::parse(&s.name()), Ok(s));
    }
    assert_eq!(
        System::parse("aria2-4m"),
        Ok(System::Aria2 { piece_kib: 4096 })
    );
    assert!(
        System::parse("wget")
            .unwrap_err()
            .contains("unknown system")
    );
}

#[test]
fn quick_loss_mode_drops_packets_and_everyone_still_completes() {
    let has_nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    shoal_tests::require(
        tools_present() && has_nft,
        "the lab's loss mode needs root, iproute2, curl, aria2c and nft",
    );
    let bins = Bins::build_for_test().expect("build the binaries under test");
    let work = TempDir::new("lab-loss");
    let sc = Scenario {
        loss_pct: Some(2.0),
        ..scenario(None, 4)
    };
    let mut lab = Lab::new(bins, sc, work.path()).expect("build the lab");
    let r = lab
        .run(System::Shoal)
        .expect("shoal completes through loss");
    eprintln!("{}", report::json_line(&r));
    sane(&r);
    assert_eq!(r.loss_pct, Some(2.0));
    // The loss rules really dropped packets (and TCP recovered from it).
    assert!(lab.dropped_packets() > 0, "no packet was dropped");
}

#[test]
fn the_bound_with_slow_agents_counts_their_links() {
    use shoal_tests::lab::{SlowHosts, kumar_ross_bound_mixed};
    // 8 of 16 agents at 20 Mbit/s behind a 20 Mbit/s origin: the slow downlinks and the
    // origin tie.
    let sc = Scenario {
        agents: 16,
        host_mbit: 200,
        slow: Some(SlowHosts {
            agents: 8,
            mbit: 20,
            marked: true,
        }),
        ..scenario(None, 32)
    };
    assert!((sc.bound_s() - 32.0 * 1048576.0 * 8.0 / 20e6).abs() < 1e-9);
    assert_eq!((sc.host_mbit(7), sc.host_mbit(8)), (20, 200));
    // Equal links: the same as the plain bound.
    let equal = kumar_ross_bound_mixed(1e6, 20, &[200; 16]);
    assert!((equal - kumar_ross_bound(1e6, 20, 200, 16)).abs() < 1e-12);
}
