//! Outbound connections: one task per peer address that keeps a connection to it, and
//! the listener's accept loop. Both take a connection permit *before* connecting or
//! accepting, so the number of connections never exceeds the transfer's cap.
//!
//! Bounds against a LAN that announces without end: at most [`MAX_DIALED`] addresses are
//! dialled at once, and a discovered address whose connections keep failing quickly
//! (peer gone, or it bans us) is forgotten after [`GIVE_UP_AFTER`] attempts; if
//! discovery reports it again (new or changed records), it starts over. Having no free
//! connection slot is not counted against an address. Configured peers are dialled for as long as the
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
        let mut active = DialSet::new(peers.iter().copied());
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
                    if active.admit(addr) {
                        tasks.spawn(self.clone().keep_dialing(addr, true));
                    }
                }
                Some(ended) = tasks.join_next() => {
                    if let Ok(addr) = ended {
                        active.ended(&addr);
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
        let mut redial = Redial::default();
        while !*stop.borrow() {
            let began = tokio::time::Instant::now();
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                // Every connection slot is taken: not this address's failure.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => break,
                }
            };
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
            let Some(delay) = redial.after(began.elapsed(), give_up) else {
                tracing::debug!(%addr, "forgetting a peer address that keeps failing");
                break;
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        addr
    }
}

/// The addresses being dialled: at most [`MAX_DIALED`], each once.
#[derive(Debug)]
pub struct DialSet {
    active: HashSet<SocketAddr>,
}

impl DialSet {
    /// A set dialling `configured` (these count towards the cap too).
    pub fn new(configured: impl IntoIterator<Item = SocketAddr>) -> Self {
        DialSet {
            active: configured.into_iter().collect(),
        }
    }

    /// Whether to start dialling `addr`: not dialled yet and room left.
    pub fn admit(&mut self, addr: SocketAddr) -> bool {
        if self.active.len() >= MAX_DIALED && !self.active.contains(&addr) {
            tracing::debug!(%addr, "ignoring a discovered peer: dialling too many");
            return false;
        }
        self.active.insert(addr)
    }

    /// The dialler of `addr` ended; if discovery reports it again (mdns-sd reports an
    /// instance when its records are new or changed: the peer restarted, or its records
    /// expired and came back), it starts over.
    pub fn ended(&mut self, addr: &SocketAddr) {
        self.active.remove(addr);
    }
}

/// When to dial an address again after a connection ended, and when to give up.
#[derive(Debug, Default)]
pub struct Redial {
    quick_failures: u32,
}

impl Redial {
    /// A connection (attempt) that lasted `lasted` ended: the wait before the next, or
    /// `None` when `give_up` is set and it failed quickly [`GIVE_UP_AFTER`] times in a
    /// row. Six quick retries at 0.5 s, then doubling to a minute; a connection that
    /// lasted 30 s resets it all.
    pub fn after(&mut self, lasted: Duration, give_up: bool) -> Option<Duration> {
        self.quick_failures = if lasted > Duration::from_secs(30) {
            0
        } else {
            self.quick_failures.saturating_add(1)
        };
        if give_up && self.quick_failures >= GIVE_UP_AFTER {
            return None;
        }
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << self.quick_failures.saturating_sub(6).min(7))
            .min(Duration::from_secs(60));
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lan_announcing_without_end_is_dialled_within_the_cap() {
        let configured: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let mut set = DialSet::new([configured]);
        let admitted = (0..1000u32)
            .map(|i| SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 7000)))
            .filter(|a| set.admit(*a))
            .count();
        assert_eq!(admitted, MAX_DIALED - 1);
        let again: SocketAddr = "198.18.0.0:7000".parse().unwrap();
        assert!(!set.admit(again), "an address is dialled once");
        set.ended(&again);
        assert!(set.admit(again), "a forgotten address may start again");
    }

    #[test]
    fn a_failing_address_is_forgotten_and_a_lasting_connection_resets() {
        let mut r = Redial::default();
        let quick = Duration::from_millis(10);
        let waits: Vec<Duration> = (1..GIVE_UP_AFTER)
            .map(|_| r.after(quick, true).unwrap())
            .collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            r.after(quick, true),
            None,
            "given up after {GIVE_UP_AFTER} quick failures"
        );
        let mut configured = Redial::default();
        for _ in 0..100 {
            assert!(configured.after(quick, false).unwrap() <= Duration::from_secs(60));
        }
        assert_eq!(
            configured.after(Duration::from_secs(31), false),
            Some(Duration::from_millis(500))
        );
    }
}
