//! Outbound connections: one task per peer address that keeps a connection to it, and
//! the listener's accept loop. Both take a connection permit *before* connecting or
//! accepting, so the number of connections never exceeds the transfer's cap.
//!
//! Bounds against a LAN that announces without end: at most [`MAX_DIALED`] addresses are
//! dialled at once, and a discovered address whose connections keep failing quickly
//! (peer gone, or it bans us) is forgotten after [`GIVE_UP_AFTER`] attempts; a new
//! announcement of it starts over. Configured peers are dialled for as long as the
//! transfer runs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_protocol::wire::Role;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::conn::{self, ConnContext};

/// Addresses dialled at once at most.
pub const MAX_DIALED: usize = 128;

/// Consecutive quick failures after which a discovered address is forgotten (about a
/// minute and a half of backoff).
pub const GIVE_UP_AFTER: u32 = 12;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What every dialer and the acceptor share.
#[derive(Clone)]
pub(super) struct Connector {
    pub ctx: Arc<ConnContext>,
    pub slots: Arc<Semaphore>,
    pub ids: Arc<AtomicU64>,
    pub stop: watch::Receiver<bool>,
}

impl Connector {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Accepts peers until stopped.
    pub async fn accept(self, listener: TcpListener) {
        let mut stop = self.stop.clone();
        let mut peers = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => break,
                Some(_) = peers.join_next() => continue,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a peer failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (ctx, id) = (self.ctx.clone(), self.next_id());
            peers.spawn(async move {
                conn::run(stream, Role::Responder, ctx, id).await;
                drop(permit);
            });
        }
        peers.shutdown().await;
    }

    /// Dials `peers` for good and every address `found` reports, until stopped.
    pub async fn dial(self, peers: Vec<SocketAddr>, mut found: Option<mpsc::Receiver<SocketAddr>>) {
        let mut stop = self.stop.clone();
        let mut active: HashSet<SocketAddr> = peers.iter().copied().collect();
        let mut tasks = JoinSet::new();
        for addr in peers {
            tasks.spawn(self.clone().keep_dialing(addr, false));
        }
        loop {
            tokio::select! {
                addr = async { found.as_mut()?.recv().await }, if found.is_some() => {
                    let Some(addr) = addr else {
                        found = None; // discovery ended; keep the dialers
                        continue;
                    };
                    if active.len() >= MAX_DIALED {
                        tracing::debug!(%addr, "ignoring a discovered peer: dialling too many");
                    } else if active.insert(addr) {
                        tasks.spawn(self.clone().keep_dialing(addr, true));
                    }
                }
                Some(ended) = tasks.join_next() => {
                    if let Ok(addr) = ended {
                        active.remove(&addr);
                    }
                }
                _ = stop.changed() => break,
            }
        }
        tasks.shutdown().await;
    }

    /// Keeps a connection to `addr`, redialling when it drops. The first retries are
    /// quick (peers start at about the same time, and meeting them before the origin
    /// grace ends is what splits the origin work); after that a connection that keeps
    /// ending quickly backs off to a minute, and with `give_up` the address is dropped
    /// after [`GIVE_UP_AFTER`] such attempts. One that lasted resets it all.
    async fn keep_dialing(self, addr: SocketAddr, give_up: bool) -> SocketAddr {
        let mut stop = self.stop.clone();
        let mut quick_failures = 0u32;
        while !*stop.borrow() {
            let began = tokio::time::Instant::now();
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                if let Ok(Ok(stream)) =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
                {
                    let run = conn::run(stream, Role::Initiator, self.ctx.clone(), self.next_id());
                    tokio::select! {
                        () = run => {}
                        _ = stop.changed() => break,
                    }
                }
                drop(permit);
            }
            quick_failures = if began.elapsed() > Duration::from_secs(30) {
                0
            } else {
                quick_failures.saturating_add(1)
            };
            if give_up && quick_failures >= GIVE_UP_AFTER {
                tracing::debug!(%addr, "forgetting a peer address that keeps failing");
                break;
            }
            let delay = Duration::from_millis(500)
                .saturating_mul(1 << quick_failures.saturating_sub(6).min(7))
                .min(Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        addr
    }
}
