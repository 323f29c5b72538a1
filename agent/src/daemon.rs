//! `shoal-agent run`: follow a channel for good.
//!
//! Every poll (jittered ±10%) the agent loads and verifies the channel's manifest. One
//! that is not newer than the persisted version floor is ignored, a rollback or
//! equivocation is refused (and logged); a newer one has its indexes fetched and becomes
//! the current release: its [`transfer`](crate::transfer) runs with the LAN's help and,
//! once complete, the release is handed to [`delivery`](crate::delivery) (exactly once
//! per release content). The agent then keeps seeding it until the next one appears. A
//! manifest a peer offers (gossip) is verified under the current trust and floor and
//! switched to the same way, with or without the origin.
//!
//! A failed check or download is logged with its cause and retried after a backoff
//! (5 s, doubling, up to the poll interval); the pieces verified so far are kept.
//!
//! What the daemon does is recorded in a [`StatusHub`], which the local
//! [`api`](crate::api) serves (status, metrics, dashboard) while the daemon runs.

use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::index::IndexAssembly;
use shoal_protocol::manifest::{Acceptance, accept};
use shoal_protocol::swarm::SwarmConfig;
use shoal_protocol::wire::PeerId;
use shoal_protocol::{ChannelRef, Digest, Name, VerifiedManifest};
use tokio::sync::{mpsc, watch};

use crate::api::{self, Api};
use crate::config::Config;
use crate::delivery;
use crate::discovery::DiscoveryConfig;
use crate::error::{Error, Result, exit};
use crate::origin::OriginClient;
use crate::release::{Release, from_parts, load_indexes};
use crate::secure::SwarmKeys;
use crate::status::{Money, StatusHub};
use crate::store::Store;
use crate::transfer::{self, GossipEvent, Identity, Transfer, TransferOptions, WRITE_TIMEOUT};
use crate::trustchain::TrustChain;
use shoal_cli::unix_now;

/// How long the pushed indexes of an offered manifest may take to arrive.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Manifests and index parts from peers queued at most (manifests up to 1 MiB, index
/// parts 256 KiB; the node passes up only new manifests, and index parts only from the
/// peer that offered the last one); more are dropped until the daemon has looked.
const GOSSIP_QUEUE: usize = 64;

/// The first wait after a failure; it doubles up to the poll interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The release being seeded now.
struct Seeding {
    release: Arc<Release>,
    transfer: Transfer,
}

/// What the daemon keeps between checks.
struct Daemon {
    cfg: Config,
    origin: OriginClient,
    store: Store,
    seeding: Option<Seeding>,
    /// Releases delivered by this process (id, piece count): peers still on one of them
    /// are handed the current release.
    delivered: Vec<(Digest, u32)>,
    gossip_tx: mpsc::Sender<GossipEvent>,
    /// The last verdict on this machine's link (decided again for every transfer: a
    /// laptop may have docked since); a slow link makes its peer ids light.
    light: Option<bool>,
    /// What the status API shows.
    hub: Arc<StatusHub>,
    /// The private swarm's keys, if the config names a key file.
    private: Option<SwarmKeys>,
}

/// Runs until `shutdown` turns true.
pub async fn run(cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    // A key file that cannot be used stops the agent: falling back to a public swarm
    // would tell the LAN what the organisation meant to keep private.
    let private = if cfg.private.key_file.as_os_str().is_empty() {
        None
    } else {
        let keys = SwarmKeys::load(&cfg.private.key_file)?;
        tracing::info!(keys = ?keys.fingerprints(), "private swarm");
        Some(keys)
    };
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::io(cfg.state_dir.display(), e))?;
    std::fs::create_dir_all(&cfg.releases_dir)
        .map_err(|e| Error::io(cfg.releases_dir.display(), e))?;
    let (gossip_tx, mut gossip_rx) = mpsc::channel(GOSSIP_QUEUE);
    let name = if cfg.name.is_empty() {
        transfer::report::host_name()
    } else {
        cfg.name.clone()
    };
    let hub = Arc::new(
        StatusHub::new(
            &name,
            &cfg.channel,
            &cfg.origin,
            Money {
                price_per_gb: cfg.api.price_per_gb,
                currency: cfg.api.currency.clone(),
            },
        )
        .with_swarm_keys(
            private
                .as_ref()
                .map(SwarmKeys::fingerprints)
                .unwrap_or_default(),
        ),
    );
    if cfg.api.enabled {
        // Updates matter more than the view of them: without its port the agent runs on,
        // and tries the port again every 30 s (an address DHCP has not given yet, a port
        // another program holds for a while).
        let api = Arc::new(Api::new(hub.clone(), &cfg.api.token));
        tokio::spawn(api::serve_retrying(
            cfg.api.listen,
            api,
            hub.clone(),
            shutdown.clone(),
        ));
    }
    let ca = (!cfg.origin_ca.as_os_str().is_empty()).then(|| cfg.origin_ca.clone());
    let mut d = Daemon {
        light: None,
        hub,
        origin: OriginClient::new(&cfg.origin, ca.as_deref(), cfg.danger_allow_http)?,
        store: Store::open(&cfg.state_dir)?,
        cfg,
        seeding: None,
        delivered: Vec::new(),
        gossip_tx,
        private,
    };
    let mut failures: u32 = 0;
    let poll = Duration::from_secs(d.cfg.poll_interval_secs);
    loop {
        let wait = match d.check(&mut shutdown).await {
            Ok(again) => {
                failures = 0;
                // A download replaced by a newer release: fetch that one now.
                if again { Duration::ZERO } else { jitter(poll) }
            }
            Err(e) => {
                d.hub.error(&e);
                failures = failures.saturating_add(1);
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(poll);
                tracing::warn!(error = %e.message, note = %e.note, retry_in = ?backoff, "channel check failed");
                jitter(backoff)
            }
        };
        d.hub.next_poll(unix_now() + wait.as_secs());
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                _ = shutdown.changed() => break,
                Some(ev) = gossip_rx.recv() => {
                    // A peer handed over a trust document: the next one of the chain
                    // (a key rotation), verified, is kept and used for what follows.
                    if let GossipEvent::Trust { bytes, .. } = &ev {
                        d.learn_trust(bytes).await;
                    }
                    // A peer handed over a manifest: verify it and switch, origin or not.
                    if let GossipEvent::Manifest { peer, bytes } = ev {
                        match d.adopt_offer(peer, bytes, &mut gossip_rx, &mut shutdown).await {
                            Ok(true) => break, // replaced while downloading: check now
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(error = %e.message, "ignored a manifest offered by a peer");
                            }
                        }
                        // The wait went on meanwhile: say when it really ends.
                        let left = sleep.deadline().saturating_duration_since(tokio::time::Instant::now());
                        d.hub.next_poll(unix_now() + left.as_secs());
                    }
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    if let Some(s) = d.seeding.take() {
        s.transfer.stop().await;
        d.hub.transfer_stopped();
    }
    Ok(())
}

/// Sleeps until the next check during a download (jittered), telling the hub when.
async fn next_check(hub: &StatusHub, poll: Duration) {
    let wait = jitter(poll);
    hub.next_poll(unix_now() + wait.as_secs());
    tokio::time::sleep(wait).await;
}

/// ±10% around `d`, so a fleet does not poll in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.9 + 0.2 * r)
}

impl Daemon {
    /// Whether this machine's link is slow now (`link`); logged when the verdict changes.
    fn slow_link(&mut self) -> bool {
        let interfaces: &[String] = if self.cfg.mdns.enabled {
            &self.cfg.mdns.interfaces
        } else {
            &[]
        };
        let link = self.cfg.link.resolve(interfaces);
        if self.light != Some(link.light) {
            tracing::info!(
                slow = link.light,
                reason = %link.reason,
                "link: {}",
                if link.light {
                    "slow, origin fetches left to other agents where there are enough"
                } else {
                    "fast"
                }
            );
            self.light = Some(link.light);
        }
        link.light
    }

    fn transfer_options(&self, me: PeerId) -> TransferOptions {
        TransferOptions {
            swarm: SwarmConfig {
                origin_grace: Duration::from_secs_f64(self.cfg.origin_grace_secs),
                ..SwarmConfig::default()
            },
            peers: self.cfg.peers.clone(),
            older: Vec::new(),
            gossip: Some(self.gossip_tx.clone()),
            write_timeout: WRITE_TIMEOUT,
            overlay: shoal_protocol::swarm::PeerSetConfig::default(),
            me,
            identity: Identity {
                name: self.hub.name().to_owned(),
                started: self.hub.started(),
            },
            private: self.private.clone(),
        }
    }

    /// One channel check and the download it may start. The check's own outcome (the
    /// manifest loaded and accepted, or why not) is recorded as a poll; a failure after
    /// it (indexes, download, delivery) is an error, not a failed check. `Ok(true)`: the
    /// download was replaced by a newer release, to be fetched at once.
    async fn check(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<bool> {
        // The manifest decides; indexes (up to MiBs each) are fetched only for a release
        // we will switch to, so an unchanged channel costs the origin a few KiB a poll.
        let loaded = crate::release::load_current(
            &self.origin,
            &self.cfg.trust,
            Some(&self.cfg.state_dir),
            &self.cfg.channel,
        )
        .await;
        let wanted = loaded.and_then(|(chain, m)| Ok((self.wanted(&m)?, chain, m)));
        let (wanted, chain, manifest) = match wanted {
            Ok(w) => w,
            Err(e) => {
                self.hub.polled(Err(&e));
                return Err(e);
            }
        };
        let offered = format!(
            "release {} (version {})",
            manifest.body().release,
            manifest.body().version
        );
        if !wanted {
            self.hub.polled(Ok(format!("{offered} is current")));
            return Ok(false);
        }
        self.hub
            .polled(Ok(format!("the channel offers {offered}: fetching it")));
        let release = Arc::new(load_indexes(&self.origin, chain, manifest).await?);
        self.switch_to(release, shutdown).await
    }

    /// The newest trust chain this agent verified: the anchor and the successors kept
    /// under the state directory (from the origin or from peers).
    async fn kept_chain(&self) -> Result<TrustChain> {
        let (trust, state) = (self.cfg.trust.clone(), self.cfg.state_dir.clone());
        tokio::task::spawn_blocking(move || {
            let anchor = std::fs::read(&trust).map_err(|e| Error::io(trust.display(), e))?;
            TrustChain::load(&anchor, Some(&state))
        })
        .await
        .map_err(|e| Error::new(exit::IO, format!("loading the trust chain: {e}"), ""))?
    }

    /// A peer handed over a trust document: adopted (and kept) if it is the signed
    /// successor of the newest trust we hold; anything else is ignored.
    async fn learn_trust(&self, bytes: &[u8]) {
        let mut chain = match self.kept_chain().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot load the trust chain");
                return;
            }
        };
        match chain.extend(bytes) {
            Ok(()) => {
                tracing::info!(
                    version = chain.trust.version(),
                    "learned a newer trust document from a peer"
                );
                let state = self.cfg.state_dir.clone();
                let _ = tokio::task::spawn_blocking(move || chain.save(&state)).await;
            }
            Err(e) => tracing::debug!(error = %e, "ignored a trust document offered by a peer"),
        }
    }

    /// Whether the channel now offers a release newer than `release`.
    async fn superseded(&self, release: &Release) -> bool {
        let current = crate::release::load_current(
            &self.origin,
            &self.cfg.trust,
            Some(&self.cfg.state_dir),
            &self.cfg.channel,
        )
        .await;
        // A refused manifest (a rollback, an equivocation) is a failed check here too.
        let checked = current.and_then(|(_, m)| Ok((self.wanted(&m)?, m)));
        match checked {
            Ok((wanted, m)) => {
                let (b, mine) = (m.body(), release.manifest.body());
                let same = b.content_id() == mine.content_id();
                let newer = wanted && b.version > mine.version && !same;
                self.hub.polled(Ok(if newer {
                    format!("release {} (version {}) replaces the download", b.release, b.version)
                } else if same {
                    format!("release {} (version {}) is current; downloading it", b.release, b.version)
                } else {
                    format!(
                        "the channel offers release {} (version {}); downloading release {} (version {})",
                        b.release, b.version, mine.release, mine.version
                    )
                }));
                newer
            }
            Err(e) => {
                self.hub.polled(Err(&e));
                self.hub.error(&e);
                false
            }
        }
    }

    /// Whether `manifest` should become the current release: newer than the persisted
    /// floor, or the floor's own release when nothing is being seeded yet (a restart).
    /// A rollback or equivocation is an error.
    fn wanted(&self, manifest: &VerifiedManifest) -> Result<bool> {
        match accept(delivery::read_floor(&self.cfg).as_ref(), manifest) {
            Ok(Acceptance::Newer) => Ok(true),
            Ok(Acceptance::Current) => Ok(self.seeding.is_none()),
            Err(e) => Err(Error::new(
                exit::UNTRUSTED,
                format!("refused the channel's manifest: {e}"),
                "the origin or a mirror serves an older or conflicting release; nothing changed",
            )),
        }
    }

    /// Verifies a manifest a peer offered under the current trust and floor, collects
    /// its indexes from the peer's pushed `IndexData`, and switches to it.
    async fn adopt_offer(
        &mut self,
        offerer: PeerId,
        bytes: Vec<u8>,
        gossip_rx: &mut mpsc::Receiver<GossipEvent>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let Some(current) = self.seeding.as_ref().map(|s| s.release.clone()) else {
            return Ok(false); // nothing verified yet to judge an offer by
        };
        // The newest trust we hold: the current release's, or one learned since (from
        // the origin, or a peer's `TrustOffer` after a key rotation).
        let (trust, trust_chain) = match self.kept_chain().await {
            Ok(c) if c.trust.version() > current.trust.version() => (c.trust.clone(), c.offer()),
            _ => (current.trust.clone(), current.trust_chain.clone()),
        };
        let channel = Name::new(&self.cfg.channel)
            .map_err(|e| Error::new(exit::USAGE, format!("channel: {e}"), ""))?;
        let want = ChannelRef {
            product: trust.body().product.clone(),
            channel,
        };
        let manifest = VerifiedManifest::verify(&bytes, &trust, &want, unix_now())
            .map_err(|e| Error::new(exit::UNTRUSTED, format!("offered manifest: {e}"), ""))?;
        crate::release::for_this_platform(&manifest)?;
        if !matches!(
            accept(delivery::read_floor(&self.cfg).as_ref(), &manifest),
            Ok(Acceptance::Newer)
        ) {
            return Ok(false);
        }
        // Indexes arrive in order right after the offer; the assembly takes no more than
        // the verified manifest declares.
        let mut indexes = IndexAssembly::new(&manifest.body().artifacts);
        let deadline = tokio::time::Instant::now() + OFFER_TIMEOUT;
        while !indexes.is_complete() {
            let ev = tokio::time::timeout_at(deadline, gossip_rx.recv())
                .await
                .map_err(|_| Error::new(exit::UNAVAILABLE, "offered indexes did not arrive", ""))?;
            match ev {
                // Only the offering peer's parts: another peer cannot spoil them.
                Some(GossipEvent::Index {
                    peer,
                    index,
                    offset,
                    data,
                }) if peer == offerer => {
                    indexes.push(&index, offset, &data);
                }
                // The chain may still be arriving from another peer.
                Some(GossipEvent::Trust { bytes, .. }) => self.learn_trust(&bytes).await,
                Some(_) => {}
                None => return Err(Error::new(exit::UNAVAILABLE, "gossip channel closed", "")),
            }
        }
        let mut release = from_parts(trust, manifest, indexes.into_parts())?;
        release.trust_chain = trust_chain;
        let release = Arc::new(release);
        tracing::info!(release = %release.manifest.body().release, "learned a newer release from a peer");
        self.switch_to(release, shutdown).await
    }

    /// Makes `release` the current one if it is wanted: run its transfer, deliver it
    /// unless its content was delivered before (a restart, a re-signed release), and
    /// keep seeding it. `Ok(true)`: a newer release replaced it before it finished.
    async fn switch_to(
        &mut self,
        release: Arc<Release>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        if !self.wanted(&release.manifest)? {
            return Ok(false);
        }
        if let Some(s) = self.seeding.take() {
            s.transfer.stop().await;
            self.hub.transfer_stopped();
        }
        crate::space::check(&self.cfg.state_dir, &release)?;
        let listener = tokio::net::TcpListener::bind(self.cfg.listen)
            .await
            .map_err(|e| {
                Error::new(
                    exit::IO,
                    format!("cannot listen on {}: {e}", self.cfg.listen),
                    "change `listen`",
                )
            })?;
        let me = transfer::new_peer_id(self.slow_link())?;
        let discovered = if self.cfg.mdns.enabled {
            let cfg = DiscoveryConfig::new(
                self.cfg.mdns.interfaces.clone(),
                release.trust.body().product.as_str(),
                &self.cfg.mdns.group,
                self.private.as_ref(),
            );
            let port = listener
                .local_addr()
                .map_err(|e| Error::io("listener", e))?
                .port();
            Some(transfer::discover(&cfg, port, me)?)
        } else {
            None
        };
        let mut o = self.transfer_options(me);
        o.older = self
            .delivered
            .iter()
            .filter(|(id, _)| *id != release.id())
            .copied()
            .collect();
        let t = transfer::start(
            o,
            release.clone(),
            self.store.clone(),
            self.origin.clone(),
            listener,
            discovered,
        )
        .await?;
        self.hub.transfer_started(t.snapshot());
        let label = &release.manifest.body().release;
        let version = release.manifest.body().version;
        if delivery::is_delivered(&self.cfg, &release) {
            tracing::info!(release = %label, "already delivered; seeding it");
            delivery::finish(&self.cfg, &release).await?;
            self.hub
                .delivered(label, version, false, self.cfg.keep_releases);
            if delivery::install_interrupted(&self.cfg, &release) {
                self.hub.error(&Error::new(
                    exit::IO,
                    format!(
                        "the install command of release {label} was cut off (the agent \
                         stopped while it ran); it is not run again"
                    ),
                    "check the host, and run the install command by hand if it did not \
                     finish (an install command that restarts the agent always looks cut off)",
                ));
            }
        } else {
            // Keep polling while the download runs: a release that cannot finish (the
            // origin lost a file) must not hide the fixed one published after it.
            let poll = Duration::from_secs(self.cfg.poll_interval_secs);
            let finished = loop {
                tokio::select! {
                    r = t.complete(|_| {}) => break Some(r),
                    // (The guard `wait_for` returns is not `Send`: drop it inside.)
                    () = async { let _ = shutdown.wait_for(|s| *s).await; } => break None,
                    () = next_check(&self.hub, poll) => {
                        // A download the origin keeps failing shows why in the status.
                        if let Some(e) = t.origin_trouble() {
                            self.hub.error(&e);
                        }
                        // The check may take long (a dead origin): the download's end and
                        // a shutdown still win the race.
                        let superseded = tokio::select! {
                            s = self.superseded(&release) => s,
                            r = t.complete(|_| {}) => break Some(r),
                            () = async { let _ = shutdown.wait_for(|s| *s).await; } => break None,
                        };
                        if superseded {
                            t.stop().await;
                            self.hub.transfer_stopped();
                            tracing::info!(
                                release = %release.manifest.body().release,
                                "replaced before it finished; switching to the newer release (verified pieces are kept)"
                            );
                            return Ok(true);
                        }
                    }
                }
            };
            match finished {
                Some(Ok(_)) => {
                    if let Err(e) = delivery::deliver(&self.cfg, &release, &self.store).await {
                        t.stop().await;
                        self.hub.transfer_stopped();
                        return Err(e);
                    }
                    self.hub
                        .delivered(label, version, true, self.cfg.keep_releases);
                }
                Some(Err(e)) => {
                    t.stop().await;
                    self.hub.transfer_stopped();
                    return Err(e);
                }
                None => {} // shutting down; verified pieces stay for next time
            }
        }
        self.delivered.retain(|(id, _)| *id != release.id());
        self.delivered
            .push((release.id(), release.pieces.len() as u32));
        let excess = self
            .delivered
            .len()
            .saturating_sub(self.cfg.keep_releases.max(2));
        self.delivered.drain(..excess);
        self.seeding = Some(Seeding {
            release,
            transfer: t,
        });
        Ok(false)
    }
}
