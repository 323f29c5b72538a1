//! The evil-peer harness (the hardening issue, docs/SECURITY.md): one table, a row per
//! hostile behaviour. In each row an honest agent (`shoal-agent fetch`, in process) is
//! told of one peer, the evil one, which passes the handshake (it knows the release)
//! and then misbehaves; the origin is honest. For every row:
//!
//! - the agent ends with the release's exact bytes, and nothing panics, within
//!   [`UNHINDERED`] when the offender is closed at once, else within the claim patience
//!   plus the stalled-fetcher wait (see [`completes_within`]);
//! - the offender is dealt with as the row states: its connection closed within a
//!   bound after its first offence (and, for liars, never dialled again), or no longer
//!   asked for anything;
//! - the process's peak memory grows by at most [`MEMORY`] while the row runs.
//!
//! The agent runs with shorter timers than its defaults so the table runs in seconds;
//! the bounds are stated in those timers ([`swarm`]), so they scale with the defaults.

mod common;

use std::time::{Duration, Instant};

use common::evil::{Act, Evil, Record};
use common::{Vendor, read};
use shoal_agent::fetch::run;
use shoal_protocol::index::PieceIndex;
use shoal_protocol::swarm::SwarmConfig;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// The release's size: eight or so pieces.
const LEN: usize = 8_000_000;
/// No row's agent may take longer than this (the rows' own bounds are tighter).
const DEADLINE: Duration = Duration::from_secs(40);
/// Alone with the origin the agent takes about half a second: a peer that is closed
/// at once must not slow it beyond this.
const UNHINDERED: Duration = Duration::from_secs(3);
/// A row may grow the test process's peak memory by this much at most (the agent
/// holds a few pieces of the release in memory at a time; the bugs this harness
/// guards against grew it by hundreds of megabytes).
const MEMORY: u64 = 64 << 20;
/// The agent's idle timeout in this harness.
const IDLE: Duration = Duration::from_secs(6);
/// The agent's write timeout in this harness.
const WRITE: Duration = Duration::from_secs(3);
/// How long claims hold pieces back from the origin in this harness.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long an origin fetcher that delivers nothing is waited for in this harness.
const STALL: Duration = Duration::from_secs(5);
/// Slack on every time bound: scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

/// The agent's swarm settings in this harness: the defaults with shorter timers.
fn swarm() -> SwarmConfig {
    SwarmConfig {
        origin_grace: Duration::from_millis(300),
        holder_patience: PATIENCE,
        origin_stall: STALL,
        block_timeout: Duration::from_secs(3),
        keepalive: Duration::from_secs(2),
        idle_timeout: IDLE,
        ..SwarmConfig::default()
    }
}

/// How long the agent may take to complete: a peer that claims pieces it never gives
/// holds them back for the claim patience, and, being a member, owns a share of the
/// origin fetches until it is passed over for delivering nothing.
fn completes_within(expect: Expect) -> Duration {
    match expect {
        Closed { within, .. } if within <= SLACK => UNHINDERED,
        _ => PATIENCE + STALL + SLACK,
    }
}

/// What the agent must do about the offender.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Close the offending connection within this long after the first offence; if
    /// `banned`, never dial the peer again.
    Closed { within: Duration, banned: bool },
    /// Stop asking it: at most this many requests, all connections together.
    StopsAsking { requests: usize },
}

use Expect::{Closed, StopsAsking};

const AT_ONCE: Duration = Duration::from_millis(500);

fn closed(within: Duration) -> Expect {
    Closed {
        within,
        banned: false,
    }
}

/// The table: every behaviour, and what the agent does about it.
fn expectation(act: Act) -> Expect {
    match act {
        Act::FlipsAByte => Closed {
            within: SLACK,
            banned: true,
        },
        Act::LiesInItsMap => closed(AT_ONCE),
        Act::RejectsEverything => StopsAsking { requests: 48 },
        Act::IgnoresEverything => StopsAsking { requests: 48 },
        Act::FlapsItsChoke => StopsAsking { requests: 64 },
        Act::SilentMidPiece | Act::DripsOneByte | Act::TruncatedFrame => closed(IDLE + SLACK),
        Act::SendsUnaskedBlocks => closed(AT_ONCE),
        // Closed when its queue of answers fills: under load, more than half a second.
        Act::FloodsRequests => closed(SLACK),
        Act::RequestsAndNeverReads => closed(WRITE + SLACK),
        Act::FloodsKeepAlives
        | Act::FloodsHaves
        | Act::FloodsStats
        | Act::FloodsChokes
        | Act::FloodsUnchokes
        | Act::FloodsCancels
        | Act::FloodsRejects => closed(AT_ONCE),
        Act::HugeLength
        | Act::ZeroLength
        | Act::UnknownType
        | Act::HaveOutOfRange
        | Act::SecondPieceMap
        | Act::OversizedManifest => closed(AT_ONCE),
    }
}

/// A process's memory figure from /proc/self/status, in bytes.
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Plays one row of the table.
async fn row(act: Act) {
    let expect = expectation(act);
    let v = Vendor::start(&format!("evil-{act:?}")).await;
    let src = v.dir.join("fw.bin");
    shoal_tests::random_file(&src, LEN, 21);
    v.release("1", std::slice::from_ref(&src));
    let (release, _) = v.current_release();
    let idx = std::fs::read_dir(v.repo.join("indexes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pieces = PieceIndex::parse(&read(&idx)).unwrap().pieces().to_vec();
    let evil = Evil::start(act, release, pieces, read(&src)).await;

    // Peak memory from here on (writing 5 to clear_refs resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let base = status_bytes("VmRSS:");

    let mut o = v.agent("victim", vec![evil.addr]);
    o.transfer.swarm = swarm();
    o.transfer.write_timeout = WRITE;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let (done, finished) = oneshot::channel();
    let began = Instant::now();
    let task = tokio::spawn(run(o, l, Some(done), stopped, |_| {}));
    let completed = tokio::time::timeout(DEADLINE, finished).await;
    let took = began.elapsed();

    // A connection the agent closes after it completed counts too (the agent seeds on),
    // as long as it is within the row's bound.
    if let Closed { within, .. } = expect {
        let limit = Instant::now() + within + SLACK;
        while evil.record().closed_after.is_none() && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let rec: Record = evil.record();
    let peak = status_bytes("VmHWM:").saturating_sub(base);
    stop.send_replace(true);
    let report = task.await.expect("the agent panicked");
    eprintln!(
        "{act:?}: completed in {took:.1?}; offender: {rec:?}; peak memory +{} MiB",
        peak >> 20
    );

    assert!(
        matches!(completed, Ok(Ok(_))),
        "{act:?}: the agent did not complete within {DEADLINE:?}"
    );
    let report = report.expect("the fetch succeeds");
    let bound = completes_within(expect);
    assert!(
        took <= bound,
        "{act:?}: the agent took {took:?} to complete; the bound is {bound:?}"
    );
    assert_eq!(read(&report.files[0]), read(&src), "{act:?}: wrong bytes");
    assert!(
        rec.connections >= 1 && rec.offended.is_some(),
        "{act:?}: the agent never met the offence; the row proves nothing ({rec:?})"
    );
    match expect {
        Closed { within, banned } => {
            let after = rec
                .closed_after
                .unwrap_or_else(|| panic!("{act:?}: the connection was never closed ({rec:?})"));
            assert!(
                after <= within,
                "{act:?}: closed {after:?} after the offence; the bound is {within:?}"
            );
            if banned {
                assert_eq!(
                    rec.connections, 1,
                    "{act:?}: a banned peer was dialled again"
                );
            }
        }
        StopsAsking { requests } => assert!(
            rec.requests <= requests,
            "{act:?}: asked {} times; the bound is {requests}",
            rec.requests
        ),
    }
    assert!(
        peak <= MEMORY,
        "{act:?}: peak memory grew by {} MiB; the bound is {} MiB",
        peak >> 20,
        MEMORY >> 20
    );
    v.stop();
}

macro_rules! rows {
    ($($name:ident: $act:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            row($act).await;
        }
    )*};
}

rows! {
    flips_a_byte_of_a_piece: Act::FlipsAByte,
    lies_in_its_piece_map: Act::LiesInItsMap,
    claims_every_piece_and_rejects_every_request: Act::RejectsEverything,
    claims_every_piece_and_ignores_every_request: Act::IgnoresEverything,
    chokes_and_unchokes_at_every_request: Act::FlapsItsChoke,
    goes_silent_mid_piece: Act::SilentMidPiece,
    drips_one_byte_at_a_time: Act::DripsOneByte,
    sends_blocks_nobody_asked_for: Act::SendsUnaskedBlocks,
    floods_requests: Act::FloodsRequests,
    requests_and_never_reads: Act::RequestsAndNeverReads,
    floods_keepalives: Act::FloodsKeepAlives,
    floods_haves: Act::FloodsHaves,
    floods_stats: Act::FloodsStats,
    floods_chokes: Act::FloodsChokes,
    floods_unchokes: Act::FloodsUnchokes,
    floods_cancels: Act::FloodsCancels,
    floods_rejects: Act::FloodsRejects,
    announces_a_4_gib_frame: Act::HugeLength,
    sends_a_zero_length_frame: Act::ZeroLength,
    sends_an_unknown_message_type: Act::UnknownType,
    announces_a_piece_past_the_release: Act::HaveOutOfRange,
    sends_a_second_piece_map: Act::SecondPieceMap,
    sends_half_a_frame_then_nothing: Act::TruncatedFrame,
    offers_an_oversized_manifest: Act::OversizedManifest,
}
