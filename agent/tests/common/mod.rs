//! In-process fixtures for agent tests: vendor keys, releases, and a real HTTPS origin
//! (`shoal-publisher`'s server) on a loopback port.

#![allow(dead_code)]

pub mod evil;
pub mod fleet;
pub mod liar;
pub mod reader;
pub mod throttle;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::fetch::{FetchOptions, FetchReport, run};
use shoal_agent::transfer::{TransferOptions, WRITE_TIMEOUT};
use shoal_protocol::swarm::SwarmConfig;
use shoal_publisher::keygen::{KeygenOptions, keygen};
use shoal_publisher::release::{ReleaseOptions, run as release};
use shoal_publisher::serve::{self, Metrics};
use shoal_tests::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Keys, a release directory and a running HTTPS origin serving it.
pub struct Vendor {
    pub dir: TempDir,
    pub keys: PathBuf,
    pub repo: PathBuf,
    pub url: String,
    pub cert: PathBuf,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

impl Vendor {
    pub async fn start(tag: &str) -> Vendor {
        Self::start_on(tag, "127.0.0.1").await
    }

    /// Like [`Vendor::start`], with the origin listening on `ip`.
    pub async fn start_on(tag: &str, ip: &str) -> Vendor {
        let l = std::net::TcpListener::bind((ip, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        Self::start_with(tag, ip, l).await
    }

    /// Like [`Vendor::start`], serving on `listener` (reached as `ip`).
    pub async fn start_with(tag: &str, ip: &str, listener: std::net::TcpListener) -> Vendor {
        Self::start_product(tag, ip, listener, "acme").await
    }

    /// Like [`Vendor::start_with`], for a vendor whose trust names `product`.
    pub async fn start_product(
        tag: &str,
        ip: &str,
        listener: std::net::TcpListener,
        product: &str,
    ) -> Vendor {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = TempDir::new(tag);
        let (keys, repo) = (dir.join("keys"), dir.join("repo"));
        keygen(&KeygenOptions {
            keys: keys.clone(),
            product: product.into(),
            root_keys: 1,
            root_threshold: 1,
            expires_in: 86400,
            now: now(),
        })
        .unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        let cert = serve::tls::self_signed(&dir.join("tls"), &[ip.to_owned()]).unwrap();
        let tls = cert.server_config().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let metrics = Arc::new(Metrics::default());
        let (stop, mut stopped) = watch::channel(false);
        {
            let (repo, metrics) = (repo.clone(), metrics.clone());
            tokio::spawn(async move {
                serve::run(listener, tls, &repo, metrics, async move {
                    let _ = stopped.changed().await;
                })
                .await
            });
        }
        Vendor {
            dir,
            keys,
            repo,
            url,
            cert: cert.cert_path.clone(),
            metrics,
            stop,
        }
    }

    /// A file of `len` deterministic random bytes at `rel` in the vendor's workspace.
    pub fn source(&self, rel: &str, len: usize, seed: u64) -> PathBuf {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        shoal_tests::random_file(&path, len, seed);
        path
    }

    /// Publishes `files` as `version` on `stable`.
    pub fn release(&self, version: &str, files: &[PathBuf]) {
        self.release_for(version, files, "any", "any");
    }

    /// Publishes `files` as `version` on `stable`, for the platform `os`/`arch`.
    pub fn release_for(&self, version: &str, files: &[PathBuf], os: &str, arch: &str) {
        release(&ReleaseOptions {
            keys: self.keys.clone(),
            repo: self.repo.clone(),
            channel: "stable".into(),
            version: version.into(),
            files: files.to_vec(),
            os: os.into(),
            arch: arch.into(),
            expires_in: 86400,
            quiet: true,
            now: now(),
        })
        .unwrap();
    }

    /// Fetch options for an agent whose files live under `name`.
    pub fn agent(&self, name: &str, peers: Vec<std::net::SocketAddr>) -> FetchOptions {
        FetchOptions {
            origin: self.url.clone(),
            trust: self.keys.join("trust/1.json"),
            channel: "stable".into(),
            out: self.dir.join(&format!("{name}/out")),
            state: self.dir.join(&format!("{name}/state")),
            ca: Some(self.cert.clone()),
            danger_allow_http: false,
            // The test process runs in the machine's own namespace: no multicast here.
            discovery: None,
            transfer: TransferOptions {
                swarm: SwarmConfig {
                    origin_grace: Duration::from_millis(300),
                    ..SwarmConfig::default()
                },
                peers,
                older: Vec::new(),
                gossip: None,
                write_timeout: WRITE_TIMEOUT,
                overlay: shoal_protocol::swarm::PeerSetConfig::default(),
                me: shoal_agent::transfer::new_peer_id(false).unwrap(),
                identity: shoal_agent::transfer::Identity {
                    name: name.to_owned(),
                    started: std::time::Instant::now(),
                },
                private: None,
            },
        }
    }

    /// The current release's id and piece count (a single-artifact release): what a
    /// fake peer needs to pass the handshake and claim every piece.
    pub fn current_release(&self) -> (shoal_protocol::Digest, u32) {
        let manifest = read(&self.repo.join("channels/stable.json"));
        let mut indexes = std::fs::read_dir(self.repo.join("indexes")).unwrap();
        let idx = indexes.next().unwrap().unwrap().path();
        assert!(indexes.next().is_none(), "one artifact expected");
        let pieces = shoal_protocol::index::PieceIndex::parse(&read(&idx)).unwrap();
        (
            shoal_protocol::Digest::of(&manifest),
            pieces.pieces().len() as u32,
        )
    }

    /// Body bytes the origin sent for files whose path starts with `prefix` (from its
    /// Prometheus counters), e.g. `/indexes/`.
    pub fn served_under(&self, prefix: &str) -> u64 {
        self.metrics
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("shoal_origin_file_sent_bytes_total{path=\""))
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// A handle that stops the origin when set to true.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Runs one agent with no peers to completion and returns its report.
pub async fn fetch_alone(o: FetchOptions) -> shoal_agent::error::Result<FetchReport> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(o, l, Some(tx), stopped, |_| {}));
    let outcome = tokio::time::timeout(Duration::from_secs(120), rx).await;
    stop.send_replace(true);
    let result = task.await.unwrap();
    match outcome {
        Ok(Ok(_)) => result,
        _ => match result {
            Err(e) => Err(e),
            Ok(_) => panic!("agent did not report completion"),
        },
    }
}

/// The share of bytes from peers that agent `n`'s `fetch` summary at `path` states
/// ("… from peers (67%) …"); prints the line.
pub fn peer_percent(path: &Path, n: usize) -> f64 {
    let summary = std::fs::read_to_string(path).unwrap();
    eprintln!("agent {n}: {}", summary.lines().next().unwrap_or(""));
    summary
        .split("from peers (")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("agent {n} summary: {summary}"))
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
