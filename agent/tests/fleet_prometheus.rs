//! The fleet view: three `shoal-agent run` daemons in network namespaces fetch a release
//! (mDNS between them, the origin on the LAN); a real Prometheus on the host scrapes them
//! with the shipped scrape config (`packaging/prometheus/prometheus.yml`) and the API
//! token, and every panel query of the shipped Grafana dashboard
//! (`packaging/grafana/shoal-fleet.json`), evaluated through Prometheus's HTTP API,
//! returns what the agents' own status APIs imply. Needs root, iproute2 and Debian's
//! `prometheus`; elsewhere it fails and says so.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Vendor;
use serde_json::Value;
use shoal_tests::netns::{self, Lan};
use shoal_tests::{ChildGuard, TempDir, require};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-agent");
const TOKEN: &str = "fleet-test-token-0123456789abcdef";
const AGENTS: usize = 3;
const LEN: usize = 4_000_000;

fn packaging(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_owned(), code.to_owned())
}

/// An agent's status, read from the host (another host to it: the token is needed).
fn status(ip: &str) -> Value {
    let url = format!("http://{ip}:7401/api/v1/status");
    let (body, code) = curl(&["-H", &format!("Authorization: Bearer {TOKEN}"), &url]);
    assert_eq!(code, "200", "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Evaluates `expr` now; the result by its labels' values (joined), `""` for none.
fn query(prom: &str, expr: &str) -> BTreeMap<String, f64> {
    let url = format!("http://{prom}/api/v1/query");
    let (body, code) = curl(&["-G", "--data-urlencode", &format!("query={expr}"), &url]);
    assert_eq!(code, "200", "{expr}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let labels: Vec<&str> = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "instance" && *k != "job")
                .map(|(_, v)| v.as_str().unwrap())
                .collect();
            let value: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            (labels.join(","), value)
        })
        .collect()
}

fn one(v: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([(String::new(), v)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_every_fleet_panel_to_what_the_agents_say() {
    require(netns::available(), "root and iproute2 (network namespaces)");
    let has_prometheus = Command::new("prometheus").arg("--version").output().is_ok();
    require(
        has_prometheus,
        "prometheus and promtool (Debian package prometheus)",
    );

    // Host 0 is the origin, hosts 1..=3 the agents; Prometheus runs on the host side.
    let mut lan = Lan::new(1 + AGENTS).expect("build the test LAN");
    let v = Vendor::start_with("fleet-prom", &lan.host_ip(0), lan.listen_on(0, 8443)).await;
    let src = v.source("src/fleet.bin", LEN, 21);
    v.release("4.0", std::slice::from_ref(&src));
    for i in 1..=AGENTS {
        let dir = v.dir.join(&format!("agent{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ip = lan.host_ip(i);
        let cfg = format!(
            "origin = \"{}\"\ntrust = \"{}\"\nstate_dir = \"{}\"\nreleases_dir = \"{}\"\n\
             listen = \"{ip}:7400\"\norigin_ca = \"{}\"\npoll_interval_secs = 3600\n\
             origin_grace_secs = 2.0\nname = \"agent-{i}\"\n\
             [mdns]\ninterfaces = [\"eth0\"]\n[api]\nlisten = \"{ip}:7401\"\ntoken = \"{TOKEN}\"\n",
            v.url,
            v.keys.join("trust/1.json").display(),
            dir.join("state").display(),
            dir.join("releases").display(),
            v.cert.display(),
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let args = [
            "run".to_owned(),
            "--config".into(),
            path.display().to_string(),
        ];
        lan.spawn(i, BIN, &args, Stdio::null(), Stdio::from(log));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 1..=AGENTS {
        let done = v.dir.join(&format!("agent{i}/releases/4.0"));
        while !done.exists() {
            assert!(
                Instant::now() < deadline,
                "agent {i} did not deliver; see its agent.log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The API refuses another host without the token.
    let (_, code) = curl(&[&format!("http://{}:7401/metrics", lan.host_ip(1))]);
    assert_eq!(code, "401");

    // Prometheus with the shipped scrape config: the example targets replaced by ours.
    let work = TempDir::new("prometheus");
    let token_file = work.join("shoal-api-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let example = packaging("prometheus/prometheus.yml");
    let targets: String = (1..=AGENTS)
        .map(|i| format!("          - {}:7401\n", lan.host_ip(i)))
        .collect();
    let example_targets = "          - 192.0.2.10:7401\n          - 192.0.2.11:7401\n";
    assert!(example.contains(example_targets) && example.contains("scrape_interval: 30s"));
    let mut config = example
        .replace(example_targets, &targets)
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace(
            "/etc/prometheus/shoal-api-token",
            &token_file.display().to_string(),
        );
    // The origin job needs the vendor's host name; this test checks the agents' side.
    let origin_job = config
        .find("  # The vendor's origin")
        .expect("the origin job");
    config.truncate(origin_job);
    let config_file = work.join("prometheus.yml");
    std::fs::write(&config_file, &config).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(work.join("prometheus.log")).unwrap();
    let _prometheus = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus"),
    );

    let ready = Instant::now() + Duration::from_secs(30);
    while curl(&[&format!("http://{prom}/-/ready")]).1 != "200" {
        assert!(
            Instant::now() < ready,
            "prometheus did not start; see {}",
            work.join("prometheus.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every panel of the shipped dashboard, against what the agents' APIs say.
    let dashboard: Value = serde_json::from_str(&packaging("grafana/shoal-fleet.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10, "the dashboard lost its panels");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Vec<Value> = (1..=AGENTS).map(|i| status(&lan.host_ip(i))).collect();
        let sum =
            |key: &str| -> f64 { st.iter().map(|s| s["totals"][key].as_f64().unwrap()).sum() };
        let (peers, origin) = (sum("bytes_from_peers"), sum("bytes_from_origin"));
        assert_eq!(
            peers + origin,
            (AGENTS * LEN) as f64,
            "every agent holds the release"
        );
        let n = AGENTS as f64;
        let polls_failed: f64 = st.iter().map(|s| s["polls_failed"].as_f64().unwrap()).sum();
        let delivered: f64 = st
            .iter()
            .map(|s| s["releases_delivered"].as_f64().unwrap())
            .sum();
        let expected: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::from([
            ("Fleet offload", one(100.0 * peers / (peers + origin))),
            ("Origin bytes saved", one(peers)),
            ("Bytes from the origin", one(origin)),
            ("Agents reporting", one(n)),
            (
                "Agents per release",
                BTreeMap::from([("4.0".to_owned(), n)]),
            ),
            (
                "Complete agents per release",
                BTreeMap::from([("4.0".to_owned(), n)]),
            ),
            (
                "Bytes by source",
                BTreeMap::from([("origin".to_owned(), origin), ("peers".to_owned(), peers)]),
            ),
            ("Uploaded to peers", one(sum("bytes_uploaded"))),
            ("Releases delivered", one(delivered)),
            ("Channel check errors", one(polls_failed)),
            ("Origin fetch failures", one(sum("origin_failures"))),
            ("Peers banned", one(sum("bans"))),
            ("Wasted bytes", one(sum("bytes_wasted"))),
        ]);
        let mut wrong = Vec::new();
        for p in panels {
            let title = p["title"].as_str().unwrap();
            let want = expected
                .get(title)
                .unwrap_or_else(|| panic!("panel {title:?} has no expectation in this test"));
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let got = query(&prom, expr);
                let same = got.len() == want.len()
                    && got.iter().all(|(k, v)| {
                        want.get(k)
                            .is_some_and(|w| (v - w).abs() <= 1e-6 * w.abs().max(1.0))
                    });
                if !same {
                    wrong.push(format!(
                        "{title}: {expr} = {got:?}, the agents say {want:?}"
                    ));
                }
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels disagree with the agents:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    lan.terminate_all();
}
