//! The swarm core against peers that claim pieces and never give them: driven message by
//! message, without the simulator, so each rule is seen on its own (docs/SECURITY.md,
//! "Availability").

use std::time::Duration;

use shoal_protocol::swarm::{
    Bitfield, NOISE_BURST, NOISE_REFILL, PieceSpec, Swarm, SwarmConfig, SwarmEvent, UNASKED_BLOCKS,
};
use shoal_protocol::wire::PieceNumber;
use shoal_protocol::wire::{Message, PeerId, RejectReason};

const PIECES: u32 = 16;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn core(cfg: SwarmConfig) -> Swarm {
    core_of(cfg, 1024)
}

/// A core whose pieces are `length` bytes long.
fn core_of(cfg: SwarmConfig, length: u32) -> Swarm {
    let pieces = vec![
        PieceSpec {
            length,
            digest: shoal_protocol::Digest::of(b"not fetched in these tests"),
        };
        PIECES as usize
    ];
    Swarm::new(cfg, PeerId([0x10; 16]), pieces, &[], 7, ms(0))
}

fn everything() -> Message {
    let mut map = Bitfield::new(PIECES);
    for p in 0..PIECES {
        map.set(p);
    }
    Message::PieceMap {
        piece_count: PIECES,
        bits: map.as_wire().to_vec(),
    }
}

/// Origin fetches the core asked for, and the messages it sent, since the last call.
fn drain(s: &mut Swarm) -> (usize, Vec<(PeerId, Message)>) {
    let fetches = std::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, SwarmEvent::FetchOrigin { .. }))
        .count();
    (fetches, std::iter::from_fn(|| s.poll_transmit()).collect())
}

/// Two ids that claim every piece and never unchoke, taking turns so that one of them
/// is always connected: the piece's clock started with the first claim and is not
/// restarted by the second id, so our own pieces go to the origin 30 s after the first
/// claim (`holder_patience`), not never.
#[test]
fn claimants_taking_turns_do_not_restart_the_clock() {
    // The claimant's map arrives within the origin grace (as peers met at start do).
    let cfg = SwarmConfig {
        origin_grace: Duration::from_secs(1),
        ..SwarmConfig::default()
    };
    let patience = cfg.holder_patience;
    let mut s = core(cfg);
    let (a, b) = (PeerId([0xa0; 16]), PeerId([0xb0; 16]));
    s.handle_joined(a, ms(0));
    s.handle_message(a, everything(), ms(10));
    assert_eq!(drain(&mut s).0, 0);
    s.handle_joined(b, patience / 2);
    s.handle_message(b, everything(), patience / 2);
    s.handle_disconnected(a, patience * 3 / 4);
    let (early, _) = drain(&mut s);
    assert_eq!(
        early, 0,
        "fetched from the origin while the claims were young"
    );
    s.handle_timeout(patience - ms(1));
    assert_eq!(drain(&mut s).0, 0);
    // The first claim came at 10 ms.
    s.handle_timeout(patience + ms(20));
    let (fetches, _) = drain(&mut s);
    assert!(
        fetches > 0,
        "the claims of two ids in turn held our pieces back"
    );
}

/// A peer that unchokes us and answers every request with `Reject`: after
/// `2 × request_window` refusals it is snubbed, so we stop asking (the loop used to run
/// at the speed of the link).
#[test]
fn a_peer_that_rejects_every_request_is_snubbed() {
    // Pieces of one block, and of four: a `Reject` abandons the piece, so the rest of
    // its requests are refused with it and count (else a peer that rejects one block
    // per piece is asked for every block of every piece first).
    for blocks in [1, 4] {
        rejects_every_request(blocks);
    }
}

fn rejects_every_request(blocks: u32) {
    let cfg = SwarmConfig::default();
    let bound = 3 * usize::from(cfg.request_window);
    let mut s = core_of(cfg.clone(), blocks * cfg.block_len);
    let liar = PeerId([0xc0; 16]);
    s.handle_joined(liar, ms(0));
    s.handle_message(liar, everything(), ms(0));
    s.handle_message(liar, Message::Unchoke { max_requests: 32 }, ms(1));
    let mut requests = 0;
    for round in 0..200u64 {
        let now = ms(2 + round);
        let asked: Vec<_> = drain(&mut s)
            .1
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Request(block) if to == liar => Some(block),
                _ => None,
            })
            .collect();
        if asked.is_empty() {
            break;
        }
        requests += asked.len();
        for block in asked {
            let reason = RejectReason::Overloaded;
            s.handle_message(liar, Message::Reject { block, reason }, now);
        }
    }
    assert!(
        requests <= bound,
        "{requests} requests to a peer that rejects them all ({blocks}-block pieces)"
    );
}

/// The other side of the claim clock: a neighbour that keeps serving us (slowly, as a
/// busy seed serves a late joiner) keeps its pieces held back past `holder_patience`,
/// so nothing goes to the origin that a peer is delivering.
#[test]
fn a_neighbour_that_serves_us_keeps_its_pieces_past_the_patience() {
    let cfg = SwarmConfig {
        origin_grace: Duration::from_secs(1),
        ..SwarmConfig::default()
    };
    let patience = cfg.holder_patience;
    let mut s = core(cfg);
    let seed = PeerId([0x30; 16]);
    s.handle_joined(seed, ms(0));
    s.handle_message(seed, everything(), ms(10));
    s.handle_message(seed, Message::Unchoke { max_requests: 32 }, ms(20));
    let mut fetches = 0;
    let mut served = 0;
    let mut now = ms(20);
    let mut pending = std::collections::VecDeque::new();
    // One piece every 4 s, the oldest request first (none waits 10 s, the stall
    // limit): at 30 s about half the pieces are still missing, claimed since the start.
    while served < PIECES && now < patience * 3 {
        now += Duration::from_secs(4);
        s.handle_timeout(now);
        let (f, sent) = drain(&mut s);
        fetches += f;
        pending.extend(sent.into_iter().filter_map(|(to, m)| match m {
            Message::Request(b) if to == seed => Some(b),
            _ => None,
        }));
        let Some(block) = pending.pop_front() else {
            continue;
        };
        let data = vec![0u8; block.length as usize];
        let piece = Message::Piece {
            piece: block.piece,
            offset: block.offset,
            data,
        };
        s.handle_message(seed, piece, now);
        let checks: Vec<_> = std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                SwarmEvent::CheckPiece {
                    piece,
                    source,
                    data,
                } => Some((piece, source, data)),
                SwarmEvent::FetchOrigin { .. } => {
                    fetches += 1;
                    None
                }
                _ => None,
            })
            .collect();
        for (piece, source, data) in checks {
            // The test stands for the hash: the piece is good.
            s.handle_piece_checked(piece, source, data, true, now);
            served += 1;
        }
    }
    assert_eq!(served, PIECES, "the seed served {served} pieces");
    assert!(
        now > patience * 3 / 2,
        "everything came before the claims were old"
    );
    assert_eq!(
        fetches, 0,
        "fetched from the origin what a serving peer holds"
    );
}

/// Whether the core dropped `peer` since the last look (its events are consumed).
fn dropped(s: &mut Swarm, peer: PeerId) -> bool {
    std::iter::from_fn(|| s.poll_event())
        .any(|e| matches!(e, SwarmEvent::Disconnect { peer: p, .. } if p == peer))
}

fn joined(s: &mut Swarm, peer: PeerId) {
    s.handle_joined(peer, ms(0));
    let empty = Bitfield::new(PIECES);
    s.handle_message(
        peer,
        Message::PieceMap {
            piece_count: PIECES,
            bits: empty.as_wire().to_vec(),
        },
        ms(0),
    );
    assert!(!dropped(s, peer));
}

/// Messages that carry nothing (`KeepAlive`, a repeated `Have`, an early `Stats`): a
/// burst of `NOISE_BURST` passes, one more closes the peer; one a second (thirty times
/// an honest peer's rate) passes for ever.
#[test]
fn a_flood_of_messages_that_carry_nothing_closes_the_peer() {
    let noise = [Message::KeepAlive, Message::Have(PieceNumber(3))];
    for (i, m) in noise.into_iter().enumerate() {
        let mut s = core(SwarmConfig::default());
        let (calm, loud) = (PeerId([0x30 + i as u8; 16]), PeerId([0x40 + i as u8; 16]));
        joined(&mut s, calm);
        joined(&mut s, loud);
        // The first Have of a piece is news, not noise.
        let extra = u32::from(matches!(m, Message::Have(_)));
        for _ in 0..NOISE_BURST + extra {
            s.handle_message(loud, m.clone(), ms(1));
        }
        assert!(
            !dropped(&mut s, loud),
            "{m:?}: the burst itself closed the peer"
        );
        s.handle_message(loud, m.clone(), ms(2));
        assert!(dropped(&mut s, loud), "{m:?}: a flood was taken");
        for sec in 0..300 {
            s.handle_message(calm, m.clone(), NOISE_REFILL * sec);
        }
        assert!(!dropped(&mut s, calm), "{m:?}: a calm peer was closed");
    }
}

/// Blocks nobody asked for: up to `UNASKED_BLOCKS` request windows of them in a row are
/// what a `Cancel` or a timeout can cross; one more closes the peer.
#[test]
fn blocks_nobody_asked_for_close_the_peer() {
    let cfg = SwarmConfig::default();
    let allowed = UNASKED_BLOCKS * u32::from(cfg.request_window);
    let mut s = core(cfg);
    let peer = PeerId([0x50; 16]);
    joined(&mut s, peer);
    let block = Message::Piece {
        piece: PieceNumber(2),
        offset: 0,
        data: vec![0; 1024],
    };
    for _ in 0..allowed {
        s.handle_message(peer, block.clone(), ms(1));
    }
    assert!(!dropped(&mut s, peer), "crossing blocks closed the peer");
    s.handle_message(peer, block, ms(1));
    assert!(dropped(&mut s, peer), "a flood of unasked blocks was taken");
}

/// The other side of the unasked-block rule: blocks that cross our `Cancel` (a slow
/// peer whose pieces time out again and again) are dropped quietly, however many, and
/// the peer stays.
#[test]
fn blocks_that_cross_our_cancels_are_not_a_flood() {
    let cfg = SwarmConfig::default();
    let (timeout, limit) = (
        cfg.block_timeout,
        UNASKED_BLOCKS * u32::from(cfg.request_window),
    );
    let mut s = core(cfg);
    let slow = PeerId([0x60; 16]);
    s.handle_joined(slow, ms(0));
    s.handle_message(slow, everything(), ms(0));
    s.handle_message(slow, Message::Unchoke { max_requests: 32 }, ms(1));
    let mut now = ms(2);
    let mut late = 0u32;
    let mut pending: Vec<shoal_protocol::wire::BlockRef> = Vec::new();
    for _ in 0..2000 {
        let (_, sent) = drain(&mut s);
        pending.extend(sent.into_iter().filter_map(|(to, m)| match m {
            Message::Request(b) if to == slow => Some(b),
            _ => None,
        }));
        // Time passes beyond the block timeout: the requests are withdrawn...
        now += timeout + Duration::from_secs(1);
        s.handle_timeout(now);
        // ...and then their blocks arrive, late.
        for b in pending.drain(..) {
            let data = vec![0; b.length as usize];
            let m = Message::Piece {
                piece: b.piece,
                offset: b.offset,
                data,
            };
            s.handle_message(slow, m, now);
            late += 1;
        }
        assert!(!dropped(&mut s, slow), "closed after {late} late blocks");
        if late > 2 * limit {
            return;
        }
    }
    panic!("only {late} late blocks in the test: it proves little");
}
