//! The admin's view of a running swarm: three daemons fetch a release through each other;
//! each one's status API, swarm view, `/metrics` and the `status`/`swarm` commands agree
//! with what the agents and the origin actually moved.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Vendor;
use common::fleet::{Fleet, free_port};
use shoal_tests::{assert_exit, require, run_bin};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");

/// Runs the CLI; the test's daemons keep the runtime's other worker meanwhile.
fn agent(args: &[&str]) -> std::process::Output {
    tokio::task::block_in_place(|| run_bin(Path::new(BIN), args))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The value of the sample `line_start` (name and labels) in a Prometheus text.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {line_start} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_agrees_with_what_the_swarm_moved() {
    let v = Vendor::start("status-api").await;
    let src = v.source("src/update.bin", 6_000_000, 5);
    v.release("3.1", std::slice::from_ref(&src));
    let fleet = Fleet::start(&v, &["alpha", "bravo", "charlie"]);
    fleet.delivered("3.1", Duration::from_secs(60)).await;

    // Each agent's own account: the whole release, every byte from peers or the origin.
    let mut statuses = Vec::new();
    for i in 0..3 {
        let st = fleet.settled(i).await;
        let c = &st["current"];
        assert_eq!(st["name"], fleet.names[i]);
        assert_eq!(c["release"], "3.1");
        assert_eq!(c["bytes"], 6_000_000);
        assert_eq!(c["complete"], true, "{st:#}");
        assert_eq!(c["pieces_held"], c["piece_count"]);
        assert_eq!(
            u(&c["bytes_from_peers"]) + u(&c["bytes_from_origin"]),
            6_000_000
        );
        assert_eq!(st["releases_delivered"], 1);
        assert_eq!(st["kept"][0]["release"], "3.1");
        assert_eq!(st["last_poll"]["ok"], true);
        assert!(st["last_error"].is_null(), "{st:#}");
        assert_eq!(c["peers"].as_array().unwrap().len(), 2, "{st:#}");
        statuses.push(st);
    }
    let from_origin: u64 = statuses
        .iter()
        .map(|s| u(&s["current"]["bytes_from_origin"]))
        .sum();
    let from_peers: u64 = statuses
        .iter()
        .map(|s| u(&s["current"]["bytes_from_peers"]))
        .sum();
    // The origin's own counter: what the agents say came from it, no less.
    let served = v.served_under("/artifacts/");
    assert!(
        served >= from_origin,
        "origin sent {served}, agents say {from_origin}"
    );
    assert!(from_peers > 0, "nothing moved between peers");

    // The swarm view of one agent: all three, each complete, the sums of their reports.
    let swarm = fleet
        .everyone_complete(0, "3.1", Duration::from_secs(30))
        .await;
    let r = &swarm["releases"][0];
    assert_eq!(
        (r["agents"].as_u64(), r["complete_agents"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(u(&swarm["origin_bytes_saved"]), from_peers, "{swarm:#}");
    assert_eq!(u(&swarm["bytes_from_origin"]), from_origin);
    let offload = swarm["offload_percent"].as_f64().unwrap();
    let expected = 100.0 * from_peers as f64 / (from_peers + from_origin) as f64;
    assert!((offload - expected).abs() < 1e-9 && offload <= 100.0);
    let money = swarm["money_saved"].as_f64().unwrap();
    assert!((money - from_peers as f64 / 1e9 * 0.5).abs() < 1e-9);
    let names: Vec<&str> = swarm["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);

    // /metrics carries the same counters.
    let metrics = fleet.text(0, "/metrics").await;
    let st = &statuses[0];
    assert_eq!(
        sample(
            &metrics,
            "shoal_agent_received_bytes_total{source=\"peers\"}"
        ),
        u(&st["totals"]["bytes_from_peers"]) as f64
    );
    assert_eq!(
        sample(
            &metrics,
            "shoal_agent_received_bytes_total{source=\"origin\"}"
        ),
        u(&st["totals"]["bytes_from_origin"]) as f64
    );
    assert_eq!(sample(&metrics, "shoal_agent_release_complete"), 1.0);
    assert_eq!(
        sample(
            &metrics,
            "shoal_agent_swarm_complete_agents{release=\"3.1\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(&metrics, "shoal_agent_releases_delivered_total"),
        1.0
    );

    // The commands an admin types.
    let api = fleet.apis[1].to_string();
    fleet
        .everyone_complete(1, "3.1", Duration::from_secs(30))
        .await;
    let out = agent(&["status", "--api", &api]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bravo (shoal-agent"), "{text}");
    assert!(text.contains("complete, seeding"), "{text}");
    assert!(text.contains("peers: 2 connected"), "{text}");
    let out = agent(&["swarm", "--api", &api]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["alpha", "bravo (this agent)", "charlie"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"));
        assert!(row.trim_end().ends_with("100%"), "{row}");
    }
    let out = agent(&["swarm", "--api", &api, "--json"]);
    assert_exit(&out, 0);
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["name"], "bravo");

    // No daemon there: a plain answer, not a stack of errors.
    let dead = free_port().to_string();
    let out = agent(&["status", "--api", &dead]);
    assert_exit(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no shoal-agent daemon answers"), "{err}");

    // The metrics pass Prometheus's own checker (CI installs `promtool`).
    let dir = shoal_tests::TempDir::new("promtool");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output();
    require(promtool.is_ok(), "promtool (Debian package prometheus)");
    let out = promtool.unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.stop().await;
}
