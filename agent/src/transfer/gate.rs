//! Who may hold a connection, by address: addresses banned for the transfer, addresses
//! suspended for a while (they failed our private swarm's handshake [`STRIKES`] times
//! in a minute: fewer may be a peer trying its keys one by one during a rotation), and
//! at most
//! [`MAX_PER_ADDRESS`] inbound connections from one address at a time.
//!
//! A ban in the core covers a peer id, which a peer picks itself; the gate bans the
//! address it connected from too (PROTOCOL.md §6.5), so a liar that comes back with a
//! new id is refused before its handshake, and a banned configured peer is no longer
//! dialled. The per-address cap keeps one host from taking every connection slot with
//! handshakes it never finishes (an independent check held 64 and locked every honest
//! agent out).
//!
//! Loopback addresses are exempt from both: every agent on one machine shares them
//! (the README's demo, the test suite), and a process on the machine itself is not a
//! stranger on the LAN.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Inbound connections from one address at once, at most: an agent needs one (two
/// while a duplicate is retired); a few more cover a restart whose old connections
/// have not closed yet.
pub const MAX_PER_ADDRESS: usize = 4;

/// How long an address that failed our private swarm's handshake [`STRIKES`] times is
/// refused (and how long a strike counts).
pub const SUSPENSION: Duration = Duration::from_secs(60);

/// Failed private handshakes from one address within [`SUSPENSION`] that suspend it: an
/// honest peer mid-rotation tries each of its keys (at most
/// [`crate::secure::MAX_KEYS`]) once, and must not be suspended before its last.
pub const STRIKES: u8 = crate::secure::MAX_KEYS as u8;

/// Addresses suspended at once, at most (beyond it, expired ones are dropped; if none
/// has expired, the new one is not recorded: it only costs that host handshakes).
pub const MAX_SUSPENDED: usize = 4096;

/// The transfer's address rules (see the module docs).
#[derive(Debug, Default)]
pub struct Gate {
    banned: Mutex<HashSet<IpAddr>>,
    inbound: Mutex<HashMap<IpAddr, usize>>,
    /// Per address: strikes and until when they count (suspended at [`STRIKES`]).
    suspended: Mutex<HashMap<IpAddr, (u8, Instant)>>,
}

/// An admitted inbound connection's place in its address's count; dropping it frees
/// the place.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(ip) = self.ip else {
            return;
        };
        let mut inbound = self
            .gate
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = inbound.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inbound.remove(&ip);
            }
        }
    }
}

/// What the address rules apply to for `ip`: the address in one spelling (an
/// IPv4-mapped IPv6 address is its IPv4 address), or nothing (loopback). Whole
/// addresses, also for IPv6: a LAN's hosts share one /64, so grouping by prefix would
/// cut off or ban the whole LAN (an IPv6 attacker can therefore use many addresses).
fn subject(ip: IpAddr) -> Option<IpAddr> {
    let ip = ip.to_canonical();
    (!ip.is_loopback()).then_some(ip)
}

impl Gate {
    /// Bans `ip` for the rest of the transfer.
    pub fn ban(&self, ip: IpAddr) {
        if let Some(ip) = subject(ip) {
            self.banned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(ip);
        }
    }

    /// Whether `ip` is banned.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        subject(ip).is_some_and(|ip| {
            self.banned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&ip)
        })
    }

    /// `ip` failed our private handshake: at [`STRIKES`] strikes within [`SUSPENSION`]
    /// its connections are refused for [`SUSPENSION`]. Returns whether it is suspended.
    pub fn strike(&self, ip: IpAddr) -> bool {
        let Some(ip) = subject(ip) else {
            return false;
        };
        let now = Instant::now();
        let mut suspended = self
            .suspended
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if suspended.len() >= MAX_SUSPENDED {
            suspended.retain(|_, (_, until)| *until > now);
        }
        if !suspended.contains_key(&ip) && suspended.len() >= MAX_SUSPENDED {
            return false;
        }
        let entry = suspended.entry(ip).or_insert((0, now));
        if entry.1 <= now {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now + SUSPENSION;
        entry.0 >= STRIKES
    }

    /// Whether `ip` is suspended now.
    pub fn is_suspended(&self, ip: IpAddr) -> bool {
        subject(ip).is_some_and(|ip| {
            let mut suspended = self
                .suspended
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match suspended.get(&ip) {
                Some((strikes, until)) if *until > Instant::now() => *strikes >= STRIKES,
                Some(_) => {
                    suspended.remove(&ip);
                    false
                }
                None => false,
            }
        })
    }

    /// Admits an inbound connection from `ip`, unless the address is banned, suspended,
    /// or already holds [`MAX_PER_ADDRESS`] connections.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let Some(ip) = subject(ip) else {
            return Some(Admitted {
                gate: self.clone(),
                ip: None,
            });
        };
        if self.is_banned(ip) || self.is_suspended(ip) {
            return None;
        }
        let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        let n = inbound.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Admitted {
            gate: self.clone(),
            ip: Some(ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_a_few_connections_and_frees_them() {
        let gate = Arc::new(Gate::default());
        let held: Vec<Admitted> = (0..MAX_PER_ADDRESS)
            .map(|_| gate.admit(ip("198.18.0.7")).expect("admitted"))
            .collect();
        assert!(gate.admit(ip("198.18.0.7")).is_none(), "over the cap");
        // The same address spelt as IPv4-mapped IPv6 counts as the same.
        assert!(gate.admit(ip("::ffff:198.18.0.7")).is_none());
        assert!(
            gate.admit(ip("198.18.0.8")).is_some(),
            "another host gets in"
        );
        drop(held);
        assert!(gate.admit(ip("198.18.0.7")).is_some(), "places freed");
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_for_a_while() {
        let gate = Arc::new(Gate::default());
        for _ in 1..STRIKES {
            assert!(!gate.strike(ip("198.18.0.9")), "a rotation's other keys");
        }
        assert!(gate.admit(ip("198.18.0.9")).is_some());
        assert!(
            gate.strike(ip("::ffff:198.18.0.9")),
            "the same address, once more"
        );
        assert!(gate.admit(ip("198.18.0.9")).is_none());
        assert!(gate.admit(ip("198.18.0.10")).is_some());
        for _ in 0..STRIKES {
            gate.strike(ip("127.0.0.1"));
        }
        assert!(gate.admit(ip("127.0.0.1")).is_some(), "loopback is exempt");
        // Bounded: past the cap, nothing new is recorded while nothing has expired.
        for i in 0..MAX_SUSPENDED as u32 + 10 {
            gate.strike(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(gate.suspended.lock().unwrap().len(), MAX_SUSPENDED);
    }

    #[test]
    fn a_banned_address_is_refused_loopback_is_exempt() {
        let gate = Arc::new(Gate::default());
        gate.ban(ip("198.18.0.9"));
        assert!(gate.is_banned(ip("198.18.0.9")));
        assert!(gate.is_banned(ip("::ffff:198.18.0.9")));
        assert!(gate.admit(ip("198.18.0.9")).is_none());
        // IPv6 addresses one by one: the LAN's hosts share a /64.
        gate.ban(ip("2001:db8:1:2::5"));
        assert!(gate.is_banned(ip("2001:db8:1:2::5")));
        assert!(!gate.is_banned(ip("2001:db8:1:2::6")));
        gate.ban(ip("127.0.0.1"));
        assert!(!gate.is_banned(ip("127.0.0.1")));
        let many: Vec<Admitted> = (0..3 * MAX_PER_ADDRESS)
            .map(|_| gate.admit(ip("127.0.0.1")).expect("loopback is exempt"))
            .collect();
        assert_eq!(many.len(), 3 * MAX_PER_ADDRESS);
    }
}
