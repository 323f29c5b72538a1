//! Outbound connections: one task per dialled peer that keeps a connection to it, the
//! listener's accept loop, and which discovered agents to dial ([`Overlay`]). Both loops
//! take a connection permit *before* connecting or accepting, so the number of
//! connections never exceeds the transfer's cap (the overlay's `max_peers`).
//!
//! Bounds against a LAN that announces without end: at most [`MAX_MEMBERS`] members are
//! remembered and the overlay rule dials 20 of them; a member whose connections keep
//! failing quickly (peer gone, or it bans us) is given up after [`GIVE_UP_AFTER`]
//! attempts, and the next best member is dialled instead; if discovery resolves it again,
//! it starts over. Having no free connection slot is not counted against a member.
//! Configured peers are dialled for as long as the transfer runs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_protocol::swarm::{PeerSetConfig, link_score};
use shoal_protocol::wire::{PeerId, Role};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::NodeInput;
use super::conn::{self, ConnContext};
use crate::discovery::Found;

/// Consecutive quick failures after which a discovered member is given up (about half
/// a minute of backoff).
pub const GIVE_UP_AFTER: u32 = 12;

/// At start, members are dialled once no new one has been named for this long (or
/// [`NAMES_WAIT`] after start): the names of a whole LAN arrive within about half a
/// second, and picks made before that are the same first few agents for everyone, which
/// then serve dozens of peers each (a 48-agent lab run: agents waited 9 s for a slot).
pub const NAMES_SETTLE: Duration = Duration::from_millis(300);

/// The longest wait for names to settle before dialling.
pub const NAMES_WAIT: Duration = Duration::from_secs(2);

/// How long a configured peer that proved it is not of our private swarm waits before
/// it is dialled again (its key may be rolled out later).
pub const STRANGER_BACKOFF: Duration = Duration::from_secs(300);

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

    /// Accepts peers until stopped. A connection that finds no free slot is closed at
    /// once (its dialler backs off), and the last `reserve` slots are kept for our own
    /// dialling, so inbound connections alone cannot cut us off from the members we pick.
    pub async fn accept(self, listener: TcpListener, reserve: usize) {
        let mut stop = self.stop.clone();
        let mut peers = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => break,
                Some(_) = peers.join_next() => continue,
            };
            let (stream, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a peer failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let permit = if self.slots.available_permits() > reserve {
                self.slots.clone().try_acquire_owned().ok()
            } else {
                None
            };
            let Some(permit) = permit else {
                tracing::debug!("refusing a peer: every connection slot is taken");
                drop(stream);
                continue;
            };
            let Some(admitted) = self.ctx.gate.admit(from.ip()) else {
                tracing::debug!(%from, "refusing a peer: banned, or too many connections from its address");
                drop(stream);
                continue;
            };
            let (ctx, id) = (self.ctx.clone(), self.next_id());
            let gate = self.ctx.gate.clone();
            peers.spawn(async move {
                if let conn::Ended::Stranger = conn::run(stream, Role::Responder, ctx, id, 0).await
                {
                    // Not of our private swarm: after a few strikes its connections
                    // are refused at once for a while, before any handshake work.
                    gate.strike(from.ip());
                }
                drop(admitted);
                drop(permit);
            });
        }
        peers.shutdown().await;
    }

    /// Dials `peers` for good, and the discovered agents the overlay rule picks
    /// ([`Overlay`]), until stopped; tells the node which agents discovery sees, so the
    /// origin work is split over all of them.
    pub async fn dial(
        self,
        peers: Vec<SocketAddr>,
        mut found: Option<mpsc::Receiver<Found>>,
        overlay: PeerSetConfig,
    ) {
        let mut stop = self.stop.clone();
        let mut lan = Overlay::new(self.ctx.me, overlay);
        // Member diallers running, each with a serial number (a member can drop out of
        // the wanted set and come back while its old dialler still finishes).
        let mut dialing: HashMap<PeerId, (u64, watch::Sender<bool>)> = HashMap::new();
        let mut serial = 0u64;
        // Which of our swarm keys recognised each resolved member (private swarms).
        let mut keys: HashMap<PeerId, usize> = HashMap::new();
        // Addresses that refused every key of ours, and when (at most MAX_MEMBERS).
        let mut strangers: HashMap<SocketAddr, tokio::time::Instant> = HashMap::new();
        // A member's address before discovery last moved it (for going back).
        let mut previous: HashMap<PeerId, SocketAddr> = HashMap::new();
        let mut tasks = JoinSet::new();
        for addr in peers {
            let dialer = self.clone().keep_dialing(addr, false, None, 0);
            tasks.spawn(async move { (dialer.await, None) });
        }
        // Members are dialled once their names have settled (see `NAMES_SETTLE`).
        let started = tokio::time::Instant::now();
        let mut settle_at = started + NAMES_WAIT;
        let mut settled = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(settle_at), if !settled => settled = true,
                f = async { found.as_mut()?.recv().await }, if found.is_some() => {
                    let change = match f {
                        None => {
                            found = None; // discovery ended; keep the dialers
                            continue;
                        }
                        Some(Found::Member(id)) => lan.learn(id, None).then_some((id, true)),
                        // An address that proved a stranger lately does not take over
                        // a member's name again (a host re-announcing a member's name
                        // as its own).
                        Some(Found::Peer { addr, .. })
                            if strangers
                                .get(&addr)
                                .is_some_and(|t| t.elapsed() < STRANGER_BACKOFF) => continue,
                        Some(Found::Peer { id, addr, key }) => {
                            let old = lan.addr(&id).filter(|old| *old != addr);
                            if old.is_some()
                                && let Some((_, flag)) = dialing.remove(&id)
                            {
                                // Restarted elsewhere: its dialler stops (after the
                                // connection it holds, if any), a new one dials the new
                                // address.
                                let _ = flag.send(false);
                            }
                            let new = lan.learn(id, Some(addr));
                            // Bounded by the members (a public swarm's names can be
                            // made up by anyone who knows the product).
                            if lan.contains(&id) {
                                keys.insert(id, key);
                                if let Some(old) = old {
                                    previous.insert(id, old);
                                }
                            }
                            new.then_some((id, true))
                        }
                        Some(Found::Gone(id)) => {
                            keys.remove(&id);
                            previous.remove(&id);
                            lan.forget(&id).then_some((id, false))
                        }
                    };
                    if let Some((peer, present)) = change {
                        if present && !settled {
                            let now = tokio::time::Instant::now();
                            settle_at = (now + NAMES_SETTLE).min(started + NAMES_WAIT);
                        }
                        let member = NodeInput::Member { peer, present };
                        if self.ctx.node.send(member).await.is_err() {
                            break;
                        }
                    }
                }
                Some(ended) = tasks.join_next() => {
                    // Still the current dialler of a wanted member: it gave up, and
                    // is dialled again only if discovery resolves it anew.
                    if let Ok((ended, Some((id, n, addr)))) = ended
                        && dialing.get(&id).is_some_and(|(current, _)| *current == n)
                    {
                        // A member whose new address proved a stranger goes back to
                        // the address it had (someone re-announced its name from
                        // elsewhere); a member with none is given up.
                        let back = (ended == Dialled::Stranger)
                            .then(|| previous.remove(&id))
                            .flatten()
                            .filter(|old| *old != addr);
                        if let Some(old) = back {
                            lan.learn(id, Some(old));
                        } else if ended != Dialled::Stopped {
                            lan.gave_up(&id);
                        }
                        if ended == Dialled::Stranger {
                            if strangers.len() >= MAX_MEMBERS {
                                strangers.retain(|_, t| t.elapsed() < STRANGER_BACKOFF);
                            }
                            if strangers.len() < MAX_MEMBERS {
                                strangers.insert(addr, tokio::time::Instant::now());
                            }
                        }
                        dialing.remove(&id);
                    }
                }
                _ = stop.changed() => break,
            }
            if !settled {
                continue;
            }
            // Dial what the overlay rule wants now; diallers of members it no longer
            // picks finish their connection, if they have one, and stop.
            let wanted = lan.wanted();
            for (id, (_, flag)) in &dialing {
                // A dialler still running is reused when its member is picked again.
                flag.send_if_modified(|w| {
                    let now = wanted.iter().any(|(p, _)| p == id);
                    std::mem::replace(w, now) != now
                });
            }
            for (id, addr) in wanted {
                if dialing.contains_key(&id) {
                    continue;
                }
                let (flag, wanted) = watch::channel(true);
                serial += 1;
                let n = serial;
                dialing.insert(id, (n, flag));
                let key = keys.get(&id).copied().unwrap_or(0);
                let dialer = self
                    .clone()
                    .keep_dialing(addr, true, Some((id, wanted)), key);
                tasks.spawn(async move { (dialer.await, Some((id, n, addr))) });
            }
        }
        tasks.shutdown().await;
    }

    /// Keeps a connection to `addr`, redialling when it drops, for as long as `member`'s
    /// flag is set (a discovered member the overlay rule still picks; `None`: always),
    /// and not while that member is joined on another connection. The first
    /// retries are
    /// quick (peers start at about the same time, and meeting them before the origin
    /// grace ends is what splits the origin work); after that a connection that keeps
    /// ending quickly backs off to a minute, and with `give_up` the address is dropped
    /// after [`GIVE_UP_AFTER`] such attempts. One that lasted resets it all. A peer that
    /// proves it is not of our private swarm under every key we hold (tried in turn from
    /// `key`, the one discovery recognised it under) is given up at once (with
    /// `give_up`) or dialled again only after [`STRANGER_BACKOFF`].
    async fn keep_dialing(
        self,
        addr: SocketAddr,
        give_up: bool,
        member: Option<(PeerId, watch::Receiver<bool>)>,
        key: usize,
    ) -> Dialled {
        let mut stop = self.stop.clone();
        let mut redial = Redial::default();
        // Our swarm keys, and how many of them this peer refused in a row.
        let keys = self.ctx.private.as_ref().map_or(1, |k| k.all().len());
        let mut key = key.min(keys - 1);
        let mut tried = 0;
        while !*stop.borrow() && member.as_ref().is_none_or(|(_, w)| *w.borrow()) {
            let joined = member.as_ref().is_some_and(|(id, _)| {
                self.ctx
                    .joined
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(id)
            });
            if joined {
                // It is connected to us already (it dialled us, or an older connection
                // lives on): a second one would be retired as a duplicate.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.changed() => break,
                }
            }
            if self.ctx.gate.is_banned(addr.ip()) {
                tracing::debug!(%addr, "not dialling a banned address");
                return Dialled::GaveUp;
            }
            let began = tokio::time::Instant::now();
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                // Every connection slot is taken: not this address's failure.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => break,
                }
            };
            let mut stranger = false;
            if let Ok(Ok(stream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
            {
                let run = conn::run(
                    stream,
                    Role::Initiator,
                    self.ctx.clone(),
                    self.next_id(),
                    key,
                );
                tokio::select! {
                    ended = run => stranger = matches!(ended, conn::Ended::Stranger),
                    _ = stop.changed() => break,
                }
            }
            drop(permit);
            let delay = if stranger {
                // During a key rotation the peer may hold another of our keys: try each
                // once before calling it a stranger.
                tried += 1;
                if tried < keys {
                    key = (key + 1) % keys;
                    Some(Duration::from_millis(200))
                } else {
                    tried = 0;
                    tracing::info!(%addr, "private swarm: a peer refused every key of ours");
                    if give_up {
                        return Dialled::Stranger;
                    }
                    Some(STRANGER_BACKOFF)
                }
            } else {
                tried = 0;
                redial.after(began.elapsed(), give_up)
            };
            let Some(delay) = delay else {
                tracing::debug!(%addr, "giving up on a peer that keeps failing");
                return Dialled::GaveUp;
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => break,
            }
        }
        Dialled::Stopped
    }
}

/// Why a dialler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialled {
    /// Stopped (the transfer ends, or its member is no longer wanted).
    Stopped,
    /// Its connections kept failing, or the address is banned.
    GaveUp,
    /// The peer refused every key of our private swarm.
    Stranger,
}

/// The agents discovery reports, by peer id, and which of them to dial: the overlay rule
/// ([`PeerSetConfig::dial_targets`]) over the members not given up on. At most
/// [`MAX_MEMBERS`] are kept (a LAN announcing without end cannot grow it further).
#[derive(Debug)]
pub struct Overlay {
    me: PeerId,
    cfg: PeerSetConfig,
    /// Members, with their link score to us and, once resolved, where to dial them.
    members: HashMap<PeerId, (u64, Option<SocketAddr>)>,
    /// Members whose dialler gave up (their connections kept failing).
    failed: HashSet<PeerId>,
}

/// Discovered agents remembered at most.
pub const MAX_MEMBERS: usize = 4096;

impl Overlay {
    /// No members yet.
    pub fn new(me: PeerId, cfg: PeerSetConfig) -> Self {
        Overlay {
            me,
            cfg,
            members: HashMap::new(),
            failed: HashSet::new(),
        }
    }

    /// Discovery reports `id` (at `addr`, once resolved): whether it is a new member. A
    /// member resolved again gets another chance if its dialler had given up.
    pub fn learn(&mut self, id: PeerId, addr: Option<SocketAddr>) -> bool {
        if id == self.me {
            return false;
        }
        if let Some((_, known)) = self.members.get_mut(&id) {
            if addr.is_some() {
                *known = addr;
                self.failed.remove(&id);
            }
            return false;
        }
        if self.members.len() >= MAX_MEMBERS {
            tracing::debug!(?addr, "ignoring a discovered peer: too many known");
            return false;
        }
        self.members.insert(id, (link_score(&self.me, &id), addr));
        true
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.members.contains_key(id)
    }

    /// Discovery no longer sees `id`: whether it was a member.
    pub fn forget(&mut self, id: &PeerId) -> bool {
        self.failed.remove(id);
        self.members.remove(id).is_some()
    }

    /// Where `id` was last resolved.
    pub fn addr(&self, id: &PeerId) -> Option<SocketAddr> {
        self.members.get(id).and_then(|(_, a)| *a)
    }

    /// The dialler of `id` gave up.
    pub fn gave_up(&mut self, id: &PeerId) {
        if self.members.contains_key(id) {
            self.failed.insert(*id);
        }
    }

    /// The members to dial now, with their addresses. The overlay rule picks from every
    /// member known by name, resolved or not, and those of its picks that are resolved
    /// are dialled: picking among the resolved ones only would make the first agents
    /// resolved (the same few for everyone, early on) hubs that everyone dials. If fewer
    /// than half the picks are dialable, the best other resolved members fill up to half.
    pub fn wanted(&self) -> Vec<(PeerId, SocketAddr)> {
        let mut ranked: Vec<(u64, PeerId, Option<SocketAddr>)> = self
            .members
            .iter()
            .filter(|(id, _)| !self.failed.contains(id))
            .map(|(id, (score, addr))| (*score, *id, *addr))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let mut wanted: Vec<(PeerId, SocketAddr)> = ranked
            .iter()
            .take(self.cfg.dial)
            .filter_map(|(_, id, addr)| Some((*id, (*addr)?)))
            .collect();
        let floor = self.cfg.dial.div_ceil(2);
        for (_, id, addr) in ranked.iter().skip(self.cfg.dial) {
            if wanted.len() >= floor {
                break;
            }
            if let Some(a) = addr {
                wanted.push((*id, *a));
            }
        }
        wanted
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

    fn id(i: u32) -> PeerId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        PeerId(b)
    }

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 7000))
    }

    #[test]
    fn a_large_lan_is_dialled_by_the_overlay_rule_within_bounds() {
        let cfg = PeerSetConfig::default();
        let mut lan = Overlay::new(id(0), cfg);
        assert!(
            !lan.learn(id(0), Some(addr(0))),
            "we are not our own member"
        );
        // The hardening issue's flood: 10,000 distinct announced agents.
        let new = (1..=10_000u32)
            .filter(|i| lan.learn(id(*i), Some(addr(*i))))
            .count();
        assert_eq!(new, MAX_MEMBERS, "members are bounded");
        assert!(!lan.learn(id(1), Some(addr(1))), "a member is learnt once");
        let wanted = lan.wanted();
        assert_eq!(wanted.len(), cfg.dial);
        // Members known only by name are picked, but not dialled until resolved; the
        // best resolved others fill up to half the picks.
        let mut named = Overlay::new(id(0), cfg);
        for i in 1..=100 {
            named.learn(id(i), (i > 90).then(|| addr(i)));
        }
        let dialled = named.wanted();
        assert_eq!(dialled.len(), cfg.dial.div_ceil(2));
        assert!(
            dialled
                .iter()
                .all(|(p, _)| u32::from_be_bytes(p.0[..4].try_into().unwrap()) > 90)
        );
        let members: Vec<PeerId> = (1..=MAX_MEMBERS as u32).map(id).collect();
        let best: Vec<PeerId> = wanted.iter().map(|(p, _)| *p).collect();
        assert_eq!(best, cfg.dial_targets(&id(0), &members));
        // A member whose dialler gave up makes room for the next best, until discovery
        // reports it again.
        let first = best[0];
        lan.gave_up(&first);
        assert!(!lan.wanted().iter().any(|(p, _)| *p == first));
        assert_eq!(lan.wanted().len(), cfg.dial);
        lan.learn(first, Some(wanted[0].1));
        assert_eq!(lan.wanted()[0].0, first);
        assert!(lan.forget(&first) && !lan.forget(&first));
        assert!(!lan.wanted().iter().any(|(p, _)| *p == first));
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
