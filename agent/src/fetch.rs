//! `shoal-agent fetch`: one download of a channel's current release. Verify the
//! documents, run the release's [`transfer`](crate::transfer) (static peers and mDNS
//! discovery, started while the documents load), write the artifacts, then keep seeding
//! until told to stop.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::discovery::DiscoveryConfig;
use crate::error::{Error, Result, exit};
use crate::origin::OriginClient;
use crate::release::Release;
use crate::store::Store;
use crate::transfer::{self, Progress, TransferOptions};

/// A one-shot fetch gives up when no piece arrived for this long while the origin
/// fails (a file it lacks, an error status): the error names the origin's failure, and
/// the verified pieces stay for the next run. (The daemon waits on, and shows the
/// failure in its status.)
pub const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// What `fetch` needs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Origin base URL.
    pub origin: String,
    /// The trust document shipped with the agent.
    pub trust: PathBuf,
    /// Channel.
    pub channel: String,
    /// Where finished artifacts go.
    pub out: PathBuf,
    /// Piece store directory.
    pub state: PathBuf,
    /// Extra CA for the origin.
    pub ca: Option<PathBuf>,
    /// Allow a plain-HTTP origin.
    pub danger_allow_http: bool,
    /// mDNS discovery (None: static peers only).
    pub discovery: Option<DiscoveryConfig>,
    /// Peers, swarm tunables, gossip.
    pub transfer: TransferOptions,
}

impl FetchOptions {
    /// A client for the configured origin.
    pub fn origin_client(&self) -> Result<OriginClient> {
        OriginClient::new(&self.origin, self.ca.as_deref(), self.danger_allow_http)
    }
}

/// The outcome of a fetch.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// Release version string.
    pub release: String,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Final counters.
    pub progress: Progress,
}

/// Downloads the release, writes the artifacts, then keeps seeding until `shutdown`
/// turns true. `done` receives the report as soon as the artifacts are in place.
pub async fn run(
    o: FetchOptions,
    listener: TcpListener,
    done: Option<tokio::sync::oneshot::Sender<FetchReport>>,
    mut shutdown: watch::Receiver<bool>,
    on_progress: impl FnMut(&Progress) + Send + 'static,
) -> Result<FetchReport> {
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("listener", e))?
        .port();
    let discovered = o
        .discovery
        .as_ref()
        .map(|cfg| transfer::discover(cfg, port, o.transfer.me))
        .transpose()?;
    let origin = o.origin_client()?;
    let release =
        Arc::new(crate::release::load(&origin, &o.trust, Some(&o.state), &o.channel).await?);
    crate::space::check(&o.state, &release)?;
    let store = Store::open(&o.state)?;
    let t = transfer::start(
        o.transfer.clone(),
        release.clone(),
        store.clone(),
        origin,
        listener,
        discovered,
    )
    .await?;
    let began = std::time::Instant::now();
    let finished = tokio::select! {
        r = t.complete_or_stall(on_progress, Some(STALL)) => Some(r),
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let report = match finished {
        Some(Ok(progress)) => {
            tracing::info!(took = ?began.elapsed(), "every piece verified and stored");
            deliver(&release, &store, &o.out, progress).await
        }
        Some(Err(e)) => Err(e),
        None => Err(Error::new(
            exit::UNAVAILABLE,
            "stopped before the release was complete",
            "verified pieces are kept in the state directory; run again to resume",
        )),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            t.stop().await;
            return Err(e);
        }
    };
    if let Some(tx) = done {
        let _ = tx.send(report.clone());
    }
    let _ = shutdown.wait_for(|s| *s).await;
    t.stop().await;
    Ok(report)
}

/// Writes the artifacts of a complete release into `out` and logs the totals.
async fn deliver(
    release: &Arc<Release>,
    store: &Store,
    out: &std::path::Path,
    progress: Progress,
) -> Result<FetchReport> {
    let files = store
        .assemble_async(release.clone(), out.to_owned())
        .await?;
    let total = release.total_len().max(1);
    let c = progress.counters;
    tracing::info!(
        release = %release.manifest.body().release,
        from_peers = c.from_peers,
        from_origin = c.from_origin,
        peer_share = format!("{:.0}%", 100.0 * c.from_peers as f64 / total as f64),
        "release finished"
    );
    Ok(FetchReport {
        release: release.manifest.body().release.clone(),
        files,
        progress,
    })
}
