//! Several `shoal-agent run` daemons in-process, on loopback, each with its status API on
//! a port of its own, every one dialling the others (no multicast in the test's
//! namespace).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_agent::config::{ApiConfig, Config, MdnsConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Vendor;

/// A free loopback port (a small race with other tests; they bind port 0).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Running daemons.
pub struct Fleet {
    /// Their names.
    pub names: Vec<String>,
    /// Their status APIs.
    pub apis: Vec<SocketAddr>,
    /// Where each delivers releases.
    pub releases: Vec<PathBuf>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<shoal_agent::error::Result<()>>>,
}

impl Fleet {
    /// Starts one daemon per name, following `v`'s stable channel every second.
    pub fn start(v: &Vendor, names: &[&str]) -> Fleet {
        let peers: Vec<SocketAddr> = names.iter().map(|_| free_port()).collect();
        let apis: Vec<SocketAddr> = names.iter().map(|_| free_port()).collect();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut releases = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let cfg = Config {
                origin: v.url.clone(),
                trust: v.keys.join("trust/1.json"),
                state_dir: v.dir.join(&format!("{name}/state")),
                releases_dir: v.dir.join(&format!("{name}/releases")),
                listen: peers[i],
                peers: peers
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect(),
                origin_ca: v.cert.clone(),
                poll_interval_secs: 1,
                origin_grace_secs: 0.5,
                mdns: MdnsConfig {
                    enabled: false,
                    ..MdnsConfig::default()
                },
                name: (*name).to_owned(),
                api: ApiConfig {
                    listen: apis[i],
                    price_per_gb: 0.5,
                    currency: "EUR".into(),
                    ..ApiConfig::default()
                },
                ..Config::default()
            };
            releases.push(cfg.releases_dir.clone());
            tasks.push(tokio::spawn(shoal_agent::daemon::run(cfg, stopped.clone())));
        }
        Fleet {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            apis,
            releases,
            stop,
            tasks,
        }
    }

    /// Waits until every daemon delivered `version` (its directory exists).
    pub async fn delivered(&self, version: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        for r in &self.releases {
            while !r.join(version).exists() {
                assert!(
                    Instant::now() < deadline,
                    "{} not delivered in time",
                    r.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// GETs `path` from daemon `i`'s API and parses its JSON.
    pub async fn json(&self, i: usize, path: &str) -> serde_json::Value {
        let body = shoal_agent::api::client::get(self.apis[i], path, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_slice(&body).unwrap()
    }

    /// Daemon `i`'s status once it shows its release complete (its snapshot is refreshed
    /// once a second, and at once on completion).
    pub async fn settled(&self, i: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.json(i, "/api/v1/status").await;
            if st["current"]["complete"] == true {
                return st;
            }
            assert!(Instant::now() < deadline, "never complete: {st:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs `path` from daemon `i`'s API as text.
    pub async fn text(&self, i: usize, path: &str) -> String {
        let body = shoal_agent::api::client::get(self.apis[i], path, None)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        String::from_utf8(body).unwrap()
    }

    /// Waits until daemon `i`'s swarm view shows every daemon complete on `release`,
    /// their reports included (a peer reports every 10 s).
    pub async fn everyone_complete(
        &self,
        i: usize,
        release: &str,
        limit: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.json(i, "/api/v1/swarm").await;
            let bytes = v["releases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["release"] == release)
                .map(|r| r["bytes"].as_u64().unwrap());
            // Complete, and its report says so too: every byte accounted for.
            let done = v["agents"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| {
                    let got = a["bytes_from_peers"].as_u64().unwrap()
                        + a["bytes_from_origin"].as_u64().unwrap();
                    a["release"] == release && a["percent"] == 100.0 && Some(got) == bytes
                })
                .count();
            if done == self.names.len() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "swarm view never complete: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every daemon and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}
