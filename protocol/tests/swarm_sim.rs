//! Swarm core scenarios in the deterministic simulator. Each prints its figures (origin
//! bytes against the release size, completion against the Kumar–Ross bound
//! T ≥ max(F/u_s, F/d_min, N·F/(u_s + Σu_i))) and asserts behaviour: everyone honest ends
//! with correct bytes, the origin sends about one copy, liars are banned. A failure names
//! the seed; re-run with `SHOAL_SIM_SEED=<seed>` to replay it.

mod sim;

use std::time::Duration;

use shoal_protocol::swarm::SwarmConfig;
use sim::{MBIT, Report, Scenario, lan, run, show};

fn seed(default: u64) -> u64 {
    std::env::var("SHOAL_SIM_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(default)
}

/// Fails unless the origin sent at most `copies` times the release.
fn origin_at_most(r: &Report, copies: f64) {
    assert!(
        r.origin_bytes as f64 <= copies * r.release_bytes as f64,
        "origin sent {} bytes for a {}-byte release",
        r.origin_bytes,
        r.release_bytes
    );
}

fn must(sc: &Scenario) -> Report {
    run(sc).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn thirty_two_peers_split_the_origin_work() {
    let sc = lan(32, seed(0x5eed_0001));
    let r = must(&sc);
    show("32 peers", &r);
    assert!(r.finish.iter().all(Option::is_some));
    origin_at_most(&r, 1.1);
    // The origin link is the bottleneck; the LAN must not add much on top of it.
    assert!(r.completion.as_secs_f64() <= 2.0 * r.bound.as_secs_f64());
}

/// Past the overlay's dial count the LAN is a partial mesh: every agent must still
/// finish, the origin send about one copy, and nobody starve (the simulator fails a run
/// where an agent waits more than 15 s for piece data a neighbour holds).
#[test]
fn sixty_four_agents_in_a_partial_mesh_split_the_origin_and_nobody_starves() {
    let mut sc = lan(64, seed(0x5eed_0040));
    sc.pieces = 32;
    let r = must(&sc);
    show("64 peers", &r);
    assert!(r.finish.iter().all(Option::is_some));
    assert!(
        r.degree.1 <= sc.mesh.max_peers && r.degree.0 < 63,
        "degrees {:?}: not a bounded partial mesh",
        r.degree
    );
    origin_at_most(&r, 1.05);
    assert!(r.completion.as_secs_f64() <= 1.5 * r.bound.as_secs_f64());
}

/// Names that are no agent (crashed without a goodbye, or announced by a LAN host) win
/// fetcher elections: their pieces pass to the next agents in the election once the
/// others deliver and they do not, rather than stalling the LAN or sending everyone to
/// the origin.
#[test]
fn ghost_members_elected_as_fetchers_are_passed_over() {
    let mut sc = lan(32, seed(0x5eed_0041));
    sc.ghosts = 2;
    let r = must(&sc);
    show("32 peers, 2 ground ghost names", &r);
    assert!(r.finish.iter().all(Option::is_some));
    origin_at_most(&r, 1.1);
    // Passing a ghost over takes one `origin_stall` (5 s here) of others' progress, and
    // every agent does it at once: nothing waits for the stall fallback.
    origin_at_most(&r, 1.02);
    assert!(r.completion.as_secs_f64() <= r.bound.as_secs_f64() + 5.0);
}

/// An office mixes wired desktops and Wi-Fi laptops: half the agents at a tenth of the
/// others' speed, and saying so (light ids). They are not elected origin fetchers, a
/// rotation does not cut their pieces short, and endgame does not flood their downlink
/// with duplicates: the LAN finishes near the bound and nobody's link carries much
/// beyond what it needs.
#[test]
fn slow_agents_that_say_so_neither_fetch_nor_waste_their_link() {
    let mut sc = lan(16, seed(0x5eed_0042));
    for node in sc.nodes.iter_mut().take(8) {
        node.up_bps = 20.0 * MBIT;
        node.down_bps = 20.0 * MBIT;
        node.light = true;
    }
    let r = must(&sc);
    show("16 peers, 8 slow and light", &r);
    assert!(r.finish.iter().all(Option::is_some));
    origin_at_most(&r, 1.02);
    assert!(r.completion.as_secs_f64() <= 1.3 * r.bound.as_secs_f64());
    let most = r.received.iter().max().copied().unwrap_or(0);
    assert!(
        most as f64 <= 1.08 * r.release_bytes as f64,
        "an agent received {most} bytes of blocks for a {}-byte release",
        r.release_bytes
    );
}

#[test]
fn late_joiners_take_everything_from_peers() {
    let mut sc = lan(16, seed(0x5eed_0002));
    for n in sc.nodes.iter_mut().skip(8) {
        n.join_at = Duration::from_secs(60);
    }
    let r = must(&sc);
    show("8 + 8 late", &r);
    origin_at_most(&r, 1.1);
    assert!(
        r.finish[8..]
            .iter()
            .all(|f| f.is_some_and(|t| t < Duration::from_secs(65)))
    );
}

#[test]
fn a_lying_peer_is_banned_and_nobody_stores_its_bytes() {
    let mut sc = lan(12, seed(0x5eed_0003));
    sc.nodes[0].lying = true;
    sc.nodes[0].seed = true; // it claims every piece from the start
    let r = must(&sc);
    show("liar seed", &r);
    assert!(r.bans_of_liars >= 1, "the liar was never caught");
    assert!(r.finish[1..].iter().all(Option::is_some));
}

#[test]
fn crashing_peers_do_not_stop_the_rest() {
    let mut sc = lan(16, seed(0x5eed_0004));
    for (i, n) in sc.nodes.iter_mut().enumerate().take(4) {
        n.crash_at = Some(Duration::from_millis(1500 + 400 * i as u64));
    }
    let r = must(&sc);
    show("4 of 16 crash", &r);
    assert!(r.finish[4..].iter().all(Option::is_some));
    // Pieces owned by crashed peers are re-fetched at most once more.
    origin_at_most(&r, 1.5);
}

#[test]
fn the_lan_finishes_when_the_origin_dies_after_the_pieces_spread() {
    let mut sc = lan(8, seed(0x5eed_0005));
    sc.nodes[0].seed = true; // one machine already has the release
    sc.origin_dies_at = Some(Duration::ZERO);
    let r = must(&sc);
    show("dead origin, one LAN seed", &r);
    assert_eq!(r.origin_bytes, 0);
    assert!(r.finish.iter().all(Option::is_some));
}

#[test]
fn a_slow_origin_and_lossy_links_still_converge() {
    let mut sc = lan(16, seed(0x5eed_0006));
    sc.origin_bps = 4.0 * MBIT;
    sc.loss = 0.02;
    sc.latency = Duration::from_millis(5);
    let r = must(&sc);
    show("slow origin, 2% loss", &r);
    assert!(r.finish.iter().all(Option::is_some));
    origin_at_most(&r, 1.1);
}

/// Many random scenarios: sizes, joins, crashes, liars, loss. Each must end with every
/// honest surviving node complete and correct.
#[test]
fn random_scenarios_hold_the_invariants() {
    let base = seed(0x5eed_1000);
    let runs = std::env::var("SHOAL_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for k in 0..runs {
        let s = base.wrapping_add(k);
        let mut rng = shoal_protocol::swarm::Rng::new(s);
        let n = 4 + rng.below(29);
        let mut sc = lan(n, s);
        sc.pieces = 8 + rng.below(40) as u32;
        sc.loss = [0.0, 0.01, 0.05][rng.below(3)];
        for node in sc.nodes.iter_mut().skip(1) {
            match rng.below(10) {
                0 => node.join_at = Duration::from_millis(rng.below(20_000) as u64),
                1 => node.crash_at = Some(Duration::from_millis(rng.below(10_000) as u64)),
                2 => node.lying = true,
                3 => {
                    node.up_bps = 20.0 * MBIT;
                    node.down_bps = 50.0 * MBIT;
                }
                _ => {}
            }
        }
        if rng.below(3) == 0 {
            sc.nodes[0].seed = true;
            sc.origin_dies_at = Some(Duration::from_millis(rng.below(5_000) as u64));
        }
        let r = must(&sc);
        show(&format!("random {s:#x} n={n}"), &r);
    }
}

/// Regression: with no origin grace a lone agent must start fetching at once, not after
/// the next unrelated deadline (the stall timer, 10 s).
#[test]
fn a_lone_agent_without_grace_starts_at_once() {
    use shoal_protocol::swarm::{PieceSpec, Swarm, SwarmEvent};
    use shoal_protocol::wire::PeerId;
    let cfg = SwarmConfig {
        origin_grace: Duration::ZERO,
        ..SwarmConfig::default()
    };
    let pieces = vec![
        PieceSpec {
            length: 10,
            digest: shoal_protocol::Digest::of(b"0123456789"),
        };
        2
    ];
    let mut s = Swarm::new(cfg, PeerId([1; 16]), pieces, &[], 7, Duration::ZERO);
    let mut fetches = 0;
    while let Some(e) = s.poll_event() {
        if matches!(e, SwarmEvent::FetchOrigin { .. }) {
            fetches += 1;
        }
    }
    assert_eq!(fetches, 2);
}

/// Upload slots rotate: with 2 slots and 6 peers that lack our pieces, every peer is
/// unchoked within `ceil(waiting / ceil(slots / 4)) × rotate_every`, and at no time are
/// more than 2 unchoked.
#[test]
fn upload_slots_rotate_to_every_waiting_peer() {
    use shoal_protocol::swarm::{Bitfield, PieceSpec, Swarm};
    use shoal_protocol::wire::{Message, PeerId};
    let cfg = SwarmConfig {
        upload_slots: 2,
        rotate_every: Duration::from_millis(500),
        ..SwarmConfig::default()
    };
    let pieces = vec![
        PieceSpec {
            length: 10,
            digest: shoal_protocol::Digest::of(b"0123456789"),
        };
        4
    ];
    let mut s = Swarm::new(cfg, PeerId([0; 16]), pieces, &[true; 4], 7, Duration::ZERO);
    let peers: Vec<PeerId> = (1..=6u8).map(|i| PeerId([i; 16])).collect();
    let empty = Bitfield::new(4);
    for p in &peers {
        s.handle_joined(*p, Duration::ZERO);
        let map = Message::PieceMap {
            piece_count: 4,
            bits: empty.as_wire().to_vec(),
        };
        s.handle_message(*p, map, Duration::ZERO);
    }
    let mut unchoked = std::collections::BTreeSet::new();
    let mut ever = std::collections::BTreeSet::new();
    let mut now = Duration::ZERO;
    while now <= Duration::from_secs(3) {
        s.handle_timeout(now);
        while let Some((to, msg)) = s.poll_transmit() {
            match msg {
                Message::Unchoke { .. } => {
                    unchoked.insert(to);
                    ever.insert(to);
                }
                Message::Choke => {
                    unchoked.remove(&to);
                }
                _ => {}
            }
        }
        assert!(
            unchoked.len() <= 2,
            "{} unchoked at {now:?}",
            unchoked.len()
        );
        now += Duration::from_millis(100);
    }
    // 4 waiting, one turn per rotation: all served by 2 s.
    assert_eq!(ever.len(), peers.len(), "some peer never got a slot");
}

/// A holder rotated out mid-piece may finish the piece it started, and nothing new:
/// the `Choke` comes once its last block is out. (A choke mid-piece would make it drop
/// the blocks it has.)
#[test]
fn a_rotated_out_holder_finishes_its_piece_before_the_choke() {
    use shoal_protocol::swarm::{Bitfield, PieceSpec, Swarm, SwarmEvent};
    use shoal_protocol::wire::{BlockRef, Message, PeerId, PieceNumber, RejectReason};
    let block = 16 * 1024;
    let cfg = SwarmConfig {
        upload_slots: 1,
        block_len: block,
        rotate_every: Duration::from_millis(500),
        ..SwarmConfig::default()
    };
    let pieces = vec![
        PieceSpec {
            length: 2 * block,
            digest: shoal_protocol::Digest::of(b"unused: we only upload"),
        };
        2
    ];
    let ms = Duration::from_millis;
    let mut s = Swarm::new(cfg, PeerId([0; 16]), pieces, &[true; 2], 7, ms(0));
    let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
    let map = || Message::PieceMap {
        piece_count: 2,
        bits: Bitfield::new(2).as_wire().to_vec(),
    };
    let req = |piece: u32, offset: u32| {
        Message::Request(BlockRef {
            piece: PieceNumber(piece),
            offset,
            length: block,
        })
    };
    let sent = |s: &mut Swarm| -> Vec<(PeerId, Message)> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    };
    let uploads = |s: &mut Swarm| -> usize {
        std::iter::from_fn(|| s.poll_event())
            .filter(|e| matches!(e, SwarmEvent::Upload { .. }))
            .count()
    };
    s.handle_joined(a, ms(0));
    s.handle_message(a, map(), ms(0));
    assert!(
        sent(&mut s)
            .iter()
            .any(|(to, m)| *to == a && matches!(m, Message::Unchoke { .. }))
    );
    s.handle_message(a, req(0, 0), ms(100));
    assert_eq!(uploads(&mut s), 1);
    s.handle_joined(b, ms(200));
    s.handle_message(b, map(), ms(200));
    // The rotation gives the slot to b; a is not choked with half a piece.
    s.handle_timeout(ms(600));
    let out = sent(&mut s);
    assert!(
        out.iter()
            .any(|(to, m)| *to == b && matches!(m, Message::Unchoke { .. }))
    );
    assert!(
        !out.iter()
            .any(|(to, m)| *to == a && matches!(m, Message::Choke))
    );
    // a may ask for the rest of piece 0, not for piece 1.
    s.handle_message(a, req(0, block), ms(650));
    s.handle_message(a, req(1, 0), ms(660));
    assert_eq!(uploads(&mut s), 1, "the rest of piece 0 goes out");
    let out = sent(&mut s);
    assert!(out.iter().any(|(to, m)| *to == a
        && matches!(m, Message::Reject { reason: RejectReason::Choked, block } if block.piece.0 == 1)));
    assert!(
        !out.iter()
            .any(|(to, m)| *to == a && matches!(m, Message::Choke))
    );
    // Once both of its blocks are out, the choke.
    s.handle_upload_done(a, ms(700));
    assert!(
        !sent(&mut s)
            .iter()
            .any(|(_, m)| matches!(m, Message::Choke))
    );
    s.handle_upload_done(a, ms(720));
    assert!(
        sent(&mut s)
            .iter()
            .any(|(to, m)| *to == a && matches!(m, Message::Choke))
    );
}

/// A peer that claims every piece and never unchokes anyone (or joins only to hold
/// pieces hostage): after `holder_patience` (30 s) its pieces no longer count as held
/// nearby, and their owners fetch them from the origin. Without that rule nobody ever
/// fetched them and the LAN never finished.
#[test]
fn a_peer_that_claims_everything_and_never_unchokes_cannot_stall_the_lan() {
    let mut sc = lan(8, seed(0x5eed_0043));
    sc.nodes[0].seed = true;
    sc.nodes[0].stingy = true;
    let r = must(&sc);
    show("8 peers and a stingy seed", &r);
    assert!(r.finish[1..].iter().all(Option::is_some));
    origin_at_most(&r, 1.1);
    let patience = SwarmConfig::default().holder_patience.as_secs_f64();
    assert!(r.completion.as_secs_f64() <= r.bound.as_secs_f64() + patience + 5.0);
}

/// A peer that answers every request with `Choke` then `Unchoke` is snubbed after
/// `max_flaps` rounds: the requesters do not re-request from it thousands of times a
/// second, and the LAN finishes from the origin and each other.
#[test]
fn a_peer_that_chokes_at_every_request_is_snubbed() {
    let mut sc = lan(8, seed(0x5eed_0044));
    sc.nodes[0].seed = true;
    sc.nodes[0].flapping = true;
    let r = must(&sc);
    show("8 peers and a flapping seed", &r);
    assert!(r.finish[1..].iter().all(Option::is_some));
    origin_at_most(&r, 1.1);
    // Each of 7 peers: 3 rounds of at most a window of requests per snub period.
    let requests = r.requests_received[0];
    let rounds = (r.completion.as_secs_f64() / 30.0).ceil() + 1.0;
    assert!(
        requests as f64 <= 7.0 * 3.0 * 32.0 * rounds,
        "the flapping peer got {requests} requests in {:?}",
        r.completion
    );
}
